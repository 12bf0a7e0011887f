//! The addresses each user has signed in from lately ("familiar" addresses).
//!
//! Failed sign-ins are limited per account and address, and per account only for addresses
//! the account has not signed in from: a stranger's failures can use up the account-wide quota
//! for other strangers, never for the places the owner signs in from (ASVS 5.0 V6.1.1, V6.3.1:
//! brute force is bounded without a malicious lock-out). An address stays familiar for
//! [`FAMILIAR_FOR`] after its last successful sign-in.

use std::time::Duration;

use pier_core::Timestamp;
use pier_db::{Db, Tx, with_reader, with_tx};

use crate::users::{Email, UserId};

/// How long after its last successful sign-in an address stays familiar.
pub const FAMILIAR_FOR: Duration = Duration::from_secs(90 * 24 * 3600);

/// Whether the account of `email` signed in from `address` since `since`. An unknown email
/// has no familiar address.
pub(crate) async fn is_familiar(
    db: &Db,
    email: &Email,
    address: &str,
    since: Timestamp,
) -> Result<bool, sqlx::Error> {
    let found: Option<(i64,)> = with_reader!(db, pool => {
        sqlx::query_as(
            "SELECT a.last_seen_at FROM sign_in_addresses a JOIN users u ON u.id = a.user_id \
             WHERE u.email = $1 AND a.address = $2 AND a.last_seen_at > $3",
        )
        .bind(email.as_str())
        .bind(address)
        .bind(since.as_micros())
        .fetch_optional(pool)
        .await
    })?;
    Ok(found.is_some())
}

/// Notes a successful sign-in of `user` from `address`.
pub(crate) async fn remember(
    tx: &mut Tx,
    user: &UserId,
    address: &str,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO sign_in_addresses (user_id, address, last_seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, address) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        )
        .bind(user.as_str())
        .bind(address)
        .bind(now.as_micros())
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Forgets addresses not signed in from since `before`; returns how many.
pub(crate) async fn forget_older(tx: &mut Tx, before: Timestamp) -> Result<u64, sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query("DELETE FROM sign_in_addresses WHERE last_seen_at <= $1")
            .bind(before.as_micros())
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
    })
}
