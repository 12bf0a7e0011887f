//! HTTP conventions for clients far away and in browsers: responses compressed as
//! `Accept-Encoding` asks (but not small ones, and never the redirect), and CORS for the
//! configured origins only, with preflights answered before authentication.

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;

use crate::support::{Backend, Options, TestApp, on_both_backends};

on_both_backends!(
    responses_are_compressed_as_the_client_asks,
    cors_answers_allowed_origins_only,
    cors_is_off_by_default
);

const APP: &str = "https://app.example";

fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .unwrap_or_default()
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

async fn responses_are_compressed_as_the_client_asks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let document = |encoding: Option<&'static str>| {
        let mut request = app.client.get(app.url("/v1/openapi.json"));
        if let Some(encoding) = encoding {
            request = request.header("accept-encoding", encoding);
        }
        request.send()
    };
    let plain = document(None).await.expect("document");
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("content-encoding").is_none());
    assert!(has_token(plain.headers(), "vary", "accept-encoding"));
    let plain_len = plain.bytes().await.expect("body").len();
    assert!(plain_len > 100_000, "{plain_len}");
    for encoding in ["gzip", "br", "zstd"] {
        let compressed = document(Some(encoding)).await.expect("document");
        assert_eq!(compressed.status(), 200);
        let headers = compressed.headers().clone();
        assert_eq!(headers["content-encoding"], encoding);
        assert!(has_token(&headers, "vary", "accept-encoding"));
        let len = compressed.bytes().await.expect("body").len();
        assert!(len * 5 < plain_len, "{encoding}: {len} of {plain_len}");
    }
    // A preference among several: one of them, never an unlisted one.
    let chosen = document(Some("gzip;q=0.5, zstd")).await.expect("document");
    assert_eq!(chosen.headers()["content-encoding"], "zstd");

    // A small response stays as it is.
    let small = app
        .client
        .get(app.url("/v1/workspace"))
        .bearer_auth(&app.owner_key)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("workspace");
    assert_eq!(small.status(), 200);
    assert!(small.headers().get("content-encoding").is_none());

    // The redirect, never.
    let (status, link) = app
        .post_value("/v1/links", &json!({"url": "https://example.com/a"}))
        .await;
    assert_eq!(status, 201, "{link}");
    let slug = link["slug"].as_str().expect("slug");
    for method in [Method::GET, Method::HEAD] {
        let followed = app
            .client
            .request(method, app.url(&format!("/{slug}")))
            .header("accept-encoding", "gzip, br, zstd")
            .send()
            .await
            .expect("follow");
        assert_eq!(followed.status(), 302);
        assert!(followed.headers().get("content-encoding").is_none());
        assert!(!has_token(followed.headers(), "vary", "accept-encoding"));
    }
}

async fn cors_app(backend: Backend) -> TestApp {
    let options = Options {
        settings: vec![(
            "cors_allowed_origins",
            format!("{APP}, http://localhost:5173"),
        )],
        ..Options::default()
    };
    TestApp::spawn_with(backend, options).await
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, app.url("/v1/links"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, idempotency-key",
        )
        .send()
        .await
        .expect("preflight")
}

async fn cors_answers_allowed_origins_only(backend: Backend) {
    let app = cors_app(backend).await;
    // A preflight carries no credentials: it is answered before authentication.
    let allowed = preflight(&app, APP).await;
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], APP);
    assert!(has_token(headers, "access-control-allow-methods", "POST"));
    assert!(has_token(headers, "access-control-allow-methods", "DELETE"));
    for header in ["authorization", "content-type", "idempotency-key"] {
        assert!(
            has_token(headers, "access-control-allow-headers", header),
            "{header}"
        );
    }
    assert_eq!(headers["access-control-max-age"], "600");
    assert!(headers.get("access-control-allow-credentials").is_none());

    let other = preflight(&app, "https://evil.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // The actual requests: the allowed origin is named, never a wildcard, never credentials.
    let call = |origin: &'static str| {
        app.client
            .get(app.url("/v1/workspace"))
            .bearer_auth(&app.owner_key)
            .header("origin", HeaderValue::from_static(origin))
            .send()
    };
    let response = call(APP).await.expect("call");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], APP);
    assert!(has_token(response.headers(), "vary", "origin"));
    assert!(
        response
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    assert!(has_token(
        response.headers(),
        "access-control-expose-headers",
        "x-request-id"
    ));
    let response = call("https://evil.example").await.expect("call");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // Authentication still applies to the actual request.
    let anonymous = app
        .client
        .get(app.url("/v1/workspace"))
        .header("origin", APP)
        .send()
        .await
        .expect("call");
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["access-control-allow-origin"], APP);
}

async fn cors_is_off_by_default(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = preflight(&app, APP).await;
    assert_ne!(response.status(), 204);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let call = app
        .client
        .get(app.url("/v1/workspace"))
        .bearer_auth(&app.owner_key)
        .header("origin", APP)
        .send()
        .await
        .expect("call");
    assert!(call.headers().get("access-control-allow-origin").is_none());
}
