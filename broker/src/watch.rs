//! Noticing that a file changed on disk, for the files hmq reloads without a restart (the ACL,
//! the password file). Polling the metadata every few seconds is deliberate: Kubernetes updates a
//! mounted ConfigMap or Secret by swapping a `..data` symlink, which inotify watches on the file
//! miss, while `metadata` follows the symlink and sees a new inode.

use std::path::Path;
use std::time::SystemTime;

#[cfg(unix)]
use std::os::unix::fs::MetadataExt;

/// What identifies one version of a file: where it lives (device, inode), its size and its
/// modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    dev: u64,
    ino: u64,
}

/// The stamp of the file at `path` (symlinks followed), or `None` if it cannot be read.
pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (dev, ino) = (m.dev(), m.ino());
    #[cfg(not(unix))]
    let (dev, ino) = (0, 0);
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        dev,
        ino,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_seen_through_a_swapped_symlink() {
        let dir = std::env::temp_dir().join(format!("hmq-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, link) = (dir.join("a"), dir.join("b"), dir.join("link"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two!").unwrap();
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let first = stamp(&link).unwrap();
        assert_eq!(stamp(&link), Some(first));
        // Swap the link the way Kubernetes does: a new link renamed over the old one.
        let tmp = dir.join("link.tmp");
        std::os::unix::fs::symlink(&b, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert_ne!(stamp(&link), Some(first));
        assert_eq!(stamp(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
