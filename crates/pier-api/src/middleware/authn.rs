//! Authentication of every `/v1` resource route. The [`Principal`](pier_auth::Principal) it finds
//! goes into the request's extensions for the `Authed<P>` extractor and for idempotency.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pier_auth::AuthError;

use crate::AppState;
use crate::problem::ApiError;

pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = match req.headers().get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(_)) => {
            let refused = ApiError::from(AuthError::Malformed).into_response();
            return super::after_refused_credentials(&state, super::ip_key(&state, &req), refused)
                .await;
        }
    };
    match state.authenticator().authenticate(header).await {
        Ok(principal) => {
            tracing::Span::current().record("workspace_id", principal.workspace_id().as_str());
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(AuthError::Database(e)) => ApiError::from(e).into_response(),
        Err(err) => {
            let client = super::ip_key(&state, &req);
            super::after_refused_credentials(&state, client, ApiError::from(err).into_response())
                .await
        }
    }
}
