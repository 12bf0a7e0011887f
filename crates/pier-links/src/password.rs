//! Link passwords, hashed with Argon2id at OWASP's minimum cost (19 MiB, two passes, one lane)
//! into a PHC string, so the parameters travel with each hash and can rise without breaking the
//! ones already stored. Hashing and checking take tens of milliseconds of CPU on purpose: run
//! them on a blocking thread, never on the async executor.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The longest password accepted, in characters: enough for any passphrase, and a bound (4 KiB)
/// on the work an unauthenticated visitor can ask for.
pub const MAX_CHARS: usize = 1024;

fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks a new password: 1 to [`MAX_CHARS`] characters, no control characters.
pub fn check(password: &str) -> Result<(), String> {
    pier_core::validation::plain_text(password, 1, MAX_CHARS)
}

/// A new password in the OpenAPI document: [`check`]'s rule.
pub fn schema() -> utoipa::openapi::schema::ObjectBuilder {
    pier_core::schema::plain_text(1, MAX_CHARS)
}

/// The PHC string of `password` under a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
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
