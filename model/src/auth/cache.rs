//! `VerifiedCache`: remembers credentials that verified recently, so a client reconnecting with
//! the same user name and password costs one HMAC instead of a PBKDF2 run.

use std::collections::HashMap;
use std::fmt;

use parking_lot::Mutex;
use pbkdf2::hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha512;
use subtle::ConstantTimeEq as _;

use super::{AuthError, PasswordFile, Verdict};

/// Default number of users remembered.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// A tag: HMAC-SHA512 output.
type Tag = [u8; 64];

/// A bounded cache of credentials that verified, keyed by user name.
///
/// PBKDF2 at [`DEFAULT_ITERATIONS`](super::DEFAULT_ITERATIONS) costs about 0.1 s of CPU per
/// check, so a storm of reconnects (a load balancer restart, a fleet of devices coming back)
/// would otherwise burn cores for minutes. For each user that verified, the cache keeps
/// `HMAC-SHA512(k, user, hash string from the file, password)` under a random key `k` made per
/// process; a later check with the same user and password computes the same tag and compares in
/// constant time. Because the file's hash string is part of the tag, an entry stops matching as
/// soon as that user's line changes (new password, re-hash), and it never matches for a user no
/// longer in the file. A failed check never evicts an entry.
///
/// The trade-off: for a password that is in the cache, the work an attacker must do per guess
/// drops from a PBKDF2 run to one HMAC, *if* they can read the broker's memory (key and tags
/// together). Such an attacker could also read passwords as clients send them, so the cache adds
/// little exposure; nothing is ever written to disk. The tags are useless without the key, and
/// the key dies with the process. Online guessing is unaffected: a wrong password always misses
/// and pays for the full PBKDF2 run. A hit is faster than a miss, which only tells a client that
/// already knows the password that it was used recently.
///
/// When full, an arbitrary entry makes room. Capacity 0 disables the cache.
pub struct VerifiedCache {
    /// HMAC keyed once; cloned per computation.
    mac: Hmac<Sha512>,
    capacity: usize,
    entries: Mutex<HashMap<String, Tag>>,
}

