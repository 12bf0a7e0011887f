//! Sign and verify [Standard Webhooks](https://www.standardwebhooks.com/) symmetric (`v1`,
//! HMAC-SHA256) signatures. Pier signs its deliveries with this crate; receivers can depend on
//! it alone to check them.
//!
//! # The three headers
//!
//! - `webhook-id`: the message id. It stays the same across retries, so store the ids you
//!   have processed and skip repeats.
//! - `webhook-timestamp`: when this attempt was sent, in whole seconds since the Unix epoch.
//! - `webhook-signature`: space-separated `version,base64` entries, for example
//!   `v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=`. A `v1` entry is
//!   HMAC-SHA256 with your secret over `{id}.{timestamp}.{body}`. While a secret is being
//!   rotated there is one entry per secret; entries of other versions (`v1a` is Ed25519) are
//!   skipped. One matching `v1` entry is enough.
//!
//! The secret is shown to you as `whsec_` followed by base64; [`SigningSecret::parse`] takes
//! it (with or without the prefix).
//!
//! # Example
//!
//! ```
//! use pier_webhook_verify::{Headers, SigningSecret, VerifyError, sign, unix_now, verify_one};
//!
//! let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//!
//! // Sender (Pier): sign the exact bytes it is about to send.
//! let body = br#"{"type":"link.clicked","data":{"id":"lnk_1"}}"#;
//! let sent_at = unix_now();
//! let signature = sign(&secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", sent_at, body);
//!
//! // Receiver: the three header values, the raw body, and the current time.
//! let timestamp = sent_at.to_string();
//! let headers = Headers {
//!     id: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
//!     timestamp: &timestamp,
//!     signature: &signature,
//! };
//! verify_one(&secret, headers, body, unix_now())?;
//!
//! // The same request replayed ten minutes later is refused.
//! assert_eq!(verify_one(&secret, headers, body, sent_at + 600), Err(VerifyError::TooOld));
//! // So is a body that was changed, or re-serialized, on the way.
//! let reformatted = br#"{"type": "link.clicked", "data": {"id": "lnk_1"}}"#;
//! assert_eq!(verify_one(&secret, headers, reformatted, unix_now()), Err(VerifyError::NoMatch));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! During a rotation, pass every secret you currently accept to [`verify`].
//!
//! # Things to get right
//!
//! - **Verify the raw body bytes, exactly as received.** Do it before parsing the JSON: a
//!   parsed and re-serialized body differs in spacing or key order, and fails the check.
//! - **The timestamp tolerance is what stops replays.** The signature covers the timestamp,
//!   so an attacker who captured a delivery cannot re-date it; refusing deliveries older than
//!   [`TOLERANCE_SECS`] (5 minutes, either direction to allow for clock skew) bounds how long
//!   a captured one can be replayed. Deduplicating on `webhook-id` closes the rest of that
//!   window. [`verify_with_tolerance`] changes the window; keep it small.
//! - **Comparison is constant-time.** An ordinary `==` returns sooner the earlier the first
//!   wrong byte is, and that timing lets an attacker find a valid signature byte by byte.
//!   This crate compares with [`subtle`].
//! - Errors ([`VerifyError`], [`SecretError`]) say what was wrong without secret material, so
//!   they are safe to log. Answer the sender with a plain 4xx either way.

#[cfg(feature = "ed25519")]
mod asymmetric;
mod secret;
mod signature;
#[cfg(test)]
mod tests;

#[cfg(feature = "ed25519")]
pub use asymmetric::{
    KeyError, PUBLIC_KEY_PREFIX, PublicKey, SECRET_KEY_PREFIX, SigningKey, sign_ed25519,
    verify_ed25519,
};
pub use secret::{MAX_SECRET_LEN, MIN_SECRET_LEN, SECRET_PREFIX, SecretError, SigningSecret};
pub use signature::{
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, Headers, TOLERANCE_SECS, VerifyError, sign,
    signature_header, unix_now, verify, verify_one, verify_with_tolerance,
};
