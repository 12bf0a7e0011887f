//! The OpenAPI document and a human-readable rendering of it.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

use crate::AppState;

pub fn router(spec: utoipa::openapi::OpenApi) -> Router<AppState> {
    let json: Arc<str> = spec.to_pretty_json().unwrap_or_default().into();
    Router::new()
        .route(
            "/v1/openapi.json",
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        json.to_string(),
                    )
                }
            }),
        )
        .route("/docs", get(|| async { Html(DOCS_PAGE).into_response() }))
}

/// Renders `/v1/openapi.json` with Redoc (loaded by the reader's browser; the server stays
/// dependency-free).
const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Pier API</title>
  <meta name="viewport" content="width=device-width, initial-scale=1">
</head>
<body>
  <redoc spec-url="/v1/openapi.json"></redoc>
  <script src="https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js"></script>
</body>
</html>
"#;
