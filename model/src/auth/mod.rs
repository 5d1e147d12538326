//! Client authentication by user name and password: the password file, verification, the
//! logic of `hmq passwd`, and a cache of recent successful verifications.
//!
//! The password file has one `user:hash` line per user; `#` starts a comment line, blank lines
//! are ignored, and white space around the user name and the hash is trimmed (as Mosquitto).
//! Hashes are Mosquitto 2.0's, so an existing `mosquitto_passwd` file can be used as is, and a
//! file written by `hmq passwd` works in Mosquitto:
//!
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 of the password with the decoded salt,
//!   64 bytes out. What [`hash_password`] writes, with [`DEFAULT_ITERATIONS`].
//! - `$6$<salt>$<hash>`: SHA-512 of the password followed by the salt. Read only, and listed
//!   by [`PasswordFile::weak_entries`].
//!
//! Salt 12 bytes, hash 64 bytes, both standard base64 with `=` padding (16 and 88 characters),
//! exactly as Mosquitto requires. Checked against `mosquitto_passwd` 2.0.11 and Python's
//! `hashlib`; the tests pin vectors from both.
//!
//! Pure: no tokio, little I/O (only [`passwd_command`] touches the file system). Verification is
//! slow by design, so the caller runs [`PasswordFile::verify`] (or [`VerifiedCache::verify`]) on
//! a blocking thread. Nothing here logs, and no `Debug` output or error shows a hash or a
//! password.

mod cache;
mod hash;
mod passwd;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

pub use cache::{DEFAULT_CACHE_CAPACITY, VerifiedCache};
pub use hash::{DEFAULT_ITERATIONS, MAX_ITERATIONS, MIN_STRONG_ITERATIONS, hash_password};
pub use passwd::{passwd_command, set_entry};

use hash::StoredHash;

/// Longest user name: the most an MQTT string can hold.
const MAX_USER_LEN: usize = 65_535;

/// What went wrong reading a password file, hashing, or updating a file.
///
/// No variant carries a password or a hash.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A line of a password file is wrong. Displays as `file:line: what`.
    #[error("{origin}:{line}: {what}")]
    Parse {
        /// The file name (or other origin) given to [`PasswordFile::parse`].
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// A user name that cannot be stored in a password file.
    #[error("invalid user name: {0}")]
    InvalidUser(&'static str),
    /// A hash string that is not one of the supported formats.
    #[error("invalid password hash: {0}")]
    InvalidHash(String),
    /// An iteration count outside 1 to [`MAX_ITERATIONS`].
    #[error("iteration count {0} is out of range (1 to {MAX_ITERATIONS})")]
    Iterations(u32),
    /// The operating system's random number generator failed.
    #[error("cannot get random numbers from the operating system: {0}")]
    Random(#[source] getrandom::Error),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The result of checking a user name and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The password matches the user's hash.
    Ok,
    /// The user exists and the password does not match.
    BadPassword,
    /// No such user in the file.
    UnknownUser,
}

/// A parsed password file: user name → hash.
///
/// `Debug` shows the user names and their count, never a hash.
#[derive(Clone)]
pub struct PasswordFile {
    entries: HashMap<String, Entry>,
    /// Iterations for the dummy PBKDF2 run for unknown users (the largest in the file), so that
    /// answer takes as long as a wrong password and does not reveal which users exist.
    dummy_iterations: Option<u32>,
}

#[derive(Clone)]
struct Entry {
    /// The hash string as in the file: [`VerifiedCache`] binds its entries to it.
    text: String,
    hash: StoredHash,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("PasswordFile")
            .field("users", &users)
            .field("count", &users.len())
            .finish()
    }
}

impl PasswordFile {
    /// Parses the text of a password file. `origin` (usually the file name) starts every error
    /// message: `origin:line: what is wrong`.
    ///
    /// Refused: a line without `:`, an empty or otherwise invalid user name, a user listed
    /// twice, and any hash that is not `$7$` or `$6$` in Mosquitto's format (plain-text
    /// passwords included).
    pub fn parse(text: &str, origin: &str) -> Result<PasswordFile, AuthError> {
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let error = |line: usize, what: String| AuthError::Parse {
            origin: origin.to_owned(),
            line,
            what,
        };
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let Some(fields) = entry_fields(raw) else {
                continue;
            };
            let Some((user, hash_text)) = fields else {
                return Err(error(line, "expected `user:hash`".to_owned()));
            };
            validate_user(user).map_err(|what| error(line, what.to_owned()))?;
            if let Some(first) = first_line.get(user) {
                return Err(error(
                    line,
                    format!("user '{user}' is listed again (first on line {first})"),
                ));
            }
            if hash_text.is_empty() {
                return Err(error(line, format!("user '{user}': no password hash")));
            }
            let hash = StoredHash::parse(hash_text)
                .map_err(|what| error(line, format!("user '{user}': {what}")))?;
            first_line.insert(user.to_owned(), line);
            entries.insert(
                user.to_owned(),
                Entry {
                    text: hash_text.to_owned(),
                    hash,
                },
            );
        }
        let dummy_iterations = entries.values().filter_map(|e| e.hash.iterations()).max();
        Ok(PasswordFile {
            entries,
            dummy_iterations,
        })
    }

    /// Checks `password` for `user`. Slow by design (a PBKDF2 run, about 0.1 s at
    /// [`DEFAULT_ITERATIONS`]): run it on a blocking thread, and see [`VerifiedCache`].
    ///
    /// An unknown user costs as much as a known one (a dummy run with the file's largest
    /// iteration count), so response times do not reveal which users exist.
    pub fn verify(&self, user: &str, password: &[u8]) -> Verdict {
        match self.entries.get(user) {
            Some(entry) if entry.hash.verify(password) => Verdict::Ok,
            Some(_) => Verdict::BadPassword,
            None => {
                if let Some(iterations) = self.dummy_iterations {
                    let salt = [0u8; hash::SALT_LEN];
                    std::hint::black_box(hash::pbkdf2_sha512(password, &salt, iterations));
                }
                Verdict::UnknownUser
            }
        }
    }

    /// Whether `user` has an entry.
    pub fn contains(&self, user: &str) -> bool {
        self.entries.contains_key(user)
    }

    /// Users whose hash is weak, sorted, for a startup notice: `$6$` (one SHA-512) and `$7$`
    /// with fewer than [`MIN_STRONG_ITERATIONS`] iterations (`mosquitto_passwd` 2.0 writes
    /// 101). `hmq passwd` re-hashes them.
    pub fn weak_entries(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.hash.is_weak())
            .map(|(user, _)| user.clone())
            .collect();
        users.sort_unstable();
        users
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file has no users (then every user name is unknown).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The user's hash string as written in the file.
    fn hash_text(&self, user: &str) -> Option<&str> {
        self.entries.get(user).map(|e| e.text.as_str())
    }
}

