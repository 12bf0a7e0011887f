//! API protection: every `/v1` resource request spends one unit of its API key's quota, and
//! public routes and refused credentials one unit of the client address's (see
//! [`ApiProtection`](crate::rate_limit::ApiProtection)). Responses carry the `RateLimit` fields;
//! a request over quota gets a `429` and never reaches its handler.

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pier_auth::Principal;
use pier_ratelimit::{Decision, Policy};

use crate::AppState;
use crate::problem::ApiError;
use crate::rate_limit::{client_ip, insert_fields, refusal};

/// Limits per authenticated caller; runs after [`authenticate`](super::authenticate).
pub async fn limit_per_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let subject = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.subject().to_owned());
    match (&state.http().protection.per_key, subject) {
        (Some(policy), Some(subject)) => enforce(&state, policy, &subject, req, next).await,
        _ => next.run(req).await,
    }
}

/// Limits per client address.
pub async fn limit_per_ip(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match (&state.http().protection.per_ip, ip_key(&state, &req)) {
        (Some(policy), Some(ip)) => enforce(&state, policy, &ip, req, next).await,
        _ => next.run(req).await,
    }
}

/// A refused credential spends one unit of the client address's quota, so guessing keys is
/// as limited as any anonymous request: over quota, the `401` becomes a `429`.
/// `client` is [`ip_key`] of the request.
pub(crate) async fn after_refused_credentials(
    state: &AppState,
    client: Option<String>,
    refused: Response,
) -> Response {
    let (Some(policy), Some(ip)) = (&state.http().protection.per_ip, client) else {
        return refused;
    };
    match spend(state, policy, &ip).await {
        Ok(d) => {
            let mut response = refused;
            insert_fields(response.headers_mut(), &[(policy, &d)]);
            response
        }
        Err(over) => over,
    }
}

/// The client address of `req`, as the key of per-IP limits.
pub(crate) fn ip_key(state: &AppState, req: &Request) -> Option<String> {
    let peer = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>();
    client_ip(
        req.headers(),
        peer,
        &state.http().protection.trusted_proxies,
    )
    .map(|ip| ip.to_string())
}

async fn enforce(
    state: &AppState,
    policy: &Policy,
    key: &str,
    req: Request,
    next: Next,
) -> Response {
    match spend(state, policy, key).await {
        Ok(d) => {
            let mut response = next.run(req).await;
            insert_fields(response.headers_mut(), &[(policy, &d)]);
            response
        }
        Err(over) => over,
    }
}

/// One unit of `key`'s quota: the decision when allowed, else the `429` to send.
async fn spend(state: &AppState, policy: &Policy, key: &str) -> Result<Decision, Response> {
    match state.limiter().check(policy, key, 1).await {
        Ok(d) if d.allowed => Ok(d),
        Ok(d) => Err(refusal(&[(policy, &d)])),
        // One unit always fits a valid policy; an error here is a bug, not the client's.
        Err(e) => Err(ApiError::internal(e).into_response()),
    }
}