impl fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl VerifiedCache {
    /// An empty cache for up to `capacity` users, with a fresh random key. Fails only if the
    /// operating system gives no random numbers.
    pub fn new(capacity: usize) -> Result<VerifiedCache, AuthError> {
        // HMAC-SHA512's block size: a key of this length is used as is.
        let mut key = [0u8; 128];
        getrandom::fill(&mut key).map_err(AuthError::Random)?;
        Ok(VerifiedCache {
            mac: Hmac::<Sha512>::new(&key.into()),
            capacity,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `user` verified with this `password` against the user's current hash in `file`.
    /// Fast (one HMAC): call it before going to a blocking thread for [`Self::verify`].
    pub fn is_cached(&self, file: &PasswordFile, user: &str, password: &[u8]) -> bool {
        let Some(hash_text) = file.hash_text(user) else {
            return false;
        };
        let tag = self.tag(user, hash_text, password);
        let entries = self.entries.lock();
        entries
            .get(user)
            .is_some_and(|cached| bool::from(cached[..].ct_eq(&tag[..])))
    }

    /// [`PasswordFile::verify`], answered from the cache when it can, and remembering a
    /// success. Slow on a miss: run it on a blocking thread.
    pub fn verify(&self, file: &PasswordFile, user: &str, password: &[u8]) -> Verdict {
        if self.is_cached(file, user, password) {
            return Verdict::Ok;
        }
        // The lock is not held here: the slow part runs in parallel for different clients.
        let verdict = file.verify(user, password);
        if verdict == Verdict::Ok
            && self.capacity > 0
            && let Some(hash_text) = file.hash_text(user)
        {
            let tag = self.tag(user, hash_text, password);
            let mut entries = self.entries.lock();
            if entries.len() >= self.capacity && !entries.contains_key(user) {
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
            entries.insert(user.to_owned(), tag);
        }
        verdict
    }

    /// Drops the entries of users no longer in `file`: call it after reloading the file so
    /// their tags do not linger (they could never match anyway).
    pub fn prune(&self, file: &PasswordFile) {
        self.entries.lock().retain(|user, _| file.contains(user));
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.entries.lock().clear();
    }

    /// Number of users remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn tag(&self, user: &str, hash_text: &str, password: &[u8]) -> Tag {
        let mut mac = self.mac.clone();
        // Length prefixes keep the fields apart: ("ab", "c") and ("a", "bc") differ.
        for field in [user.as_bytes(), hash_text.as_bytes(), password] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::super::hash_password;
    use super::*;

    fn file(users: &[(&str, &[u8])]) -> PasswordFile {
        let text: String = users
            .iter()
            .map(|(user, password)| format!("{user}:{}\n", hash_password(password, 1000).unwrap()))
            .collect();
        PasswordFile::parse(&text, "pw").unwrap()
    }

    #[test]
    fn hit_after_success_only() {
        let pw = file(&[("alice", b"one"), ("bob", b"two")]);
        let cache = VerifiedCache::new(10).unwrap();
        assert!(!cache.is_cached(&pw, "alice", b"one"));
        assert_eq!(cache.verify(&pw, "alice", b"bad"), Verdict::BadPassword);
        assert_eq!(cache.verify(&pw, "carol", b"one"), Verdict::UnknownUser);
        assert!(cache.is_empty());
        assert_eq!(cache.verify(&pw, "alice", b"one"), Verdict::Ok);
        assert_eq!(cache.len(), 1);
        assert!(cache.is_cached(&pw, "alice", b"one"));
        assert!(!cache.is_cached(&pw, "alice", b"one "));
        assert!(!cache.is_cached(&pw, "bob", b"one"));
        // A wrong password misses, is refused, and does not evict the good entry.
        assert_eq!(cache.verify(&pw, "alice", b"bad"), Verdict::BadPassword);
        assert!(cache.is_cached(&pw, "alice", b"one"));
        assert_eq!(cache.verify(&pw, "alice", b"one"), Verdict::Ok);
    }

    #[test]
    fn a_changed_hash_invalidates() {
        let old = file(&[("alice", b"one")]);
        let cache = VerifiedCache::new(10).unwrap();
        assert_eq!(cache.verify(&old, "alice", b"one"), Verdict::Ok);
        // Same password, re-hashed (new salt): the entry no longer matches, and the slow path
        // re-verifies and re-caches.
        let rehashed = file(&[("alice", b"one")]);
        assert!(!cache.is_cached(&rehashed, "alice", b"one"));
        assert_eq!(cache.verify(&rehashed, "alice", b"one"), Verdict::Ok);
        assert!(cache.is_cached(&rehashed, "alice", b"one"));
        // New password: the old one is refused even though it was cached.
        let changed = file(&[("alice", b"two")]);
        assert!(!cache.is_cached(&changed, "alice", b"one"));
        assert_eq!(
            cache.verify(&changed, "alice", b"one"),
            Verdict::BadPassword
        );
        // User removed: never a hit, and prune drops the entry.
        let gone = file(&[("bob", b"x")]);
        assert!(!cache.is_cached(&gone, "alice", b"one"));
        assert_eq!(cache.verify(&gone, "alice", b"one"), Verdict::UnknownUser);
        assert_eq!(cache.len(), 1);
        cache.prune(&gone);
        assert!(cache.is_empty());
    }

    #[test]
    fn bounded() {
        let users: Vec<String> = (0..5).map(|i| format!("u{i}")).collect();
        let entries: Vec<(&str, &[u8])> = users.iter().map(|u| (u.as_str(), &b"pw"[..])).collect();
        let pw = file(&entries);
        let cache = VerifiedCache::new(3).unwrap();
        for user in &users {
            assert_eq!(cache.verify(&pw, user, b"pw"), Verdict::Ok);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 3);
        assert!(
            cache.is_cached(&pw, "u4", b"pw"),
            "the newest entry is kept"
        );
        // Re-verifying a cached user does not evict anyone.
        assert_eq!(cache.verify(&pw, "u4", b"pw"), Verdict::Ok);
        assert_eq!(cache.len(), 3);

        let off = VerifiedCache::new(0).unwrap();
        assert_eq!(off.verify(&pw, "u0", b"pw"), Verdict::Ok);
        assert!(off.is_empty() && !off.is_cached(&pw, "u0", b"pw"));
        off.clear();
    }

    #[test]
    fn keys_differ_per_cache_and_debug_shows_no_tags() {
        let pw = file(&[("alice", b"one")]);
        let a = VerifiedCache::new(10).unwrap();
        let b = VerifiedCache::new(10).unwrap();
        let hash = pw.hash_text("alice").unwrap();
        assert_ne!(a.tag("alice", hash, b"one"), b.tag("alice", hash, b"one"));
        assert_ne!(a.tag("alice", hash, b"one"), a.tag("alice", hash, b"one2"));
        a.verify(&pw, "alice", b"one");
        let shown = format!("{a:?}");
        assert_eq!(shown, "VerifiedCache { capacity: 10, len: 1, .. }");
    }
}
