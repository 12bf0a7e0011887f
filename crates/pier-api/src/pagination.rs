//! Cursor pagination for every list: `?limit=` (1–100, default 20) and an opaque `?cursor=`.
//! Responses are `{"data", "has_more", "next_cursor"}` plus `Link: <…>; rel="next"`.
//!
//! Stores page by keyset over a unique sort key and fetch `limit + 1` rows, so `has_more` costs
//! no count. The cursor carries the last row's key, signed and bound to the list, workspace and
//! filters (see [`pier_core::cursor`]).

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use pier_core::{CursorCodec, CursorError, ValidationErrors};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

pub const DEFAULT_LIMIT: u32 = 20;
pub const LIMIT_RANGE: std::ops::RangeInclusive<u32> = 1..=100;

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    /// Pass as `?cursor=` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    #[serde(skip)]
    next_link: Option<String>,
}

impl<T> Page<T> {
    /// The same page with each row converted, e.g. into its API view.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            data: self.data.into_iter().map(f).collect(),
            has_more: self.has_more,
            next_cursor: self.next_cursor,
            next_link: self.next_link,
        }
    }
}

impl<T: Serialize> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        let link = self
            .next_link
            .as_ref()
            .map(|l| format!("<{l}>; rel=\"next\""));
        let mut response = Json(self).into_response();
        if let Some(value) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
            response.headers_mut().insert(header::LINK, value);
        }
        response
    }
}

/// The pagination query parameters, as the OpenAPI document shows them; [`Pagination`] reads
/// them from the query string.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    // Each is described by its schema function (see `openapi::describe_from_schema`).
    #[param(schema_with = limit_schema)]
    limit: Option<u32>,
    #[param(schema_with = cursor_schema)]
    cursor: Option<String>,
}

fn limit_schema() -> utoipa::openapi::Object {
    pier_core::schema::integer(&LIMIT_RANGE)
        .default(Some(DEFAULT_LIMIT.into()))
        .description(Some("Page size (default 20)."))
        .build()
}

fn cursor_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some("^[A-Za-z0-9_-]+$"))
        .description(Some(
            "The `next_cursor` of the previous page: URL-safe base64, signed and bound to the \
             list and its filters (anything else is `400 invalid_cursor` or `cursor_mismatch`).",
        ))
        .build()
}

/// The `limit` and `cursor` of a list request (other query parameters are the list's filters).
#[derive(Debug, Clone)]
pub struct Pagination {
    pub limit: u32,
    cursor: Option<String>,
    uri: Uri,
}

impl<S: Send + Sync> FromRequestParts<S> for Pagination {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let mut limit = DEFAULT_LIMIT;
        let mut cursor = None;
        let query = parts.uri.query().unwrap_or_default();
        for (name, value) in url_pairs(query) {
            match name.as_str() {
                "limit" => {
                    let mut errors = ValidationErrors::new();
                    let parsed = value.parse().unwrap_or(0);
                    limit = errors
                        .check_range("limit", parsed, &LIMIT_RANGE)
                        .ok_or_else(|| ApiError::validation(errors))?;
                }
                "cursor" => cursor = Some(value),
                _ => {}
            }
        }
        Ok(Self {
            limit,
            cursor,
            uri: parts.uri.clone(),
        })
    }
}

impl Pagination {
    /// How many rows to ask the store for: one more than the page, to learn `has_more`.
    pub fn fetch_limit(&self) -> u32 {
        self.limit + 1
    }

    /// The position after which this page starts, if a cursor was sent.
    pub fn position<P: DeserializeOwned>(
        &self,
        codec: &CursorCodec,
        scope: &CursorScope,
    ) -> Result<Option<P>, ApiError> {
        let Some(cursor) = &self.cursor else {
            return Ok(None);
        };
        codec
            .decode(&scope.encoded(), cursor)
            .map(Some)
            .map_err(|err| {
                let code = match err {
                    CursorError::Invalid => "invalid_cursor",
                    CursorError::WrongScope => "cursor_mismatch",
                };
                ApiError::bad_request(code, err.to_string())
            })
    }

    /// Builds the page from up to `fetch_limit()` rows; `key` gives a row's sort key.
    pub fn page<T, P: Serialize>(
        &self,
        codec: &CursorCodec,
        scope: &CursorScope,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> P,
    ) -> Page<T> {
        let has_more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        let next_cursor = has_more
            .then(|| rows.last().map(|r| codec.encode(&scope.encoded(), &key(r))))
            .flatten();
        let next_link = next_cursor.as_deref().map(|c| self.link_with_cursor(c));
        Page {
            data: rows,
            has_more,
            next_cursor,
            next_link,
        }
    }

    fn link_with_cursor(&self, cursor: &str) -> String {
        let mut query: Vec<String> = self
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("cursor=") && !p.starts_with("limit="))
            .map(str::to_owned)
            .collect();
        query.push(format!("limit={}", self.limit));
        query.push(format!("cursor={cursor}"));
        format!("{}?{}", self.uri.path(), query.join("&"))
    }
}

/// Decodes `a=1&b=x%20y` into pairs (cursors are URL-safe base64, but filters may be escaped).
pub(crate) fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
}

/// What a cursor is bound to: one list, one workspace and one set of filters. Encoded as a JSON
/// array, so no filter value can pass for another (`queue=a|state=` cannot collide).
#[derive(Debug, Clone)]
pub struct CursorScope(Vec<serde_json::Value>);

impl CursorScope {
    pub fn new(list: &str, workspace: &pier_core::WorkspaceId) -> Self {
        Self(vec![list.into(), workspace.as_str().into()])
    }

    #[must_use]
    pub fn filter(mut self, name: &str, value: Option<&str>) -> Self {
        self.0.push(serde_json::json!([name, value]));
        self
    }

    fn encoded(&self) -> String {
        serde_json::Value::Array(self.0.clone()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_pairs() {
        let pairs: Vec<_> = url_pairs("a=1&b=x%20y+z&c&d=%zz").collect();
        assert_eq!(
            pairs,
            [("a", "1"), ("b", "x y z"), ("c", ""), ("d", "%zz")]
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }

    #[test]
    fn scopes_are_unambiguous() {
        let ws = pier_core::WorkspaceId::new(pier_core::Timestamp::from_micros(0));
        let a = CursorScope::new("jobs", &ws)
            .filter("queue", Some("a|state="))
            .filter("state", None);
        let b = CursorScope::new("jobs", &ws)
            .filter("queue", Some("a"))
            .filter("state", Some(""));
        assert_ne!(a.encoded(), b.encoded());
    }
}
