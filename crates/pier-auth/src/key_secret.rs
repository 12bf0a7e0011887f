//! The API key format: `pier_` + 32 base62 characters of randomness (≈190 bits) + a 6-character
//! base62 checksum of that body. The checksum lets Pier (and secret scanners) reject a mistyped or
//! truncated key without touching the database; the prefix makes leaked keys easy to grep for.
//! Only a SHA-256 hash of the whole key is stored: the keys are random enough that a fast hash is
//! safe (no dictionary to attack), and lookups stay cheap on every request.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};

const PREFIX: &str = "pier_";
const BODY_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A full API key. Its `Debug` shows only the identifying prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a Pier API key (expected `pier_` followed by 38 letters and digits with a valid checksum)"
)]
pub struct InvalidKeySecret;

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut n = u64::from(u32::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3],
    ]));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl KeySecret {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let body: String = (0..BODY_LEN)
            .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
            .collect();
        let sum = checksum(&body);
        Self(format!("{PREFIX}{body}{sum}"))
    }

    /// Checks format and checksum only; whether the key exists is for the database to say.
    pub fn parse(text: &str) -> Result<Self, InvalidKeySecret> {
        let rest = text.strip_prefix(PREFIX).ok_or(InvalidKeySecret)?;
        if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(InvalidKeySecret);
        }
        let (body, sum) = rest.split_at(BODY_LEN);
        if checksum(body) != sum {
            return Err(InvalidKeySecret);
        }
        Ok(Self(text.to_owned()))
    }

    /// The hex SHA-256 stored in place of the key.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// The first characters, stored and shown so people can tell their keys apart.
    pub fn display_prefix(&self) -> String {
        self.0[..PREFIX.len() + 8].to_owned()
    }

    /// The whole key: shown once at creation, never logged.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeySecret({}…)", self.display_prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_typos_do_not() {
        let key = KeySecret::generate();
        assert_eq!(KeySecret::parse(key.expose()), Ok(key.clone()));
        assert_eq!(key.expose().len(), PREFIX.len() + BODY_LEN + CHECKSUM_LEN);

        let mut typo = key.expose().as_bytes().to_vec();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).expect("ascii");
        assert_eq!(KeySecret::parse(&typo), Err(InvalidKeySecret));
        assert_eq!(KeySecret::parse(&key.expose()[..40]), Err(InvalidKeySecret));
        assert_eq!(KeySecret::parse("Bearer nonsense"), Err(InvalidKeySecret));
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = KeySecret::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.expose()[15..]));
    }
}
