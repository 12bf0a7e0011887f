//! Identity over HTTP: API keys, password sign-in and sessions, invitations, OAuth 2 and
//! resource grants.

mod api_keys;
mod guesses;
mod invitations;
mod oauth_authorize;
mod oauth_clients;
mod oauth_form;
mod oauth_token;
mod permissions;
mod sessions;
mod state;
mod views;

pub use guesses::FailedLogins;
pub use state::{IdentityParts, IdentityState};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::http::{HeaderValue, StatusCode, header};
use pier_auth::{AuthError, SessionError};
use pier_core::ValidationErrors;

use super::Routes;
use crate::problem::ApiError;

pub(super) fn routes() -> Routes {
    let resources = OpenApiRouter::new()
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(api_keys::get, api_keys::revoke))
        .routes(routes!(oauth_clients::create, oauth_clients::list))
        .routes(routes!(oauth_clients::get, oauth_clients::delete))
        .routes(routes!(permissions::create, permissions::list))
        .routes(routes!(permissions::get, permissions::delete))
        .routes(routes!(permissions::check));
    let sessions = OpenApiRouter::new()
        .routes(routes!(sessions::session))
        .routes(routes!(sessions::logout))
        .routes(routes!(sessions::change_password));
    let public = OpenApiRouter::new()
        .routes(routes!(sessions::login))
        .routes(routes!(invitations::page, invitations::accept))
        .routes(routes!(oauth_token::token))
        .routes(routes!(oauth_token::revoke))
        .routes(routes!(oauth_token::introspect))
        .routes(routes!(oauth_authorize::authorize, oauth_authorize::decide));
    Routes {
        resources,
        sessions,
        public,
        ..Routes::new()
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Database(db) => db.into(),
            other => {
                let challenge = match other {
                    AuthError::Missing | AuthError::NotBearer => "Bearer",
                    _ => "Bearer error=\"invalid_token\"",
                };
                Self::new(StatusCode::UNAUTHORIZED, "unauthorized", other.to_string()).with_header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                )
            }
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::WrongCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "wrong_credentials",
                err.to_string(),
            ),
            SessionError::NotAMember => ApiError::forbidden(err.to_string()),
            SessionError::Invitation => {
                ApiError::new(StatusCode::GONE, "invitation_invalid", err.to_string())
            }
            SessionError::WeakPassword(message) => {
                ApiError::validation(ValidationErrors::single("new_password", "invalid", message))
            }
            SessionError::Hash(message) => ApiError::internal(anyhow::anyhow!(message)),
            SessionError::Busy(busy) => busy.into(),
            SessionError::Database(db) => db.into(),
        }
    }
}
