//! `hmq passwd <file> <user>`: add or replace one user's line in a password file, keeping every
//! other line (comments included) as it was, and replacing the file atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::hash::StoredHash;
use super::{AuthError, PasswordFile, entry_fields, hash_password, validate_user};

/// Mode of a new password file: readable by its owner only.
#[cfg(unix)]
const NEW_FILE_MODE: u32 = 0o600;

/// Returns `file_text` with `user`'s line set to `user:hash`: the user's line is replaced in
/// place (keeping its line ending; any later duplicate lines of that user are dropped), or a
/// line is appended. Comments, blank lines and other users' lines are kept byte for byte.
///
/// Fails if `user` cannot be stored (empty, contains `:` or a control character, starts with
/// `#`, or starts or ends with white space) or `hash` is not a supported hash string.
pub fn set_entry(file_text: &str, user: &str, hash: &str) -> Result<String, AuthError> {
    validate_user(user).map_err(AuthError::InvalidUser)?;
    StoredHash::parse(hash).map_err(AuthError::InvalidHash)?;
    let new_line = format!("{user}:{hash}");
    let mut out = String::with_capacity(file_text.len() + new_line.len() + 1);
    let mut replaced = false;
    for piece in file_text.split_inclusive('\n') {
        let content = piece.trim_end_matches(['\n', '\r']);
        let is_users_line = matches!(entry_fields(content), Some(Some((u, _))) if u == user);
        if !is_users_line {
            out.push_str(piece);
        } else if !replaced {
            out.push_str(&new_line);
            out.push_str(&piece[content.len()..]);
            replaced = true;
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&new_line);
        out.push('\n');
    }
    Ok(out)
}

