//! CORS, for browser apps on the origins `[server] cors_allowed_origins` lists (exact origins;
//! none by default, and then no CORS header is ever sent). A preflight is answered here, before
//! authentication and rate limits, with `204`, the methods and headers the API takes and a
//! `Max-Age`; other responses carry `Access-Control-Allow-Origin` only for a listed origin.
//! Credentials are never allowed across origins: a sign-in session's cookie stays with Pier's
//! own origin, and a browser app authenticates with a bearer token.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may reuse a preflight's answer.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for `origins`; `None` when there are none (CORS off).
pub fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    let headers = [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        HeaderName::from_static("idempotency-key"),
        HeaderName::from_static("traceparent"),
        HeaderName::from_static("tracestate"),
    ];
    let exposed = [
        header::ETAG,
        header::LOCATION,
        header::RETRY_AFTER,
        HeaderName::from_static("x-request-id"),
        HeaderName::from_static("ratelimit"),
        HeaderName::from_static("ratelimit-policy"),
    ];
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods(methods)
            .allow_headers(headers)
            .expose_headers(exposed)
            .max_age(MAX_AGE)
            .allow_credentials(false),
    )
}

/// Answers a preflight with `204 No Content` (the CORS layer answers `200` with no body).
/// Outside the CORS layer, and only with it: every `OPTIONS` request it sees is a preflight.
pub async fn preflight_no_content(req: Request, next: Next) -> Response {
    let preflight = req.method() == Method::OPTIONS;
    let mut response = next.run(req).await;
    if preflight && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}
