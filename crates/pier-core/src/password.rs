//! Passwords (of links and of users), hashed with Argon2id at OWASP's minimum cost (19 MiB, two
//! passes, one lane) into a PHC string, so the parameters travel with each hash and can rise
//! without breaking the ones already stored: [`needs_rehash`] tells a caller that has just
//! checked a password to store a fresh hash of it. Hashing and checking take tens of
//! milliseconds of CPU on purpose: run them on a blocking thread, never on the async executor.

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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

/// Argon2id's working memory (19 MiB), kept by a thread that hashes often (see
/// [`crate::hash_gate`]) so that each hash reuses it: freed and allocated again, blocks this
/// large fragment the allocator's arenas and the process grows with every hash.
#[derive(Default)]
pub struct Memory(Vec<Block>);

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Memory({} blocks)", self.0.len())
    }
}

/// The PHC string of `password` under a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    hash_in(password, &mut Memory::default())
}

/// [`hash`], working in `memory`.
pub fn hash_in(password: &str, memory: &mut Memory) -> Result<String, String> {
    let salt = salt()?;
    let hasher = hasher();
    let output = output_in(&hasher, password.as_bytes(), salt.as_salt(), memory)
        .map_err(|e| e.to_string())?;
    phc(&hasher, &salt, output)
}

/// A hash with today's parameters that no password matches: its output is all zeros, which no
/// one can find a password for. Checking a password against it costs what checking a real hash
/// costs, and making it costs nothing (a real hash would take 19 MiB and tens of milliseconds).
pub fn unmatchable() -> String {
    let salt = SaltString::encode_b64(&[0; 16]);
    let output = Output::new(&[0; Params::DEFAULT_OUTPUT_LEN]);
    match (salt, output) {
        (Ok(salt), Ok(output)) => phc(&hasher(), &salt, output).unwrap_or_default(),
        _ => String::new(),
    }
}

fn phc(hasher: &Argon2<'_>, salt: &SaltString, output: Output) -> Result<String, String> {
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(hasher.params()).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// What `hasher` makes of `password` and `salt`, computed in `memory` (grown when too small).
fn output_in(
    hasher: &Argon2<'_>,
    password: &[u8],
    salt: Salt<'_>,
    memory: &mut Memory,
) -> argon2::password_hash::Result<Output> {
    let mut decoded = [0u8; 64];
    let salt = salt.decode_b64(&mut decoded)?;
    let blocks = hasher.params().block_count();
    if memory.0.len() < blocks {
        memory.0.resize(blocks, Block::default());
    }
    let len = hasher
        .params()
        .output_len()
        .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    Output::init_with(len, |out| {
        hasher
            .hash_password_into_with_memory(password, salt, out, &mut memory.0[..])
            .map_err(Into::into)
    })
}

/// Sixteen random bytes, as the PHC salt.
fn salt() -> Result<SaltString, String> {
    SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())
}

/// Whether `password` matches `phc` (compared in constant time by the hasher). A malformed
/// stored hash matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    verify_in(password, phc, &mut Memory::default())
}

/// [`verify`], working in `memory`. The hash is computed with the stored hash's own algorithm,
/// version and costs.
pub fn verify_in(password: &str, phc: &str, memory: &mut Memory) -> bool {
    // A character is at most 4 bytes: the cheap bound before any hashing work.
    if password.len() > 4 * MAX_CHARS {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        parsed
            .version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let hasher = Argon2::new(algorithm, version, params);
    // `Output`'s comparison takes constant time.
    output_in(&hasher, password.as_bytes(), salt, memory).is_ok_and(|computed| computed == expected)
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
    use argon2::PasswordHasher;

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
    fn the_unmatchable_hash_has_todays_parameters_and_matches_nothing() {
        let phc = unmatchable();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!needs_rehash(&phc), "checked at today's cost");
        assert!(!verify("", &phc));
        assert!(!verify("no user has this password", &phc));
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
