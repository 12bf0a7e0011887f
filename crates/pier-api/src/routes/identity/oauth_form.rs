//! What the OAuth endpoints share: `application/x-www-form-urlencoded` parameters (RFC 6749
//! §3.2: each at most once) and RFC 6749 error responses.
//!
//! The token, revocation and introspection endpoints answer errors the way RFC 6749 §5.2 says,
//! `{"error": "invalid_grant", "error_description": "…"}` as `application/json`, since OAuth
//! client libraries read exactly that; it is the one place Pier's API does not answer problem
//! documents.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::middleware::OwnBody;

/// The largest form accepted, in bytes.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// An RFC 6749 error.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "invalid_grant",
    "error_description": "the refresh token is unknown, expired, used or revoked"}))]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type` or `invalid_scope`.
    pub error: &'static str,
    pub error_description: String,
    #[serde(skip)]
    status: u16,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            error,
            error_description: description.into(),
            status: status.as_u16(),
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }
}

impl From<sqlx::Error> for OAuthError {
    fn from(err: sqlx::Error) -> Self {
        tracing::error!(error = %err, "OAuth request failed");
        Self::new("server_error", "the server could not handle the request")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let challenge = (status == StatusCode::UNAUTHORIZED).then_some((
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"pier\""),
        ));
        let mut response = (status, no_store(), Json(self)).into_response();
        if let Some((name, value)) = challenge {
            response.headers_mut().insert(name, value);
        }
        response.extensions_mut().insert(OwnBody);
        response
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache`: token responses must not be cached
/// (RFC 6749 §5.1).
pub fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// A form's parameters.
#[derive(Debug, Default)]
pub struct Form(HashMap<String, String>);

impl Form {
    /// Reads a form body: the content type must say so, and no parameter may repeat.
    pub fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Self, OAuthError> {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(OAuthError::invalid_request(
                "send the parameters as application/x-www-form-urlencoded",
            ));
        }
        Self::from_pairs(body)
    }

    /// Parameters in `text` (a query string or a form body).
    pub fn from_pairs(text: &[u8]) -> Result<Self, OAuthError> {
        if text.len() > MAX_FORM_BYTES {
            return Err(OAuthError::invalid_request("the parameters are too long"));
        }
        let mut map = HashMap::new();
        for (name, value) in form_urlencoded::parse(text) {
            if map.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "the `{}` parameter is given more than once",
                    pier_core::id::Truncated(&name)
                )));
            }
        }
        Ok(Self(map))
    }

    /// A parameter; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("`{name}` is required")))
    }
}
