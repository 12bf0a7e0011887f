//! JSON request bodies: `415` for another media type, `413` past the body limit, `400` for
//! malformed JSON and `422` (naming the field) for JSON of the wrong shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use pier_core::{ValidationErrors, validation};
use serde::de::DeserializeOwned;

use super::ObjectsOnly;
use crate::problem::ApiError;

/// A JSON body deserialized into `T`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// `application/json`, `application/merge-patch+json` and other `+json` types are accepted.
fn is_json(content_type: &str) -> bool {
    validation::is_json(&validation::media_type(content_type))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !content_type.is_some_and(is_json) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than the server accepts",
                )
            } else {
                ApiError::bad_request("unreadable_body", rejection.body_text())
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Deserializes, telling syntax errors (`400`) from shape errors (`422` with the field's path).
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(ObjectsOnly(&mut de)).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                // serde names a missing field only in its message; report it as the field.
                let missing = message
                    .strip_prefix("missing field `")
                    .and_then(|rest| rest.strip_suffix('`'));
                let (field, code) = match (missing, path.as_str()) {
                    (Some(name), ".") => (name.to_owned(), "required"),
                    (Some(name), parent) => (format!("{parent}.{name}"), "required"),
                    (None, ".") => ("body".to_owned(), "invalid"),
                    (None, _) => (path, "invalid"),
                };
                ApiError::validation(ValidationErrors::single(&field, code, message))
            }
            _ => malformed(&inner),
        }
    })?;
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

fn malformed(err: &serde_json::Error) -> ApiError {
    ApiError::bad_request(
        "malformed_json",
        format!("the body is not valid JSON: {err}"),
    )
}

/// serde_json appends "at line 1 column 42", which means nothing once the field is named.
fn strip_position(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: Option<u32>,
    }

    #[test]
    fn tells_syntax_from_shape() {
        assert_eq!(
            parse::<Body>(b"{\"name\": ")
                .map(drop)
                .expect_err("syntax error")
                .code(),
            "malformed_json"
        );
        let shape = parse::<Body>(b"{\"name\": \"x\", \"count\": -1}")
            .map(drop)
            .expect_err("shape error");
        assert_eq!(shape.code(), "validation_failed");
        assert!(parse::<Body>(b"{\"name\": \"x\"} trailing").is_err());
        let missing = parse::<Body>(b"{}").map(drop).expect_err("missing field");
        assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(parse::<Body>(b"{\"name\": \"x\"}").is_ok());
    }

    #[test]
    fn accepts_json_media_types() {
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
    }
}
