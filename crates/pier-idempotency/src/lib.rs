//! Idempotency records for `Idempotency-Key`: a retried request runs once, and its response is
//! replayed.
//!
//! The first request with a key claims a record holding a fingerprint of the request. While it
//! runs, the same key is in flight; once it has succeeded, the same request gets the stored
//! response again and a different request with that key is a mismatch. A claim abandoned by a
//! crashed process can be taken over after [`LOCK_TIMEOUT`]; every claim carries a fresh token,
//! so the original request, if it was merely slow, can neither store its response over the new
//! owner's nor release the new owner's claim (fencing).
//!
//! Nothing is stored in the clear (see [`pier_core::seal`]): the record is found by an HMAC of
//! (caller, key) under a server key, the fingerprint is an HMAC under a key bound to the
//! client's own Idempotency-Key, and the response, which may carry a secret (the key returned by
//! `POST /v1/api-keys`), is sealed under that same bound key. The database alone can neither
//! tell which Idempotency-Key a record belongs to nor read what it stores.

mod store;

pub use store::{Claim, IdempotencyStore, Lease, Request, StoredResponse};

use std::time::Duration;

/// How long a record is kept.
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a claim may stay in flight before another request with the key may take it over.
/// Longer than any request can run (the server's request timeout plus the longest long-poll).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

/// The table this crate owns, for [`pier_db::Db::migrate`].
pub const MIGRATIONS: &[pier_db::Migration] = pier_db::migrations!(4 => "0004_idempotency_sealed");
