//! Passwords (of links and of users), hashed with Argon2id at OWASP's minimum cost (19 MiB, two
//! passes, one lane) into a PHC string, so the parameters travel with each hash and can rise
//! without breaking the ones already stored: [`needs_rehash`] tells a caller that has just
//! checked a password to store a fresh hash of it. Hashing and checking take tens of
//! milliseconds of CPU on purpose: run them on a blocking thread, never on the async executor.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The longest password accepted, in characters: enough for any passphrase, and a bound (4 KiB)
/// on the work an unauthenticated visitor can ask for.
pub const MAX_CHARS: usize = 1024;

fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).unwrap_or_default()
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// Checks a new password: 1 to [`MAX_CHARS`] characters, no control characters.
pub fn check(password: &str) -> Result<(), String> {
    crate::validation::plain_text(password, 1, MAX_CHARS)
}

/// A new password in the OpenAPI document: [`check`]'s rule.
pub fn schema() -> utoipa::openapi::schema::ObjectBuilder {
    crate::schema::plain_text(1, MAX_CHARS)
}

/// The PHC string of `password` under a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    hasher()
        .hash_password(password.as_bytes(), &salt()?)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Sixteen random bytes, as the PHC salt.
fn salt() -> Result<SaltString, String> {
    SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())
}

/// Whether `password` matches `phc` (compared in constant time by the hasher). A malformed
/// stored hash matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    // A character is at most 4 bytes: the cheap bound before any hashing work.
    password.len() <= 4 * MAX_CHARS
        && PasswordHash::new(phc).is_ok_and(|parsed| {
            hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
}

/// Whether `phc` was made otherwise than [`hash`] makes one today (another algorithm, version
/// or cost), so that the password, once checked, should be hashed again.
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    let current = params();
    parsed.algorithm != Algorithm::Argon2id.ident()
        || parsed.version != Some(Version::V0x13.into())
        || Params::try_from(&parsed).map_or(true, |p| {
            (p.m_cost(), p.t_cost(), p.p_cost())
                != (current.m_cost(), current.t_cost(), current.p_cost())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash("correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horsf", &phc));
        assert!(!verify("correct horse", "not a hash"));
        assert_ne!(hash("correct horse").expect("hash"), phc, "salted");
        assert!(!needs_rehash(&phc));
    }

    #[test]
    fn hashes_made_otherwise_are_due_for_a_rehash() {
        let weaker = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).expect("params"),
        )
        .hash_password(b"pw", &salt().expect("salt"))
        .expect("hash")
        .to_string();
        assert!(
            verify("pw", &weaker),
            "still checked with its own parameters"
        );
        assert!(needs_rehash(&weaker));
        let argon2i = weaker.replacen("argon2id", "argon2i", 1);
        assert!(needs_rehash(&argon2i));
        assert!(needs_rehash("not a hash"));
    }

    #[test]
    fn new_passwords_are_bounded_plain_text() {
        assert!(check("pw").is_ok());
        assert!(check("").is_err());
        assert!(check(&"é".repeat(MAX_CHARS)).is_ok());
        assert!(check(&"x".repeat(MAX_CHARS + 1)).is_err());
        assert!(check("a\nb").is_err());
    }
}
