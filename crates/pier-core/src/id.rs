//! Opaque, prefixed, time-sortable identifiers (`ws_…`, `key_…`, `job_…`).
//!
//! The body is 26 characters of lowercase Crockford base32 over 128 bits: a 48-bit millisecond
//! timestamp followed by 80 random bits, so ids sort roughly by creation time (good index
//! locality) while staying unguessable. The prefix tells a human what the id names; parsing checks
//! it, so a job id can never be passed where a key id is expected.

use std::fmt;

use rand::RngCore;

use crate::Timestamp;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const BODY_LEN: usize = 26;

/// Makes a fresh id body for the given creation time.
pub fn new_body(at: Timestamp) -> String {
    let mut random = [0u8; 10];
    rand::rng().fill_bytes(&mut random);
    let random = random
        .iter()
        .fold(0u128, |acc, byte| (acc << 8) | u128::from(*byte));
    encode(millis(at) << 80 | random)
}

/// The smallest id body of time `at`: every id created before `at` sorts below it, so a
/// primary-key range scan finds old rows without an index on their timestamps.
pub fn floor_body(at: Timestamp) -> String {
    encode(millis(at) << 80)
}

fn millis(at: Timestamp) -> u128 {
    u128::try_from(at.as_micros().max(0) / 1000).unwrap_or(0) & ((1 << 48) - 1)
}

fn encode(value: u128) -> String {
    (0..BODY_LEN)
        .rev()
        .map(|i| ALPHABET[((value >> (5 * i)) & 31) as usize] as char)
        .collect()
}

fn is_valid_body(body: &str) -> bool {
    body.len() == BODY_LEN
        && body.bytes().all(|b| ALPHABET.contains(&b))
        // 26 base32 digits hold 130 bits; the top digit may only carry the 2 highest bits.
        && body.as_bytes()[0] <= b'7'
}

/// The reason text did not parse as an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a valid {prefix}_ id")]
pub struct InvalidId {
    pub prefix: &'static str,
    pub text: String,
}

/// Parses `prefix_body`, checking both parts.
pub fn parse_prefixed(prefix: &'static str, text: &str) -> Result<String, InvalidId> {
    match text.split_once('_') {
        Some((p, body)) if p == prefix && is_valid_body(body) => Ok(text.to_owned()),
        _ => Err(InvalidId {
            prefix,
            text: text.chars().take(64).collect(),
        }),
    }
}

/// Declares a typed id: `define_id!(WorkspaceId, "ws");`
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id created at `at`.
            pub fn new(at: $crate::Timestamp) -> Self {
                Self(format!("{}_{}", $prefix, $crate::id::new_body(at)))
            }

            pub fn parse(text: &str) -> Result<Self, $crate::id::InvalidId> {
                $crate::id::parse_prefixed($prefix, text).map(Self)
            }

            /// Wraps a value read back from the database, where only valid ids are written.
            pub fn from_trusted(text: String) -> Self {
                Self(text)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::id::InvalidId;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                Self::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    // The first digit carries the top 2 of 130 bits, so it is 0 to 7.
                    .pattern(Some(concat!("^", $prefix, "_[0-7][0-9a-hjkmnp-tv-z]{25}$")))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// Displays at most the first characters of untrusted text inside an error message.
#[derive(Debug)]
pub struct Truncated<'a>(pub &'a str);

impl fmt::Display for Truncated<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut: String = self.0.chars().take(64).collect();
        f.write_str(&cut)?;
        if cut.len() < self.0.len() {
            f.write_str("…")
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    define_id!(TestId, "tst");

    #[test]
    fn ids_carry_their_prefix_and_parse_back() {
        let id = TestId::new(Timestamp::from_micros(1_700_000_000_000_000));
        assert!(id.as_str().starts_with("tst_"));
        assert_eq!(TestId::parse(id.as_str()), Ok(id.clone()));
        assert!(TestId::parse("job_00000000000000000000000000").is_err());
        assert!(TestId::parse("tst_short").is_err());
        assert!(TestId::parse("tst_0000000000000000000000000I").is_err());
    }

    #[test]
    fn ids_sort_by_creation_millisecond() {
        let early = TestId::new(Timestamp::from_micros(1_700_000_000_000_000));
        let late = TestId::new(Timestamp::from_micros(1_700_000_000_001_000));
        assert!(early < late);
        let floor = format!(
            "tst_{}",
            floor_body(Timestamp::from_micros(1_700_000_000_001_000))
        );
        assert!(early.as_str() < floor.as_str() && floor.as_str() <= late.as_str());
    }
}
