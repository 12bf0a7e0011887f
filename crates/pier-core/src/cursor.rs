//! Opaque, tamper-evident pagination cursors.
//!
//! A cursor is `base64url(scope_hash ‖ position_json ‖ tag)`: the position is the sort key of the
//! last row served (e.g. `(created_at, id)`), `scope_hash` binds it to one list with one set of
//! filters for one workspace, and `tag` is an HMAC-SHA256 over both under a server secret. A
//! client can neither forge a position nor reuse a cursor with other filters; and since every list
//! query still filters by the caller's workspace, a cursor never grants access to anything.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const SCOPE_LEN: usize = 8;
const TAG_LEN: usize = 16;

/// Signs and verifies cursors with one server-wide key.
#[derive(Clone)]
pub struct CursorCodec {
    key: [u8; 32],
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("the cursor is malformed or was modified")]
    Invalid,
    #[error("the cursor belongs to another list or to other filters")]
    WrongScope,
}

impl CursorCodec {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC accepts keys of any length")
        };
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    fn scope_hash(scope: &str) -> [u8; SCOPE_LEN] {
        let digest = Sha256::digest(scope.as_bytes());
        let mut out = [0u8; SCOPE_LEN];
        out.copy_from_slice(&digest[..SCOPE_LEN]);
        out
    }

    /// Encodes `position` for the list identified by `scope` (list name, workspace and filters).
    pub fn encode<P: Serialize>(&self, scope: &str, position: &P) -> String {
        let mut data = Self::scope_hash(scope).to_vec();
        // Serializing plain keys (numbers, strings, tuples) cannot fail.
        data.extend(serde_json::to_vec(position).unwrap_or_default());
        let tag = self.tag(&data);
        data.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(data)
    }

    /// Verifies and decodes a cursor produced by [`encode`](Self::encode) for the same scope.
    pub fn decode<P: DeserializeOwned>(&self, scope: &str, cursor: &str) -> Result<P, CursorError> {
        let data = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| CursorError::Invalid)?;
        if data.len() < SCOPE_LEN + TAG_LEN {
            return Err(CursorError::Invalid);
        }
        let (signed, tag) = data.split_at(data.len() - TAG_LEN);
        if !bool::from(self.tag(signed).ct_eq(tag)) {
            return Err(CursorError::Invalid);
        }
        let (scope_hash, position) = signed.split_at(SCOPE_LEN);
        if scope_hash != Self::scope_hash(scope) {
            return Err(CursorError::WrongScope);
        }
        serde_json::from_slice(position).map_err(|_| CursorError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> CursorCodec {
        CursorCodec::new([7; 32])
    }

    #[test]
    fn round_trips_within_its_scope() {
        let cursor = codec().encode("keys?ws=1", &(42_i64, "key_x"));
        let back: (i64, String) = codec().decode("keys?ws=1", &cursor).expect("valid cursor");
        assert_eq!(back, (42, "key_x".to_owned()));
    }

    #[test]
    fn rejects_other_scopes_tampering_and_other_keys() {
        let cursor = codec().encode("keys?ws=1", &(42_i64, "key_x"));
        assert_eq!(
            codec().decode::<(i64, String)>("keys?ws=2", &cursor),
            Err(CursorError::WrongScope)
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).expect("base64");
        bytes[SCOPE_LEN] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            codec().decode::<(i64, String)>("keys?ws=1", &tampered),
            Err(CursorError::Invalid)
        );
        let other = CursorCodec::new([8; 32]);
        assert_eq!(
            other.decode::<(i64, String)>("keys?ws=1", &cursor),
            Err(CursorError::Invalid)
        );
        assert_eq!(
            codec().decode::<(i64, String)>("keys?ws=1", "!!"),
            Err(CursorError::Invalid)
        );
    }
}
