//! Signing and verifying the `v1` (HMAC-SHA256) scheme.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::SigningSecret;

/// Header carrying the message id, the same on every retry (use it to deduplicate).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the attempt's Unix time in whole seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `version,base64` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// Default allowed distance between `webhook-timestamp` and the receiver's clock, either way.
pub const TOLERANCE_SECS: i64 = 300;
/// Signature version of the symmetric scheme; other versions (`v1a` is Ed25519) are skipped.
const VERSION: &str = "v1";

/// The three header values of a delivery, as received. Pass `""` for an absent header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`.
    pub timestamp: &'a str,
    /// `webhook-signature`.
    pub signature: &'a str,
}

/// Why a delivery was rejected. Messages never contain secret material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The receiver passed no secrets, so nothing could ever match: a configuration error.
    #[error("no signing secret to verify with")]
    NoSecrets,
    /// A header value was empty (the usual stand-in for "absent"); the field is its name.
    #[error("missing or empty `{0}` header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not a plain decimal integer of seconds.
    #[error("`webhook-timestamp` is not an integer number of seconds")]
    InvalidTimestamp,
    /// The delivery is older than the tolerance: possibly a captured request being replayed.
    #[error("`webhook-timestamp` is too far in the past (possible replay)")]
    TooOld,
    /// The delivery claims to be from further in the future than the tolerance.
    #[error("`webhook-timestamp` is too far in the future (check the clocks)")]
    TooNew,
    /// No `v1` entry of `webhook-signature` matches any secret (wrong secret, or the id,
    /// timestamp or body were changed, or the body was re-serialized before verifying).
    #[error("no `v1` signature in `webhook-signature` matches a known secret")]
    NoMatch,
}

/// HMAC-SHA256 over [`signed_content`].
fn mac(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(&signed_content(msg_id, timestamp, body));
    mac.finalize().into_bytes().into()
}

/// Signs one message: `v1,<base64 HMAC-SHA256(secret, "{msg_id}.{timestamp}.{body}")>`.
///
/// `msg_id` should not contain `.`: the signed text is `.`-delimited, so a dotted id could be
/// shifted into the timestamp or body of a different message with the same signature.
pub fn sign(secret: &SigningSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "{VERSION},{}",
        STANDARD.encode(mac(secret, msg_id, timestamp, body))
    )
}

/// The `webhook-signature` value: one signature per secret, space-separated. Several secrets
/// sign during a rotation so that receivers holding either the old or the new one accept.
/// An empty `secrets` gives an empty string.
pub fn signature_header(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a delivery with the default ±[`TOLERANCE_SECS`]. See
/// [`verify_with_tolerance`].
pub fn verify(
    secrets: &[SigningSecret],
    headers: Headers<'_>,
    body: &[u8],
    now_unix_secs: i64,
) -> Result<(), VerifyError> {
    verify_with_tolerance(secrets, headers, body, now_unix_secs, TOLERANCE_SECS)
}

/// [`verify`] with a single secret.
pub fn verify_one(
    secret: &SigningSecret,
    headers: Headers<'_>,
    body: &[u8],
    now_unix_secs: i64,
) -> Result<(), VerifyError> {
    verify(std::slice::from_ref(secret), headers, body, now_unix_secs)
}

/// Verifies a delivery: the timestamp must be within `tolerance_secs` of `now_unix_secs`
/// (inclusive, both ways; a negative tolerance counts as 0), and at least one `v1` entry of
/// the signature header must match one of `secrets`. `body` must be the raw bytes received.
///
/// Entries of other versions, entries without a comma and entries that are not base64 are
/// skipped rather than rejected, so that new signature versions do not break old receivers.
pub fn verify_with_tolerance(
    secrets: &[SigningSecret],
    headers: Headers<'_>,
    body: &[u8],
    now_unix_secs: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    if secrets.is_empty() {
        return Err(VerifyError::NoSecrets);
    }
    let timestamp = fresh_timestamp(headers, now_unix_secs, tolerance_secs)?;
    let expected: Vec<[u8; 32]> = secrets
        .iter()
        .map(|secret| mac(secret, headers.id, timestamp, body))
        .collect();
    for given in signatures(headers.signature, VERSION) {
        // Constant time, so response timing cannot be used to guess a valid signature byte by
        // byte. Returning early on a match only reveals what the sender already knows.
        if expected
            .iter()
            .any(|mac| bool::from(mac.as_slice().ct_eq(&given)))
        {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

/// The checks every scheme makes before looking at signatures: the three headers are there,
/// and the timestamp is an integer within `tolerance_secs` of `now` (a negative tolerance
/// counts as 0). Returns the timestamp.
pub(crate) fn fresh_timestamp(
    headers: Headers<'_>,
    now: i64,
    tolerance_secs: i64,
) -> Result<i64, VerifyError> {
    for (value, name) in [
        (headers.id, HEADER_ID),
        (headers.timestamp, HEADER_TIMESTAMP),
        (headers.signature, HEADER_SIGNATURE),
    ] {
        if value.is_empty() {
            return Err(VerifyError::MissingHeader(name));
        }
    }
    let timestamp = parse_timestamp(headers.timestamp)?;
    check_freshness(timestamp, now, tolerance_secs.max(0))?;
    Ok(timestamp)
}

/// The decoded signatures of `version` in a `webhook-signature` value. Entries of other
/// versions, without a comma or not base64 are skipped, so new versions never break old
/// receivers.
pub(crate) fn signatures<'a>(
    header: &'a str,
    version: &'a str,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    header.split_ascii_whitespace().filter_map(move |entry| {
        let (v, encoded) = entry.split_once(',')?;
        (v == version)
            .then(|| STANDARD.decode(encoded).ok())
            .flatten()
    })
}

/// The text every scheme signs: `{msg_id}.{timestamp}.{body}`.
pub(crate) fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{msg_id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    content
}

/// Accepts exactly what [`sign`]'s `i64` prints: an optional `-` then ASCII digits. Rust's
/// own parser would also take a leading `+`, which no signer sends.
fn parse_timestamp(text: &str) -> Result<i64, VerifyError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidTimestamp);
    }
    text.parse().map_err(|_| VerifyError::InvalidTimestamp)
}

/// Inclusive at the boundary, like the reference libraries (`now - ts > tolerance` is too old).
/// Saturating, so absurd timestamps are rejected instead of overflowing.
fn check_freshness(timestamp: i64, now: i64, tolerance: i64) -> Result<(), VerifyError> {
    let age = now.saturating_sub(timestamp);
    if age > tolerance {
        Err(VerifyError::TooOld)
    } else if age < -tolerance {
        Err(VerifyError::TooNew)
    } else {
        Ok(())
    }
}

/// The current Unix time in whole seconds, for the `now_unix_secs` argument of [`verify`].
/// (Verification takes the time as an argument so that it can be tested without a clock.)
pub fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}
