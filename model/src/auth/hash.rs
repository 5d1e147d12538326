//! Password hash strings in Mosquitto 2.0's `mosquitto_passwd` format: parsing, verification
//! and (for `$7$` only) creation.
//!
//! The formats, as Mosquitto 2.0 writes and reads them (checked against `mosquitto_passwd`
//! 2.0.11 and against Python's `hashlib`; the fixed vectors in the tests come from both):
//!
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 of the password bytes with the raw
//!   (decoded) salt, `iterations` rounds, 64 bytes of output. `iterations` is decimal.
//! - `$6$<salt>$<hash>`: one SHA-512 of the password bytes followed by the raw salt. Read
//!   only, and reported as weak: a single hash is cheap to brute-force.
//!
//! In both, the salt is 12 bytes and the hash 64 bytes, each in standard base64 (`+/`) with `=`
//! padding: 16 and 88 characters. Mosquitto refuses other lengths, and so do we, so a file is
//! interchangeable both ways. Padding is required: that also keeps a glibc `crypt()` hash (also
//! `$6$…`, but unpadded in another alphabet) from being mistaken for a Mosquitto one.
//!
//! `mosquitto_passwd` 2.0 writes only 101 iterations; we write [`DEFAULT_ITERATIONS`] and report
//! `$7$` entries below [`MIN_STRONG_ITERATIONS`] as weak.
//!
//! Error texts never contain the hash string (a mistyped line may hold a plain-text password).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::AuthError;

/// Iterations for new hashes: OWASP's 2023 figure for PBKDF2-HMAC-SHA512 (about 0.1 s of one
/// core per verification).
pub const DEFAULT_ITERATIONS: u32 = 210_000;

/// `$7$` hashes with fewer iterations than this are listed by
/// [`PasswordFile::weak_entries`](super::PasswordFile::weak_entries). Mosquitto's
/// `mosquitto_passwd` writes 101.
pub const MIN_STRONG_ITERATIONS: u32 = 100_000;

/// Most iterations accepted: a typo of a few extra digits must not make every CONNECT of a user
/// burn minutes of CPU. 10 million is about 5 s per check.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Salt length, as Mosquitto.
pub(crate) const SALT_LEN: usize = 12;
/// Hash length: one SHA-512 output, as Mosquitto.
pub(crate) const HASH_LEN: usize = 64;

/// A parsed hash string.
#[derive(Clone)]
pub(crate) enum StoredHash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        iterations: u32,
        salt: [u8; SALT_LEN],
        hash: [u8; HASH_LEN],
    },
    /// `$6$`: SHA-512(password || salt).
    Sha512 {
        salt: [u8; SALT_LEN],
        hash: [u8; HASH_LEN],
    },
}

impl std::fmt::Debug for StoredHash {
    // Salts and hashes stay out of Debug output, like the password file itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredHash::Pbkdf2Sha512 { iterations, .. } => f
                .debug_struct("Pbkdf2Sha512")
                .field("iterations", iterations)
                .finish_non_exhaustive(),
            StoredHash::Sha512 { .. } => f.debug_struct("Sha512").finish_non_exhaustive(),
        }
    }
}

const EXPECTED: &str = "expected $7$<iterations>$<salt>$<hash> (mosquitto_passwd's PBKDF2-SHA512, \
     as `hmq passwd` writes) or $6$<salt>$<hash>; plain-text passwords are not accepted";

impl StoredHash {
    /// Parses a hash string. The error says what is wrong without quoting the string.
    pub(crate) fn parse(text: &str) -> Result<StoredHash, String> {
        if let Some(rest) = text.strip_prefix("$7$") {
            let mut parts = rest.split('$');
            let (Some(iterations), Some(salt), Some(hash), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("malformed $7$ hash: {EXPECTED}"));
            };
            let iterations = parse_iterations(iterations)?;
            Ok(StoredHash::Pbkdf2Sha512 {
                iterations,
                salt: decode_fixed(salt, "salt")?,
                hash: decode_fixed(hash, "hash")?,
            })
        } else if let Some(rest) = text.strip_prefix("$6$") {
            let mut parts = rest.split('$');
            let (Some(salt), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("malformed $6$ hash: {EXPECTED}"));
            };
            Ok(StoredHash::Sha512 {
                salt: decode_fixed(salt, "salt")?,
                hash: decode_fixed(hash, "hash")?,
            })
        } else {
            Err(format!("unsupported hash: {EXPECTED}"))
        }
    }

    /// Whether `password` matches, comparing in constant time. Slow for `$7$` by design.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        let (computed, stored) = match self {
            StoredHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => (pbkdf2_sha512(password, salt, *iterations), hash),
            StoredHash::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                (digest.finalize().into(), hash)
            }
        };
        computed.ct_eq(stored).into()
    }

    /// `$6$`, or `$7$` with fewer than [`MIN_STRONG_ITERATIONS`].
    pub(crate) fn is_weak(&self) -> bool {
        match self {
            StoredHash::Pbkdf2Sha512 { iterations, .. } => *iterations < MIN_STRONG_ITERATIONS,
            StoredHash::Sha512 { .. } => true,
        }
    }

    /// The iteration count of a `$7$` hash.
    pub(crate) fn iterations(&self) -> Option<u32> {
        match self {
            StoredHash::Pbkdf2Sha512 { iterations, .. } => Some(*iterations),
            StoredHash::Sha512 { .. } => None,
        }
    }
}

