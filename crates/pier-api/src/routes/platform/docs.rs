//! The OpenAPI document and a human-readable rendering of it.
//!
//! `/docs` is a small HTML page whose script and stylesheet are embedded in the binary and
//! served from it, so the reference works offline and on air-gapped machines: the browser loads
//! nothing from elsewhere (the page's `Content-Security-Policy` forbids it). The script fetches
//! `/v1/openapi.json` and renders it.
//!
//! The assets are named after a hash of their content (`/docs/assets/docs.<hash>.js`), so a new
//! build with changed assets serves them under new names. That makes it safe to let browsers and
//! proxies keep them for a year without asking again; the page itself, which names the current
//! assets, is revalidated on every load. A stale or unknown name matches no route and is a 404.

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::AppState;

const DOCS_JS: &str = include_str!("../../../assets/docs/docs.js");
const DOCS_CSS: &str = include_str!("../../../assets/docs/docs.css");

/// The page loads only its own script, stylesheet and the document; nothing inline.
const PAGE_POLICY: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
);
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
/// Safe because the names change with the content.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const NO_REFERRER: HeaderValue = HeaderValue::from_static("no-referrer");
const JAVASCRIPT: HeaderValue = HeaderValue::from_static("text/javascript; charset=utf-8");
const CSS: HeaderValue = HeaderValue::from_static("text/css; charset=utf-8");

/// The page, with `{css}` and `{js}` standing for the assets' hashed paths. The empty `data:`
/// icon keeps browsers from asking for `/favicon.ico`.
const PAGE_TEMPLATE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Pier API reference</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{css}">
  <script src="{js}" defer></script>
</head>
<body>
  <noscript><p class="noscript">This page needs JavaScript to render the reference. The OpenAPI document itself is at <a href="/v1/openapi.json">/v1/openapi.json</a>.</p></noscript>
  <div id="docs" class="layout"><p class="loading">Loading the API reference…</p></div>
</body>
</html>
"#;

/// The asset paths and the page naming them, built once per process.
struct Docs {
    js_path: String,
    css_path: String,
    page: String,
}

static DOCS: LazyLock<Docs> = LazyLock::new(|| {
    let js_path = format!("/docs/assets/docs.{}.js", short_hash(DOCS_JS));
    let css_path = format!("/docs/assets/docs.{}.css", short_hash(DOCS_CSS));
    let page = PAGE_TEMPLATE
        .replace("{css}", &css_path)
        .replace("{js}", &js_path);
    Docs {
        js_path,
        css_path,
        page,
    }
});

/// The first 12 hex digits of the SHA-256 of `content`: plenty to tell versions apart.
fn short_hash(content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    hex::encode(&digest[..6])
}

pub fn router(spec: utoipa::openapi::OpenApi) -> Router<AppState> {
    let json: Arc<str> = spec.to_pretty_json().unwrap_or_default().into();
    let docs = &*DOCS;
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
        .route("/docs", get(page))
        .route(&docs.js_path, get(|| async { asset(JAVASCRIPT, DOCS_JS) }))
        .route(&docs.css_path, get(|| async { asset(CSS, DOCS_CSS) }))
}

async fn page() -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 4] = [
        (header::CACHE_CONTROL, NO_CACHE),
        (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, NOSNIFF),
        (header::REFERRER_POLICY, NO_REFERRER),
    ];
    (headers, Html(DOCS.page.as_str()))
}

fn asset(content_type: HeaderValue, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 3] = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, IMMUTABLE),
        (header::X_CONTENT_TYPE_OPTIONS, NOSNIFF),
    ];
    (headers, body)
}