/// Splits a password file line. `None`: a blank or comment line. `Some(None)`: no `:`.
/// Otherwise the trimmed user name and hash. A byte-order mark at the start is ignored.
fn entry_fields(line: &str) -> Option<Option<(&str, &str)>> {
    let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(
        line.split_once(':')
            .map(|(user, hash)| (user.trim(), hash.trim())),
    )
}

/// Whether `user` can be written to and read back from a password file unchanged.
fn validate_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        Err("empty user name")
    } else if user.len() > MAX_USER_LEN {
        Err("user name longer than 65535 bytes")
    } else if user.contains(':') {
        Err("user name contains ':'")
    } else if user.chars().any(char::is_control) {
        Err("user name contains a control character")
    } else if user.trim() != user {
        Err("user name starts or ends with white space")
    } else if user.starts_with('#') {
        Err("user name starts with '#' (the line would read as a comment)")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mosquitto_passwd -c -b FILE user pass` then `mosquitto_passwd -b FILE 'ünï cödé'
    /// 'p@ss:wörd'` (Mosquitto 2.0.11, Debian 12), and `mosquitto_passwd -H sha512 -c -b FILE
    /// olduser oldpass`. Also checked with Python's hashlib.
    const MOSQUITTO_FILE: &str = "\
user:$7$101$pCXpnZ6RTKs6qtZS$eDNHR8jydMo9+nM9rxMyLSqMouSpTAVhB1QsBvaSRvAmVv/TKr33utg3tc3MiKL9hlrCRA9YKHhFQv4MPku0Ow==
ünï cödé:$7$101$Ndw7zPAkxDjo6X3h$V1HnXFu851Ss9k/fKkbWk6jeGnRXA40NUQAoeTksyeEd8NYl1N2WFvASnhXhUtha4f3IeQA3BaFvC1nnhkqdyQ==
olduser:$6$FM5cyOfTa/ZjMrl6$tCd39P2aQ04ACr7LpXsG8J9Idjp4dtQYS/9UdumhM9nVqNI5gLO2ZdkkSuat8gOxrwnGwXBWkOJeaKynDPaGyw==
";

    fn file_with(users: &[(&str, &[u8])]) -> String {
        users
            .iter()
            .map(|(user, password)| format!("{user}:{}\n", hash_password(password, 1000).unwrap()))
            .collect()
    }

    fn parse_error(text: &str) -> String {
        PasswordFile::parse(text, "pw").unwrap_err().to_string()
    }

    #[test]
    fn round_trip_wrong_password_unknown_user() {
        let text = file_with(&[("alice", b"wonderland"), ("bob", b"\xff\x00binary")]);
        let file = PasswordFile::parse(&text, "pw").unwrap();
        assert_eq!(file.len(), 2);
        assert_eq!(file.verify("alice", b"wonderland"), Verdict::Ok);
        assert_eq!(file.verify("bob", b"\xff\x00binary"), Verdict::Ok);
        assert_eq!(file.verify("alice", b"wonderlanD"), Verdict::BadPassword);
        assert_eq!(file.verify("alice", b""), Verdict::BadPassword);
        assert_eq!(file.verify("bob", b"wonderland"), Verdict::BadPassword);
        assert_eq!(file.verify("carol", b"wonderland"), Verdict::UnknownUser);
        assert_eq!(file.verify("Alice", b"wonderland"), Verdict::UnknownUser);
        assert!(file.contains("alice") && !file.contains("carol"));
    }

    #[test]
    fn mosquitto_passwd_vectors() {
        let file = PasswordFile::parse(MOSQUITTO_FILE, "mosquitto.pw").unwrap();
        assert_eq!(file.verify("user", b"pass"), Verdict::Ok);
        assert_eq!(file.verify("user", b"pass "), Verdict::BadPassword);
        assert_eq!(file.verify("ünï cödé", "p@ss:wörd".as_bytes()), Verdict::Ok);
        assert_eq!(file.verify("olduser", b"oldpass"), Verdict::Ok);
        assert_eq!(file.verify("olduser", b"oldpasS"), Verdict::BadPassword);
        // 101 iterations and one SHA-512: all weak.
        assert_eq!(file.weak_entries(), ["olduser", "user", "ünï cödé"]);
    }

    #[test]
    fn weak_entries_lists_sha512_and_few_iterations_only() {
        // Parsing does not run the hash, so high counts cost nothing here.
        let line = MOSQUITTO_FILE.lines().next().unwrap();
        let with = |n: u32| line.replace("user:$7$101$", &format!("$7${n}$"));
        let (strong, weak) = (with(MIN_STRONG_ITERATIONS), with(MIN_STRONG_ITERATIONS - 1));
        let text = format!(
            "strong:{strong}\nweak:{weak}\nlegacy:$6$FM5cyOfTa/ZjMrl6$tCd39P2aQ04ACr7LpXsG8J9Idjp4dtQYS/9UdumhM9nVqNI5gLO2ZdkkSuat8gOxrwnGwXBWkOJeaKynDPaGyw==\n"
        );
        let file = PasswordFile::parse(&text, "pw").unwrap();
        assert_eq!(file.weak_entries(), ["legacy", "weak"]);
        assert_eq!(file.verify("legacy", b"oldpass"), Verdict::Ok);
    }

    #[test]
    fn comments_blank_lines_white_space_and_crlf() {
        let hash = hash_password(b"pw", 1000).unwrap();
        let text = format!(
            "\u{feff}# users\n\n   \n  # indented comment\r\n  alice : {hash}  \r\n\t\nbob:{hash}"
        );
        let file = PasswordFile::parse(&text, "pw").unwrap();
        assert_eq!(file.len(), 2);
        assert_eq!(file.verify("alice", b"pw"), Verdict::Ok);
        assert_eq!(file.verify("bob", b"pw"), Verdict::Ok);
        let empty = PasswordFile::parse("# nobody\n\n", "pw").unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.verify("alice", b"pw"), Verdict::UnknownUser);
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let good = hash_password(b"pw", 1000).unwrap();
        let cases = [
            (format!("# c\nalice {good}\n"), "pw:2: expected `user:hash`"),
            (format!("\n\n:{good}\n"), "pw:3: empty user name"),
            (
                "alice:\n".to_owned(),
                "pw:1: user 'alice': no password hash",
            ),
            (
                "alice:hunter2\n".to_owned(),
                "pw:1: user 'alice': unsupported hash",
            ),
            (
                format!("alice:{good}\nbob:{good}\nalice:{good}\n"),
                "pw:3: user 'alice' is listed again (first on line 1)",
            ),
            (
                format!("a\u{7}b:{good}\n"),
                "pw:1: user name contains a control character",
            ),
            (
                "alice:$7$1000$AAECAwQF$x\n".to_owned(),
                "pw:1: user 'alice': salt must be 12 bytes",
            ),
        ];
        for (text, expected) in cases {
            let err = parse_error(&text);
            assert!(
                err.starts_with(expected),
                "{err:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn parse_errors_do_not_quote_secrets() {
        let err = parse_error("alice:my-plain-secret\n");
        assert!(!err.contains("my-plain-secret"), "{err}");
        let err = parse_error("alice:$7$1000$AAECAwQFBgcICQoL$c2VjcmV0\n");
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn debug_shows_users_not_hashes() {
        let file = PasswordFile::parse(MOSQUITTO_FILE, "pw").unwrap();
        let shown = format!("{file:?} {file:#?}");
        assert!(
            shown.contains("\"user\"") && shown.contains("count: 3"),
            "{shown}"
        );
        assert!(!shown.contains('$'), "{shown}");
        for line in MOSQUITTO_FILE.lines() {
            let (_, hash) = line.split_once(':').unwrap();
            for part in hash.split('$').filter(|p| p.len() > 3) {
                assert!(!shown.contains(part), "{shown} contains {part}");
            }
        }
    }

    #[test]
    fn user_name_rules() {
        for ok in ["a", "ünï cödé", "a#b", "user@example.com", "x y"] {
            assert_eq!(validate_user(ok), Ok(()), "{ok}");
        }
        let long = "u".repeat(MAX_USER_LEN + 1);
        for bad in ["", "a:b", " a", "a ", "#a", "a\nb", "a\0b", long.as_str()] {
            assert!(validate_user(bad).is_err(), "{bad:?}");
        }
    }
}
