//! Query strings: a parameter of the wrong type is a `422` naming the parameter.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use pier_core::ValidationErrors;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|rejection| {
                let message = rejection.body_text();
                let message = message
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&message);
                ApiError::validation(ValidationErrors::single("query", "invalid", message))
            })
    }
}
