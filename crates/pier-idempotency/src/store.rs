//! The records, on either backend.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pier_core::{Clock, MasterKey, SubKey, Timestamp};
use pier_db::{Db, with_reader, with_writer};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::{LOCK_TIMEOUT, RETENTION};

/// A request that carries an `Idempotency-Key`.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who sent it (the caller's stable id): keys are scoped per caller.
    pub caller: &'a str,
    /// The client's `Idempotency-Key`.
    pub key: &'a str,
    pub method: &'a str,
    /// Path and query.
    pub target: &'a str,
    pub body: &'a [u8],
}

/// A response worth replaying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    #[serde(with = "base64_bytes")]
    pub body: Vec<u8>,
}

mod base64_bytes {
    use super::{Engine, STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Where a request's record lives and how to read it, all derived from the caller's key.
#[derive(Debug, Clone)]
struct Record {
    lookup: String,
    sealing: SubKey,
    fingerprint: String,
}

/// A claim on a record, held by the request that runs; its token fences it.
#[derive(Debug, Clone)]
pub struct Lease {
    record: Record,
    token: String,
}

/// What a request with an `Idempotency-Key` should do.
#[derive(Debug)]
pub enum Claim {
    /// Run it; then [`complete`](IdempotencyStore::complete) or
    /// [`release`](IdempotencyStore::release) the lease.
    Proceed(Lease),
    /// It ran before: answer with this.
    Replay(StoredResponse),
    /// The first request with this key is still running.
    InFlight,
    /// The key was used with a different request.
    Mismatch,
}

#[derive(sqlx::FromRow)]
struct Row {
    fingerprint: String,
    claim_token: Option<String>,
    response: Option<Vec<u8>>,
    locked_at: i64,
    expires_at: i64,
}

/// Idempotency records on the configured database.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    db: Db,
    clock: Arc<dyn Clock>,
    lookup: SubKey,
    sealing: SubKey,
}

fn token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl IdempotencyStore {
    pub fn new(db: Db, clock: Arc<dyn Clock>, master: &MasterKey) -> Self {
        Self {
            db,
            clock,
            lookup: master.derive("idempotency/lookup"),
            sealing: master.derive("idempotency/seal"),
        }
    }

    fn record(&self, request: &Request<'_>) -> Record {
        let client = [request.caller.as_bytes(), request.key.as_bytes()];
        let sealing = self.sealing.bind(&client);
        Record {
            lookup: self.lookup.tag(&client),
            fingerprint: sealing.tag(&[
                b"fingerprint",
                request.method.as_bytes(),
                request.target.as_bytes(),
                request.body,
            ]),
            sealing,
        }
    }

    /// Claims the record for `request`, or says why not.
    pub async fn claim(&self, request: &Request<'_>) -> Result<Claim, sqlx::Error> {
        let record = self.record(request);
        let now = self.clock.now();
        // Two rounds: the second runs after clearing an expired record or losing it to a race.
        for _ in 0..2 {
            let lease = Lease {
                record: record.clone(),
                token: token(),
            };
            let inserted = with_writer!(&self.db, pool => {
                sqlx::query(
                    "INSERT INTO idempotency_records \
                     (lookup, fingerprint, claim_token, locked_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (lookup) DO NOTHING",
                )
                .bind(&record.lookup)
                .bind(&record.fingerprint)
                .bind(&lease.token)
                .bind(now.as_micros())
                .bind(now.saturating_add(RETENTION).as_micros())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })?;
            if inserted == 1 {
                return Ok(Claim::Proceed(lease));
            }
            let row: Option<Row> = with_reader!(&self.db, pool => {
                sqlx::query_as(
                    "SELECT fingerprint, claim_token, response, locked_at, expires_at \
                     FROM idempotency_records WHERE lookup = $1",
                )
                .bind(&record.lookup)
                .fetch_optional(pool)
                .await
            })?;
            let Some(row) = row else { continue };
            if row.expires_at <= now.as_micros() {
                self.delete_expired(&record.lookup, now).await?;
                continue;
            }
            if row.fingerprint != record.fingerprint {
                return Ok(Claim::Mismatch);
            }
            if let Some(sealed) = row.response {
                return self.open(&record, &sealed).map(Claim::Replay);
            }
            let abandoned =
                Timestamp::from_micros(row.locked_at).saturating_add(LOCK_TIMEOUT) <= now;
            if abandoned
                && self
                    .take_over(&lease, row.claim_token.as_deref(), now)
                    .await?
            {
                return Ok(Claim::Proceed(lease));
            }
            return Ok(Claim::InFlight);
        }
        Ok(Claim::InFlight)
    }

    fn open(&self, record: &Record, sealed: &[u8]) -> Result<StoredResponse, sqlx::Error> {
        let plain = record
            .sealing
            .open(sealed, record.lookup.as_bytes())
            .map_err(|e| {
                sqlx::Error::Decode(
                    format!("a stored response does not open ({e}); was secret_key changed?")
                        .into(),
                )
            })?;
        serde_json::from_slice(&plain).map_err(|e| sqlx::Error::Decode(e.into()))
    }

    /// Takes over an abandoned claim, unless someone else did first.
    async fn take_over(
        &self,
        lease: &Lease,
        seen: Option<&str>,
        now: Timestamp,
    ) -> Result<bool, sqlx::Error> {
        let updated = with_writer!(&self.db, pool => {
            sqlx::query(
                "UPDATE idempotency_records SET claim_token = $1, locked_at = $2 \
                 WHERE lookup = $3 AND response IS NULL AND claim_token IS NOT DISTINCT FROM $4",
            )
            .bind(&lease.token)
            .bind(now.as_micros())
            .bind(&lease.record.lookup)
            .bind(seen)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(updated == 1)
    }

    async fn delete_expired(&self, lookup: &str, now: Timestamp) -> Result<(), sqlx::Error> {
        with_writer!(&self.db, pool => {
            sqlx::query("DELETE FROM idempotency_records WHERE lookup = $1 AND expires_at <= $2")
                .bind(lookup)
                .bind(now.as_micros())
                .execute(pool)
                .await
                .map(drop)
        })
    }

    /// Stores the response of the request holding `lease`, sealed. `false` when the claim was
    /// taken over meanwhile: nothing is stored, and the new owner's record stays as it is.
    pub async fn complete(
        &self,
        lease: &Lease,
        response: &StoredResponse,
    ) -> Result<bool, sqlx::Error> {
        let plain = serde_json::to_vec(response).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let record = &lease.record;
        let sealed = record.sealing.seal(&plain, record.lookup.as_bytes());
        let updated = with_writer!(&self.db, pool => {
            sqlx::query(
                "UPDATE idempotency_records SET response = $1, claim_token = NULL \
                 WHERE lookup = $2 AND claim_token = $3",
            )
            .bind(&sealed)
            .bind(&record.lookup)
            .bind(&lease.token)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(updated == 1)
    }

    /// Gives the key back after a failure, so the client can fix the request and retry; a lease
    /// that was taken over releases nothing.
    pub async fn release(&self, lease: &Lease) -> Result<(), sqlx::Error> {
        with_writer!(&self.db, pool => {
            sqlx::query(
                "DELETE FROM idempotency_records WHERE lookup = $1 AND claim_token = $2 \
                 AND response IS NULL",
            )
            .bind(&lease.record.lookup)
            .bind(&lease.token)
            .execute(pool)
            .await
            .map(drop)
        })
    }

    /// Deletes expired records; returns how many.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let now = self.clock.now().as_micros();
        with_writer!(&self.db, pool => {
            sqlx::query("DELETE FROM idempotency_records WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
    }
}