/// The logic of `hmq passwd <file> <user>`: hashes `password` (`$7$`, `iterations` rounds,
/// random salt) and sets the user's line in `file`.
///
/// A missing file is created with mode 0600. An existing one is rewritten atomically: the new
/// text goes to a temporary file in the same directory (given the old file's permission bits),
/// which is synced and renamed over the old one, so the broker never reads half a file. The file
/// keeps its permission bits but not its owner, if another user runs the command. A symbolic
/// link is followed, so the link stays and its target is replaced (a Kubernetes Secret mount is
/// read-only, though: the command is for files on writable storage).
///
/// The new text is parsed before it is written: a file the broker would refuse (say, a bad
/// line elsewhere) is left alone and the error names that line.
pub fn passwd_command(
    file: &Path,
    user: &str,
    password: &[u8],
    iterations: u32,
) -> Result<(), AuthError> {
    // Check cheap things before the slow hash.
    validate_user(user).map_err(AuthError::InvalidUser)?;
    let hash = hash_password(password, iterations)?;
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuthError::Io { path, source }
    };
    let path = match fs::canonicalize(file) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => file.to_path_buf(),
        Err(e) => return Err(io_error(file)(e)),
    };
    let (old_text, permissions) = match fs::read_to_string(&path) {
        Ok(text) => {
            let permissions = fs::metadata(&path).map_err(io_error(&path))?.permissions();
            (text, Some(permissions))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), None),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let new_text = set_entry(&old_text, user, &hash)?;
    PasswordFile::parse(&new_text, &file.display().to_string())?;
    write_atomically(&path, new_text.as_bytes(), permissions).map_err(io_error(&path))
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`.
fn write_atomically(
    path: &Path,
    bytes: &[u8],
    permissions: Option<fs::Permissions>,
) -> io::Result<()> {
    let temp = temp_path(path)?;
    let result = write_new(&temp, bytes, permissions).and_then(|()| fs::rename(&temp, path));
    if result.is_err() {
        // Best effort: the temporary file may not even exist.
        let _ = fs::remove_file(&temp);
        return result;
    }
    // Make the rename itself durable. Best effort: some file systems refuse to sync a directory,
    // and the new file is in place either way.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Creates `path` (which must not exist) with the old file's permissions, or 0600 for a new
/// file, writes `bytes` and syncs.
fn write_new(path: &Path, bytes: &[u8], permissions: Option<fs::Permissions>) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(NEW_FILE_MODE);
    }
    let mut file = options.open(path)?;
    if let Some(permissions) = permissions {
        // After creation, so the umask cannot narrow the old file's bits.
        file.set_permissions(permissions)?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

/// `dir/.name.hmq-passwd-<pid>-<random>`: in the same directory (rename cannot cross file
/// systems), hidden, and unique even if two commands run at once.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let nonce = getrandom::u64().map_err(io::Error::other)?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(".hmq-passwd-{}-{nonce:016x}", std::process::id()));
    Ok(path.with_file_name(temp))
}

#[cfg(test)]
mod tests {
    use super::super::Verdict;
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const H1: &str = "$7$1000$AAECAwQFBgcICQoL$cK9QJEgADvKpCwPGxGBAcS8PPs1AlYCZFvW2qY38neOizETb0SS2lwcg2GYi7TcWksnim31jGVPMPPYJlHux5A==";
    const H2: &str = "$6$AAECAwQFBgcICQoL$M9uy5baAQVewJoSC57pHtZGlGqRX3jq5tEx8s7W8w29wGLojIaP2qVdfjIolAUlK8fbO0hmJW7cZTx1fVju1PQ==";

    #[test]
    fn set_entry_appends_to_empty_and_unterminated_text() {
        assert_eq!(set_entry("", "alice", H1).unwrap(), format!("alice:{H1}\n"));
        assert_eq!(
            set_entry("# users", "alice", H1).unwrap(),
            format!("# users\nalice:{H1}\n")
        );
    }

    #[test]
    fn set_entry_replaces_in_place_and_keeps_the_rest() {
        let old = format!(
            "# users of site A\n\nalice:{H2}\r\n# bob is the admin\n  bob : {H2}\ncarol:{H2}"
        );
        let new = set_entry(&old, "bob", H1).unwrap();
        assert_eq!(
            new,
            format!("# users of site A\n\nalice:{H2}\r\n# bob is the admin\nbob:{H1}\ncarol:{H2}")
        );
        let new = set_entry(&new, "alice", H1).unwrap();
        assert!(new.contains(&format!("\nalice:{H1}\r\n# bob")), "{new}");
        let new = set_entry(&new, "dave", H1).unwrap();
        assert!(new.ends_with(&format!("carol:{H2}\ndave:{H1}\n")), "{new}");
        assert_eq!(new.lines().count(), 7);
    }

    #[test]
    fn set_entry_leaves_comments_naming_the_user_alone() {
        let old = format!("#alice:{H2}\n# alice:x\nalicex:{H2}\n");
        let new = set_entry(&old, "alice", H1).unwrap();
        assert_eq!(new, format!("{old}alice:{H1}\n"));
    }

    #[test]
    fn set_entry_drops_later_duplicates() {
        let old = format!("alice:{H2}\nbob:{H2}\nalice:{H2}\n");
        let new = set_entry(&old, "alice", H1).unwrap();
        assert_eq!(new, format!("alice:{H1}\nbob:{H2}\n"));
    }

    #[test]
    fn set_entry_refuses_bad_users_and_hashes() {
        for user in ["", "a:b", "#a", " a", "a\n"] {
            assert!(
                matches!(set_entry("", user, H1), Err(AuthError::InvalidUser(_))),
                "{user:?}"
            );
        }
        for hash in ["", "plain", "$7$1000$AAAA$BBBB", "$7$1000$x\nmallory:$6$"] {
            assert!(
                matches!(set_entry("", "alice", hash), Err(AuthError::InvalidHash(_))),
                "{hash:?}"
            );
        }
    }

    /// A fresh path under the system temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "hmq-auth-test-{}-{n}-{:08x}",
                std::process::id(),
                getrandom::u32().unwrap()
            ));
            fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn load(path: &Path) -> PasswordFile {
        PasswordFile::parse(&fs::read_to_string(path).unwrap(), "test").unwrap()
    }

    #[test]
    fn passwd_command_creates_then_updates() {
        let dir = TempDir::new();
        let path = dir.0.join("passwd");
        passwd_command(&path, "alice", b"one", 1000).unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        assert_eq!(load(&path).verify("alice", b"one"), Verdict::Ok);

        // Keep a comment and a custom mode across updates.
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, format!("# managed by hand\n{text}")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        }
        passwd_command(&path, "bob", b"two", 1000).unwrap();
        passwd_command(&path, "alice", b"three", 1000).unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o640);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# managed by hand\nalice:$7$1000$"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 3);
        let file = load(&path);
        assert_eq!(file.verify("alice", b"three"), Verdict::Ok);
        assert_eq!(file.verify("alice", b"one"), Verdict::BadPassword);
        assert_eq!(file.verify("bob", b"two"), Verdict::Ok);
        // No temporary files left behind.
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn passwd_command_follows_a_symlink() {
        let dir = TempDir::new();
        let target = dir.0.join("real");
        let link = dir.0.join("link");
        passwd_command(&target, "alice", b"one", 1000).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        passwd_command(&link, "bob", b"two", 1000).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(load(&target).verify("bob", b"two"), Verdict::Ok);
    }

    #[test]
    fn passwd_command_leaves_a_broken_file_alone() {
        let dir = TempDir::new();
        let path = dir.0.join("passwd");
        let broken = format!("alice:{H1}\nbob has no colon\n");
        fs::write(&path, &broken).unwrap();
        let err = passwd_command(&path, "carol", b"x", 1000).unwrap_err();
        assert!(
            err.to_string().ends_with("passwd:2: expected `user:hash`"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), broken);
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn passwd_command_reports_io_errors_with_the_path() {
        let dir = TempDir::new();
        let path = dir.0.join("missing-dir").join("passwd");
        let err = passwd_command(&path, "alice", b"x", 1000).unwrap_err();
        assert!(matches!(err, AuthError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("missing-dir"), "{err}");
        assert!(matches!(
            passwd_command(&path, "", b"x", 1000),
            Err(AuthError::InvalidUser(_))
        ));
    }
}
