//! `Idempotency-Key` on `POST`: a retried request runs once.
//!
//! The first request with a key claims a row (`principal`, `key`) holding a fingerprint of the
//! request (method, path, query and body). While it runs, the same key gets `409`; once it has
//! succeeded, the same request gets the stored response again with `Idempotent-Replayed: true`
//! and a different request with that key gets `422`. Only `2xx` responses are stored: a request
//! that failed (validation, conflict, server error) releases the key so the client can fix it
//! and retry. Records live 24 hours. A claim left behind by a crashed process is taken over once
//! it is older than [`LOCK_TIMEOUT`].

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pier_auth::Principal;
use pier_core::Timestamp;
use pier_db::{Db, with_reader, with_writer};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::problem::ApiError;

pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
const HEADER: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";
/// Headers worth replaying; the rest (dates, request ids) belong to the new exchange.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(raw_key) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match parse_key(raw_key) {
        Ok(key) => key,
        Err(err) => return err.into_response(),
    };
    let Some(subject) = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.subject().to_owned())
    else {
        return next.run(req).await;
    };
    match run(&state, req, next, &subject, &key).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run(
    state: &AppState,
    req: Request,
    next: Next,
    subject: &str,
    key: &str,
) -> Result<Response, Response> {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, state.body_limit()).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        )
        .into_response()
    })?;
    let fingerprint = fingerprint(&parts.method, &parts.uri, &bytes);
    let store = Store {
        db: state.db(),
        now: state.clock().now(),
    };
    match store
        .claim(subject, key, &fingerprint)
        .await
        .map_err(into_response)?
    {
        Claim::Proceed => {}
        Claim::Replay(stored) => return Ok(stored.into_response()),
        Claim::InFlight => {
            return Err(ApiError::conflict(
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry later",
            )
            .into_response());
        }
        Claim::Mismatch => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            )
            .into_response());
        }
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() {
        if let Err(err) = store.release(subject, key).await {
            tracing::warn!(error = %err, "could not release an idempotency key");
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(err) => {
            let _ = store.release(subject, key).await;
            return Err(
                ApiError::internal(anyhow::anyhow!(err).context("response body")).into_response(),
            );
        }
    };
    let headers: Vec<(String, String)> = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_owned(), value.to_owned()))
        })
        .collect();
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers,
        body: body.to_vec(),
    };
    if let Err(err) = store.complete(subject, key, &stored).await {
        // The work is done; a retry after the lock timeout would run it again, so say so loudly.
        tracing::error!(error = %err, "could not store an idempotent response");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

fn into_response(err: sqlx::Error) -> Response {
    ApiError::from(err).into_response()
}

/// 1 to 255 printable ASCII characters.
fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    if (1..=255).contains(&bytes.len()) && bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    } else {
        Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
        ))
    }
}

fn fingerprint(method: &Method, uri: &axum::http::Uri, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str());
    hasher.update([0]);
    hasher.update(uri.path_and_query().map_or("", |p| p.as_str()));
    hasher.update([0]);
    hasher.update(body);
    hex::encode(hasher.finalize())
}

#[derive(Debug)]
struct StoredResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl IntoResponse for StoredResponse {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name), HeaderValue::try_from(value))
            {
                response.headers_mut().insert(name, value);
            }
        }
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
        response
    }
}

enum Claim {
    Proceed,
    Replay(StoredResponse),
    InFlight,
    Mismatch,
}

#[derive(sqlx::FromRow)]
struct Row {
    fingerprint: String,
    status_code: Option<i64>,
    response_headers: Option<String>,
    response_body: Option<Vec<u8>>,
    locked_at: i64,
    expires_at: i64,
}

struct Store<'a> {
    db: &'a Db,
    now: Timestamp,
}

impl Store<'_> {
    async fn claim(
        &self,
        subject: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<Claim, sqlx::Error> {
        let now = self.now.as_micros();
        let expires = self.now.saturating_add(RETENTION).as_micros();
        // Two rounds: the second runs after clearing an expired record or losing it to a race.
        for _ in 0..2 {
            let inserted = with_writer!(self.db, pool => {
                sqlx::query(
                    "INSERT INTO idempotency_keys (principal, key, fingerprint, locked_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (principal, key) DO NOTHING",
                )
                .bind(subject)
                .bind(key)
                .bind(fingerprint)
                .bind(now)
                .bind(expires)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })?;
            if inserted == 1 {
                return Ok(Claim::Proceed);
            }
            let row: Option<Row> = with_reader!(self.db, pool => {
                sqlx::query_as(
                    "SELECT fingerprint, status_code, response_headers, response_body, locked_at, \
                     expires_at FROM idempotency_keys WHERE principal = $1 AND key = $2",
                )
                .bind(subject)
                .bind(key)
                .fetch_optional(pool)
                .await
            })?;
            let Some(row) = row else { continue };
            if row.expires_at <= now {
                self.delete_expired(subject, key).await?;
                continue;
            }
            if row.fingerprint != fingerprint {
                return Ok(Claim::Mismatch);
            }
            if let Some(status) = row.status_code {
                let headers = row
                    .response_headers
                    .and_then(|h| serde_json::from_str(&h).ok())
                    .unwrap_or_default();
                let status = u16::try_from(status).unwrap_or(200);
                let body = row.response_body.unwrap_or_default();
                return Ok(Claim::Replay(StoredResponse {
                    status,
                    headers,
                    body,
                }));
            }
            let abandoned =
                Timestamp::from_micros(row.locked_at).saturating_add(LOCK_TIMEOUT) <= self.now;
            if abandoned && self.take_over(subject, key, row.locked_at).await? {
                return Ok(Claim::Proceed);
            }
            return Ok(Claim::InFlight);
        }
        Ok(Claim::InFlight)
    }

    async fn take_over(
        &self,
        subject: &str,
        key: &str,
        seen_lock: i64,
    ) -> Result<bool, sqlx::Error> {
        let updated = with_writer!(self.db, pool => {
            sqlx::query(
                "UPDATE idempotency_keys SET locked_at = $1 WHERE principal = $2 AND key = $3 \
                 AND status_code IS NULL AND locked_at = $4",
            )
            .bind(self.now.as_micros())
            .bind(subject)
            .bind(key)
            .bind(seen_lock)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(updated == 1)
    }

    async fn delete_expired(&self, subject: &str, key: &str) -> Result<(), sqlx::Error> {
        with_writer!(self.db, pool => {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND expires_at <= $3",
            )
            .bind(subject)
            .bind(key)
            .bind(self.now.as_micros())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    async fn complete(
        &self,
        subject: &str,
        key: &str,
        stored: &StoredResponse,
    ) -> Result<(), sqlx::Error> {
        let headers = serde_json::to_string(&stored.headers).unwrap_or_default();
        with_writer!(self.db, pool => {
            sqlx::query(
                "UPDATE idempotency_keys SET status_code = $1, response_headers = $2, \
                 response_body = $3 WHERE principal = $4 AND key = $5",
            )
            .bind(i64::from(stored.status))
            .bind(&headers)
            .bind(&stored.body)
            .bind(subject)
            .bind(key)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    async fn release(&self, subject: &str, key: &str) -> Result<(), sqlx::Error> {
        with_writer!(self.db, pool => {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND status_code IS NULL",
            )
            .bind(subject)
            .bind(key)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}

/// Deletes expired records; run periodically by the maintenance loop.
pub async fn prune_expired(db: &Db, now: Timestamp) -> Result<u64, sqlx::Error> {
    let deleted = with_writer!(db, pool => {
        sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
            .bind(now.as_micros())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(deleted)
}
