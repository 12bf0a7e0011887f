//! Secrets at rest. Pier stores a secret in the clear nowhere: what it only has to recognise
//! (API keys, session ids) it stores as a hash; what it must give back later (an idempotent
//! replay that carries a new key's secret, a webhook signing secret) it stores sealed with an
//! AEAD (XChaCha20-Poly1305, random 192-bit nonces) under a key derived from the server's
//! [`MasterKey`], which lives in the configuration, never in the database. So the database
//! alone (a dump, a backup, a replica, the WAL) reveals no secret. See `docs/architecture.md`.
//!
//! Every use of the master key derives its own key ([`MasterKey::derive`] with a purpose
//! name), so no two purposes ever share key material.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const NONCE_LEN: usize = 24;

/// The server's root secret: 32 random bytes, written as 64 hexadecimal digits.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key)
            .map(|()| Self(key))
            .map_err(|_| "must be 64 hexadecimal digits (32 random bytes)".to_owned())
    }

    /// The text form, for generating a key to put in the configuration.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key for one purpose, e.g. `idempotency/lookup`.
    pub fn derive(&self, purpose: &str) -> SubKey {
        SubKey(mac(&self.0, &[b"pier-derive", purpose.as_bytes()]))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// A key derived for one purpose: it authenticates (HMAC-SHA256) and seals (AEAD).
#[derive(Clone, PartialEq, Eq)]
pub struct SubKey([u8; 32]);

impl fmt::Debug for SubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubKey([redacted])")
    }
}

/// Sealed data that failed to open: the key is wrong, or the data was altered or belongs to
/// another context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed data could not be opened (wrong key, or altered)")]
pub struct SealError;

/// HMAC-SHA256 over `parts`, each prefixed with its length so that no two lists of parts
/// authenticate the same bytes.
fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length")
    };
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl SubKey {
    /// A tag of `parts` under this key, as hex: for lookups and comparisons that must not
    /// reveal what they were computed from.
    pub fn tag(&self, parts: &[&[u8]]) -> String {
        hex::encode(mac(&self.0, parts))
    }

    /// A further key bound to `parts` (e.g. a client's own secret), so that data sealed under it
    /// opens only for whoever presents the same parts again.
    pub fn bind(&self, parts: &[&[u8]]) -> SubKey {
        SubKey(mac(&self.0, parts))
    }

    /// Encrypts and authenticates `plaintext`, binding it to `context` (which must be given
    /// again to open it): `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let payload = Payload {
            msg: plaintext,
            aad: context,
        };
        let Ok(sealed) = cipher.encrypt(XNonce::from_slice(&nonce), payload) else {
            unreachable!("XChaCha20-Poly1305 encrypts any message that fits in memory")
        };
        let mut out = nonce.to_vec();
        out.extend(sealed);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let payload = Payload {
            msg: ciphertext,
            aad: context,
        };
        cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SealError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key_and_context() {
        let master = MasterKey::generate();
        let key = master.derive("test").bind(&[b"client-secret"]);
        let sealed = key.seal(b"pier_the_secret", b"row-1");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            key.open(&sealed, b"row-1").expect("opens"),
            b"pier_the_secret"
        );
        assert_eq!(key.open(&sealed, b"row-2"), Err(SealError));
        let other_client = master.derive("test").bind(&[b"another"]);
        assert_eq!(other_client.open(&sealed, b"row-1"), Err(SealError));
        let other_purpose = master.derive("other").bind(&[b"client-secret"]);
        assert_eq!(other_purpose.open(&sealed, b"row-1"), Err(SealError));
        let mut altered = sealed.clone();
        altered[30] ^= 1;
        assert_eq!(key.open(&altered, b"row-1"), Err(SealError));
    }

    #[test]
    fn tags_are_unambiguous_and_keys_round_trip() {
        let key = MasterKey::generate().derive("tags");
        assert_ne!(key.tag(&[b"ab", b"c"]), key.tag(&[b"a", b"bc"]));
        let master = MasterKey::generate();
        assert_eq!(MasterKey::parse(&master.to_hex()), Ok(master.clone()));
        assert!(MasterKey::parse("short").is_err());
        assert_eq!(format!("{master:?}"), "MasterKey([redacted])");
    }
}
