//! `Idempotency-Key` on `POST`: a retried request runs once (see [`pier_idempotency`] for the
//! records, how they are sealed at rest and how claims are fenced).
//!
//! While the first request with a key runs, the same key gets `409`; once it has succeeded,
//! the same request gets the stored response again with `Idempotent-Replayed: true`, and a
//! different request with that key gets `422`. Only `2xx` responses are stored: a request that
//! failed (validation, conflict, server error) releases the key so the client can fix it and
//! retry. Records live 24 hours.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pier_auth::Principal;
use pier_idempotency::{Claim, StoredResponse};

use crate::AppState;
use crate::problem::ApiError;

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
        .map(Principal::replay_scope)
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
    // The body is kept to tell a retry from a different request, so it is bounded by the
    // server's body limit even on routes that take more without a key (link imports).
    let limit = state.http().body_limit;
    let bytes = to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a request with an Idempotency-Key may carry at most {limit} bytes"),
        )
        .into_response()
    })?;
    let request = pier_idempotency::Request {
        caller: subject,
        key,
        method: parts.method.as_str(),
        target: parts.uri.path_and_query().map_or("", |p| p.as_str()),
        body: &bytes,
    };
    let store = state.idempotency();
    let lease = match store.claim(&request).await.map_err(into_response)? {
        Claim::Proceed(lease) => lease,
        Claim::Replay(stored) => return Ok(replay(stored)),
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
    };

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() {
        if let Err(err) = store.release(&lease).await {
            tracing::warn!(error = %err, "could not release an idempotency key");
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(err) => {
            let _ = store.release(&lease).await;
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
    match store.complete(&lease, &stored).await {
        Ok(true) => {}
        // Another request took the claim over after the lock timeout; its result stands.
        Ok(false) => tracing::warn!("an idempotency claim was taken over before its request ended"),
        // The work is done; a retry after the lock timeout would run it again, so say so loudly.
        Err(err) => tracing::error!(error = %err, "could not store an idempotent response"),
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

fn into_response(err: sqlx::Error) -> Response {
    ApiError::from(err).into_response()
}

/// The longest `Idempotency-Key`.
pub const KEY_MAX: usize = 255;
/// Printable ASCII, not starting or ending with a space (HTTP drops those spaces anyway).
pub const KEY_PATTERN: &str = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$";

/// The rule [`KEY_PATTERN`] describes, 1 to [`KEY_MAX`] characters.
fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    let visible = |b: Option<&u8>| b.is_some_and(|b| (0x21..0x7f).contains(b));
    if bytes.len() <= KEY_MAX
        && visible(bytes.first())
        && visible(bytes.last())
        && bytes.iter().all(|b| (0x20..0x7f).contains(b))
    {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    } else {
        Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!(
                "Idempotency-Key must be 1 to {KEY_MAX} printable ASCII characters, not \
                 starting or ending with a space"
            ),
        ))
    }
}

fn replay(stored: StoredResponse) -> Response {
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
