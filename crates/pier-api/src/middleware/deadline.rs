//! Every request runs within a deadline, so a stalled upload or a stuck dependency cannot hold a
//! connection (and an idempotency claim) forever. Long-poll claims get their wait on top.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::ApiError;

/// How long the requests of a route may run.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Duration);

pub async fn deadline(
    State(Deadline(limit)): State<Deadline>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!(
                "the request did not finish within {} s; retry it (with the same \
                 Idempotency-Key, if it changes anything)",
                limit.as_secs()
            ),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        .into_response(),
    }
}
