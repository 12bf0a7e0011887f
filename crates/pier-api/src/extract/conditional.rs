//! Strong ETags and `If-Match`, for optimistic concurrency on single resources.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::problem::ApiError;

/// A strong entity tag: a hash of the resource's JSON representation, so it changes exactly
/// when what a client sees changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(String);

impl ETag {
    pub fn of<T: Serialize>(resource: &T) -> Self {
        Self::of_bytes(&serde_json::to_vec(resource).unwrap_or_default())
    }

    /// The tag of a representation already serialized.
    pub fn of_bytes(representation: &[u8]) -> Self {
        let digest = Sha256::digest(representation);
        Self(format!("\"{}\"", hex::encode(&digest[..16])))
    }

    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
    }
}

/// The `If-Match` header, if sent: `*` or a list of strong tags.
#[derive(Debug, Clone, Default)]
pub struct IfMatch(Option<Vec<String>>);

impl IfMatch {
    pub fn is_present(&self) -> bool {
        self.0.is_some()
    }

    /// `412` unless the header is absent, `*`, or lists `current`. Weak tags never match
    /// (RFC 9110 requires strong comparison for `If-Match`).
    pub fn check(&self, current: &ETag) -> Result<(), ApiError> {
        match &self.0 {
            None => Ok(()),
            Some(tags) if tags.iter().any(|t| t == "*" || *t == current.0) => Ok(()),
            Some(_) => Err(ApiError::precondition_failed()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let mut tags = Vec::new();
        let values = parts.headers.get_all(header::IF_MATCH);
        for value in values.iter() {
            let text = value
                .to_str()
                .map_err(|_| ApiError::bad_request("invalid_if_match", "If-Match must be ASCII"))?;
            tags.extend(
                text.split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty()),
            );
        }
        Ok(Self((!tags.is_empty()).then_some(tags)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_compares_strongly() {
        let tag = ETag::of(&serde_json::json!({"a": 1}));
        assert_ne!(tag, ETag::of(&serde_json::json!({"a": 2})));
        assert!(IfMatch(None).check(&tag).is_ok());
        assert!(IfMatch(Some(vec!["*".into()])).check(&tag).is_ok());
        assert!(
            IfMatch(Some(vec!["\"x\"".into(), tag.0.clone()]))
                .check(&tag)
                .is_ok()
        );
        assert!(
            IfMatch(Some(vec![format!("W/{}", tag.0)]))
                .check(&tag)
                .is_err()
        );
    }
}
