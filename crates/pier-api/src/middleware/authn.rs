//! Authentication of every `/v1` resource route: a bearer token (an API key), or else a session
//! cookie (see [`crate::session_cookie`] for the rules that keep other sites from using it). The
//! [`Principal`] it finds goes into the request's extensions for the `Authed<P>` extractor and
//! for idempotency; a session also goes there as a [`SignedInSession`].

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pier_auth::{AuthError, Principal, Session, SessionSecret};

use crate::AppState;
use crate::problem::ApiError;
use crate::session_cookie;

/// The session a request was authenticated with.
#[derive(Debug, Clone)]
pub struct SignedInSession {
    pub secret: SessionSecret,
    pub session: Session,
}

/// Routes a session whose password must still be changed may use: its own.
const FIRST_SIGN_IN_PATHS: &[&str] = &["/v1/auth/session", "/v1/auth/password", "/v1/auth/logout"];

pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let header = match req.headers().get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(_)) => return refused(&state, &req, AuthError::Malformed).await,
    };
    if header.is_none() && session_cookie::is_present(req.headers()) {
        return with_session(state, req, next).await;
    }
    match state.authenticator().authenticate(header).await {
        Ok(principal) => admit(req, principal, next).await,
        Err(AuthError::Database(e)) => ApiError::from(e).into_response(),
        Err(err) => refused(&state, &req, err).await,
    }
}

async fn with_session(state: AppState, mut req: Request, next: Next) -> Response {
    let Some(secret) = session_cookie::read(req.headers(), state.identity().cookie_secure()) else {
        return refused(&state, &req, AuthError::SessionEnded).await;
    };
    let session = match state.identity().sessions().authenticate(&secret).await {
        Ok(Some(session)) => session,
        Ok(None) => return refused(&state, &req, AuthError::SessionEnded).await,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Some(why) = session_cookie::forgery(req.method(), req.headers(), &secret) {
        return ApiError::forbidden(why).into_response();
    }
    if session.must_change_password && !FIRST_SIGN_IN_PATHS.contains(&req.uri().path()) {
        return ApiError::forbidden(
            "choose a new password first (POST /v1/auth/password): this account was given a \
             one-time password",
        )
        .into_response();
    }
    let principal = Principal::from(&session);
    req.extensions_mut()
        .insert(SignedInSession { secret, session });
    admit(req, principal, next).await
}

async fn admit(mut req: Request, principal: Principal, next: Next) -> Response {
    tracing::Span::current().record("workspace_id", principal.workspace_id().as_str());
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// A `401`, counted against the client's address. The request is only read before the first
/// await: a body is not `Sync`, so a borrow of it cannot be held across one.
fn refused(state: &AppState, req: &Request, err: AuthError) -> impl Future<Output = Response> {
    let client = super::ip_key(state, req);
    let state = state.clone();
    async move {
        super::after_refused_credentials(&state, client, ApiError::from(err).into_response()).await
    }
}