/// Hashes `password` for a password file: `$7$<iterations>$<salt>$<hash>` with a 12-byte random
/// salt from the operating system, readable by Mosquitto 2.0 too.
///
/// Slow by design (about 0.1 s at [`DEFAULT_ITERATIONS`]). Fails if `iterations` is 0 or above
/// [`MAX_ITERATIONS`], or if the operating system has no random numbers to give.
pub fn hash_password(password: &[u8], iterations: u32) -> Result<String, AuthError> {
    if !(1..=MAX_ITERATIONS).contains(&iterations) {
        return Err(AuthError::Iterations(iterations));
    }
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(AuthError::Random)?;
    Ok(encode_pbkdf2(password, &salt, iterations))
}

/// The `$7$` string for a given salt: deterministic, so tests can pin vectors.
pub(crate) fn encode_pbkdf2(password: &[u8], salt: &[u8; SALT_LEN], iterations: u32) -> String {
    let hash = pbkdf2_sha512(password, salt, iterations);
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(hash)
    )
}

/// PBKDF2-HMAC-SHA512 with a 64-byte output.
pub(crate) fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    pbkdf2::pbkdf2_hmac_array::<Sha512, HASH_LEN>(password, salt, iterations)
}

fn parse_iterations(text: &str) -> Result<u32, String> {
    // Digits only: Mosquitto's atoi() would read "12abc" as 12, we say it is wrong instead.
    let value = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u32>().ok()
    } else {
        None
    };
    match value {
        Some(n) if (1..=MAX_ITERATIONS).contains(&n) => Ok(n),
        _ => Err(format!(
            "$7$ iteration count must be a number from 1 to {MAX_ITERATIONS}"
        )),
    }
}

fn decode_fixed<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let wrong = || {
        format!(
            "{what} must be {N} bytes in standard base64 with padding ({} characters)",
            N.div_ceil(3) * 4
        )
    };
    let bytes = STANDARD.decode(text).map_err(|_| wrong())?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| wrong())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python: `hashlib.pbkdf2_hmac('sha512', b'hunter2',
    /// bytes(range(12)), 1000)`, base64-encoded.
    const OWN_PBKDF2: &str = "$7$1000$AAECAwQFBgcICQoL$cK9QJEgADvKpCwPGxGBAcS8PPs1AlYCZFvW2qY38neOizETb0SS2lwcg2GYi7TcWksnim31jGVPMPPYJlHux5A==";
    /// `hashlib.sha512(b'hunter2' + bytes(range(12)))`.
    const OWN_SHA512: &str = "$6$AAECAwQFBgcICQoL$M9uy5baAQVewJoSC57pHtZGlGqRX3jq5tEx8s7W8w29wGLojIaP2qVdfjIolAUlK8fbO0hmJW7cZTx1fVju1PQ==";

    fn salt() -> [u8; SALT_LEN] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn encode_matches_an_independent_implementation() {
        assert_eq!(encode_pbkdf2(b"hunter2", &salt(), 1000), OWN_PBKDF2);
    }

    #[test]
    fn verifies_own_vectors() {
        for vector in [OWN_PBKDF2, OWN_SHA512] {
            let hash = StoredHash::parse(vector).unwrap();
            assert!(hash.verify(b"hunter2"), "{vector}");
            assert!(!hash.verify(b"hunter3"), "{vector}");
            assert!(!hash.verify(b""), "{vector}");
        }
    }

    #[test]
    fn hash_password_round_trips_with_fresh_salts() {
        let a = hash_password(b"secret", 1000).unwrap();
        let b = hash_password(b"secret", 1000).unwrap();
        assert_ne!(a, b, "salts must differ");
        assert!(a.starts_with("$7$1000$"));
        assert_eq!(a.len(), "$7$1000$".len() + 16 + 1 + 88);
        let parsed = StoredHash::parse(&a).unwrap();
        assert!(parsed.verify(b"secret"));
        assert!(!parsed.verify(b"Secret"));
    }

    #[test]
    fn hash_password_refuses_bad_iteration_counts() {
        assert!(matches!(
            hash_password(b"x", 0),
            Err(AuthError::Iterations(0))
        ));
        assert!(hash_password(b"x", MAX_ITERATIONS + 1).is_err());
    }

    #[test]
    fn weakness() {
        assert!(StoredHash::parse(OWN_SHA512).unwrap().is_weak());
        assert!(StoredHash::parse(OWN_PBKDF2).unwrap().is_weak());
        let strong = OWN_PBKDF2.replace("$1000$", "$210000$");
        assert!(!StoredHash::parse(&strong).unwrap().is_weak());
    }

    #[test]
    fn malformed_hashes_are_refused_without_quoting_them() {
        let cases = [
            "hunter2",                          // plain text
            "$5$AAECAwQFBgcICQoL$AAAA",         // unknown scheme
            "$7$AAECAwQFBgcICQoL$AAAA",         // missing iterations
            "$7$0$AAECAwQFBgcICQoL$",           // zero iterations
            "$7$12ab$AAECAwQFBgcICQoL$",        // not a number
            "$7$99999999999$AAECAwQFBgcICQoL$", // above the maximum
            "$7$1000$AAECAwQFBgcI$",            // short salt
            "$7$1000$AAECAwQFBgcICQoL$AAAA",    // short hash
            "$7$1000$AAECAwQFBgcICQoL$@@@@",    // not base64
            "$6$AAECAwQFBgcICQoL",              // no hash
            "$6$AAECAwQFBgcICQoL$x$y",          // extra field
            &OWN_PBKDF2.replace("==", ""),      // padding is required
            &format!("{OWN_PBKDF2}$"),          // trailing field
        ];
        for case in cases {
            let err = StoredHash::parse(case).unwrap_err();
            assert!(!case.is_empty() && !err.contains(case), "{case}: {err}");
        }
    }

    #[test]
    fn debug_hides_salt_and_hash() {
        let shown = format!("{:?}", StoredHash::parse(OWN_PBKDF2).unwrap());
        assert_eq!(shown, "Pbkdf2Sha512 { iterations: 1000, .. }");
    }
}
