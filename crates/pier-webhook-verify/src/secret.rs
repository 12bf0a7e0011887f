//! The symmetric signing key and its `whsec_` text form.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use subtle::ConstantTimeEq as _;

/// The prefix that marks a Standard Webhooks symmetric secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest key [`SigningSecret::from_bytes`] accepts (192 bits, as the spec recommends).
pub const MIN_SECRET_LEN: usize = 24;
/// Longest key [`SigningSecret::from_bytes`] accepts (512 bits, as the spec recommends).
pub const MAX_SECRET_LEN: usize = 64;

/// Standard alphabet with optional padding and loose trailing bits: the Python reference
/// library accepts unpadded secrets, and a receiver pasting one in should not be refused.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Why a signing secret was refused. Messages never contain any part of the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Nothing (or only `whsec_`) was given.
    #[error("signing secret is empty")]
    Empty,
    /// The text after `whsec_` is not standard base64. The decoder's own error is dropped on
    /// purpose: it names the offending character, which is part of the secret.
    #[error("signing secret is not valid base64 (expected `whsec_` followed by standard base64)")]
    InvalidBase64,
    /// [`SigningSecret::from_bytes`] got a key outside 24..=64 bytes.
    #[error("signing secret must be 24 to 64 bytes long, got {len}")]
    InvalidLength {
        /// The length that was given.
        len: usize,
    },
}

/// A symmetric (HMAC-SHA256, `v1`) signing key.
///
/// `Debug` never shows the bytes, equality is constant-time, and the bytes are overwritten
/// when the value is dropped (best effort, see the `Drop` impl).
#[derive(Clone)]
pub struct SigningSecret {
    bytes: Vec<u8>,
}

impl SigningSecret {
    /// Parses `whsec_<base64>`, or the bare base64 the reference libraries also accept.
    ///
    /// Lenient like those libraries: any non-empty key length, padding optional, surrounding
    /// whitespace (say, a trailing newline from a file) ignored. Only empty keys and text that
    /// is not base64 are refused.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        let bytes = LENIENT_BASE64
            .decode(encoded)
            .map_err(|_| SecretError::InvalidBase64)?;
        let secret = Self { bytes };
        if secret.bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(secret)
    }

    /// Wraps raw key bytes, which must be 24..=64 bytes long (the spec's range, and what Pier
    /// generates). Stricter than [`parse`](Self::parse) because these are keys we make.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SecretError> {
        // Wrap first, so that a refused key is zeroed on drop as well.
        let secret = Self { bytes };
        let len = secret.bytes.len();
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len) {
            return Err(SecretError::InvalidLength { len });
        }
        Ok(secret)
    }

    /// The `whsec_<base64>` text form, as shown to the people who configure receivers.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.bytes))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl FromStr for SigningSecret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

impl PartialEq for SigningSecret {
    /// Constant-time in the contents (lengths are not secret), so comparing a candidate key
    /// against a stored one does not leak how many leading bytes matched.
    fn eq(&self, other: &Self) -> bool {
        self.bytes.ct_eq(&other.bytes).into()
    }
}

impl Eq for SigningSecret {}

impl Drop for SigningSecret {
    fn drop(&mut self) {
        // Overwrite the whole allocation: `clear` + `resize` stays within the capacity, so
        // nothing is reallocated. Without `unsafe` volatile writes the compiler may still treat
        // this as a dead store and drop it; `black_box` makes that unlikely, not impossible.
        let capacity = self.bytes.capacity();
        self.bytes.clear();
        self.bytes.resize(capacity, 0);
        std::hint::black_box(&mut self.bytes);
    }
}
