//! Response shapes the contract fixes for every resource.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `status` with a `Location` header naming the resource (`201 Created`, or `200` when a create
/// found an existing one) and `body`.
pub(crate) fn located(status: StatusCode, location: &str, body: impl IntoResponse) -> Response {
    let mut response = (status, body).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
