//! The error policy of the HTTP layer.
//!
//! Every failure leaves the API as an RFC 9457 problem (`application/problem+json`) with `type`,
//! `title`, `status`, `detail`, a stable `code`, the `request_id`, and for validation failures an
//! `errors` list. Handlers return [`ApiError`]; it puts a [`Problem`] into the response's
//! extensions and the edge middleware renders it, adding the request id and logging the cause of
//! any `5xx` once, with its whole chain. A `500` never shows its cause to the client. Responses
//! produced by the framework itself (unknown route, wrong method, body limit) are turned into
//! problems by the same middleware, keeping their headers such as `Allow`.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_core::{FieldError, ValidationErrors};
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";
/// The problem type of a `429` (draft-ietf-httpapi-ratelimit-headers, "Quota Exceeded").
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// The body of every error response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:pier:problem:<code>`, or a registered type
    /// (`https://iana.org/assignments/http-problem-types#quota-exceeded` for `429`).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// The HTTP reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong in this occurrence, for humans.
    pub detail: String,
    /// Stable and machine-readable, e.g. `validation_failed`, `not_found`.
    pub code: String,
    /// The `X-Request-Id` of the request; quote it when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For `429`s: the names of the rate-limit policies the request exceeded.
    #[serde(rename = "violated-policies", skip_serializing_if = "Vec::is_empty")]
    pub violated_policies: Vec<String>,
    #[serde(skip)]
    #[schema(ignore)]
    pub(crate) cause: Option<Arc<anyhow::Error>>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:pier:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            request_id: None,
            errors: Vec::new(),
            violated_policies: Vec::new(),
            cause: None,
        }
    }

    /// The problem for a bare error status produced outside our handlers.
    pub(crate) fn for_status(status: StatusCode) -> Self {
        let (code, detail) = match status {
            StatusCode::NOT_FOUND => ("not_found", "no resource lives at this path"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "this path does not support the method; see `Allow`",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
            StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long"),
            s if s.is_server_error() => {
                ("internal_error", "the server failed to handle the request")
            }
            _ => ("http_error", "the request could not be handled"),
        };
        Self::new(status, code, detail)
    }

    pub(crate) fn render(&self, headers: &mut HeaderMap) -> Vec<u8> {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.remove(header::CONTENT_LENGTH);
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// An error a handler returns; see the module docs for how it becomes a response. Boxed, so
/// `Result<T, ApiError>` stays small on the happy path.
#[derive(Debug)]
pub struct ApiError(Box<ErrorParts>);

#[derive(Debug)]
struct ErrorParts {
    problem: Problem,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self(Box::new(ErrorParts {
            problem: Problem::new(status, code, detail),
            headers: Vec::new(),
        }))
    }

    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn code(&self) -> &str {
        &self.0.problem.code
    }

    pub fn detail(&self) -> &str {
        &self.0.problem.detail
    }

    /// `404` for a resource that does not exist *or belongs to another workspace*.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn validation(errors: ValidationErrors) -> Self {
        let detail = match errors.first_message() {
            Some(_) => format!("the request is invalid: {errors}"),
            None => "the request is invalid".to_owned(),
        };
        let mut err = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            detail,
        );
        err.0.problem.errors = errors.into_vec();
        err
    }

    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "the resource changed: its ETag no longer matches If-Match; fetch it again",
        )
    }

    /// `429` with the problem type of the IETF rate-limit headers draft, naming the policies
    /// the request exceeded. The caller adds `Retry-After` and the `RateLimit` fields.
    pub fn quota_exceeded(violated: Vec<String>) -> Self {
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!(
                "the request exceeds the rate limit of {}; retry after the `Retry-After` seconds",
                violated.join(", ")
            ),
        );
        err.0.problem.type_uri = QUOTA_EXCEEDED.to_owned();
        err.0.problem.violated_policies = violated;
        err
    }

    /// A failure whose cause is logged but never shown.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let mut err = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to handle the request; quote the request id when reporting it",
        );
        err.0.problem.cause = Some(Arc::new(cause.into()));
        err
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::internal(anyhow::Error::new(err).context("database error"))
    }
}

impl From<pier_core::Busy> for ApiError {
    /// Too many password hashes on this node: a moment later there is room.
    fn from(busy: pier_core::Busy) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            busy.to_string(),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status().into_response();
        let ErrorParts { problem, headers } = *self.0;
        response.headers_mut().extend(headers);
        response.extensions_mut().insert(problem);
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
