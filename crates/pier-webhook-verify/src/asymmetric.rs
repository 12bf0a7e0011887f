//! The asymmetric scheme of Standard Webhooks (feature `ed25519`): the sender signs
//! `{msg_id}.{timestamp}.{body}` with an Ed25519 key and sends `v1a,<base64 signature>`; the
//! receiver verifies with the public key alone, so it holds nothing that could forge a
//! delivery. Keys are written `whsk_<base64 seed>` (secret) and `whpk_<base64 key>` (public).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer};

use crate::signature::{fresh_timestamp, signatures, signed_content};
use crate::{Headers, TOLERANCE_SECS, VerifyError};

/// The prefix of a serialized secret key.
pub const SECRET_KEY_PREFIX: &str = "whsk_";
/// The prefix of a serialized public key.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";
const VERSION: &str = "v1a";

/// A key that did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key must start with `{0}`")]
    Prefix(&'static str),
    #[error("the key is not base64 of 32 bytes")]
    Encoding,
    #[error("the public key is not a valid Ed25519 point")]
    InvalidPoint,
}

/// A sender's Ed25519 signing key. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

fn decode32(text: &str, prefix: &'static str) -> Result<[u8; 32], KeyError> {
    let encoded = text
        .trim()
        .strip_prefix(prefix)
        .ok_or(KeyError::Prefix(prefix))?;
    let bytes = STANDARD.decode(encoded).map_err(|_| KeyError::Encoding)?;
    bytes.try_into().map_err(|_| KeyError::Encoding)
}

impl SigningKey {
    /// The key whose secret is these 32 random bytes.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Reads `whsk_<base64 of the 32-byte seed>`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        decode32(text, SECRET_KEY_PREFIX).map(Self::from_seed)
    }

    /// The 32-byte seed, to store (sealed) and give back to [`from_seed`](Self::from_seed).
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn to_whsk(&self) -> String {
        format!("{SECRET_KEY_PREFIX}{}", STANDARD.encode(self.0.to_bytes()))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
}

/// A receiver's copy of a sender's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Reads `whpk_<base64 of the 32-byte key>`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes = decode32(text, PUBLIC_KEY_PREFIX)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidPoint)
    }

    pub fn to_whpk(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", STANDARD.encode(self.0.as_bytes()))
    }
}

/// Signs one message: `v1a,<base64 Ed25519 signature of "{msg_id}.{timestamp}.{body}">`.
pub fn sign_ed25519(key: &SigningKey, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = key.0.sign(&signed_content(msg_id, timestamp, body));
    format!("{VERSION},{}", STANDARD.encode(signature.to_bytes()))
}

/// Verifies a delivery's `v1a` signatures with the default ±[`TOLERANCE_SECS`]: the timestamp
/// must be fresh and at least one `v1a` entry must verify under one of `keys` (strictly: no
/// malleable or small-order signatures). Other entries are skipped.
pub fn verify_ed25519(
    keys: &[PublicKey],
    headers: Headers<'_>,
    body: &[u8],
    now_unix_secs: i64,
) -> Result<(), VerifyError> {
    if keys.is_empty() {
        return Err(VerifyError::NoSecrets);
    }
    let timestamp = fresh_timestamp(headers, now_unix_secs, TOLERANCE_SECS)?;
    let content = signed_content(headers.id, timestamp, body);
    for given in signatures(headers.signature, VERSION) {
        let Ok(signature) = Signature::from_slice(&given) else {
            continue;
        };
        if keys
            .iter()
            .any(|key| key.0.verify_strict(&content, &signature).is_ok())
        {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_seed([byte; 32])
    }

    #[test]
    fn a_v1a_signature_verifies_with_the_public_key_only() {
        let key = key(7);
        let body = br#"{"type":"a.b"}"#;
        let signature = sign_ed25519(&key, "msg_1", 1_000, body);
        assert!(signature.starts_with("v1a,"));
        let header = format!("v1,bm90IGEgbWFj {signature}");
        let headers = Headers {
            id: "msg_1",
            timestamp: "1000",
            signature: &header,
        };
        let public = PublicKey::parse(&key.public_key().to_whpk()).expect("whpk");
        assert_eq!(
            verify_ed25519(std::slice::from_ref(&public), headers, body, 1_010),
            Ok(())
        );
        let other = key_public(8);
        assert_eq!(
            verify_ed25519(&[other], headers, body, 1_010),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify_ed25519(std::slice::from_ref(&public), headers, b"{}", 1_010),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify_ed25519(&[public], headers, body, 2_000),
            Err(VerifyError::TooOld)
        );
    }

    fn key_public(byte: u8) -> PublicKey {
        key(byte).public_key()
    }

    #[test]
    fn keys_round_trip_and_refuse_the_wrong_form() {
        let key = key(3);
        let again = SigningKey::parse(&key.to_whsk()).expect("whsk");
        assert_eq!(again.seed(), key.seed());
        assert!(!format!("{key:?}").contains(&key.to_whsk()[5..]));
        assert_eq!(
            PublicKey::parse(&key.to_whsk()),
            Err(KeyError::Prefix(PUBLIC_KEY_PREFIX))
        );
        assert_eq!(PublicKey::parse("whpk_AAAA"), Err(KeyError::Encoding));
        assert_eq!(
            SigningKey::parse("whsk_!!").map(|k| k.seed()),
            Err(KeyError::Encoding)
        );
    }
}
