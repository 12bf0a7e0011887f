//! The limit on redirects to unknown slugs, per client address: a scanner making slugs up is
//! refused after its quota, without database lookups; slugs in the cache keep redirecting for
//! everyone, and other addresses are unaffected.

use std::time::Duration;

use reqwest::Response;
use serde_json::json;

use crate::support::{Backend, Options, TestApp, on_both_backends, problem};

on_both_backends!(unknown_slugs_are_limited_per_client_address);

/// Five misses at once, then one every 12 seconds.
const POLICY: &str = "gcra 5/60s burst=5 local";

/// `GET /{slug}` through the trusted proxy on 127.0.0.1, from `address`.
async fn visit(app: &TestApp, address: &str, slug: &str, accept: &str) -> Response {
    app.client
        .get(app.url(&format!("/{slug}")))
        .header("x-forwarded-for", address)
        .header("accept", accept)
        .send()
        .await
        .expect("sent")
}

async fn unknown_slugs_are_limited_per_client_address(backend: Backend) {
    let options = Options {
        settings: vec![
            ("rate_limits.trusted_proxies", "127.0.0.1".to_owned()),
            ("links.redirect_misses", POLICY.to_owned()),
        ],
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    for slug in ["known", "cold"] {
        let body = json!({"url": format!("https://example.com/{slug}"), "slug": slug});
        assert_eq!(app.post_json("/v1/links", &body).await.status(), 201);
    }
    let (scanner, neighbour) = ("198.51.100.7", "2001:db8:1:2::7");
    let json = "application/json";
    // Someone visits `known`: it is in the node's cache now.
    assert_eq!(visit(&app, neighbour, "known", json).await.status(), 302);

    for n in 0..5 {
        let missed = visit(&app, scanner, &format!("nope{n}"), json).await;
        assert_eq!(missed.status(), 404, "miss {n}");
    }
    let refused = visit(&app, scanner, "nope5", json).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "12");
    let body = problem(refused, 429, "quota_exceeded").await;
    assert_eq!(
        body["violated-policies"],
        json!(["redirect-misses"]),
        "{body}"
    );
    // A browser gets a page, with the same wait.
    let page = visit(&app, scanner, "nope6", "text/html").await;
    assert_eq!(page.status(), 429);
    assert_eq!(page.headers()["retry-after"], "12");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );

    // The cached slug still redirects the scanner; one the node has not looked up waits for
    // the quota, like any lookup from there.
    assert_eq!(visit(&app, scanner, "known", json).await.status(), 302);
    assert_eq!(visit(&app, scanner, "cold", json).await.status(), 429);
    // Other addresses are unaffected.
    assert_eq!(visit(&app, neighbour, "nope7", json).await.status(), 404);
    assert_eq!(
        visit(&app, "203.0.113.66", "nope8", json).await.status(),
        404
    );

    // Twelve seconds give the scanner one lookup back.
    app.clock.advance(Duration::from_secs(12));
    assert_eq!(visit(&app, scanner, "cold", json).await.status(), 302);
    assert_eq!(visit(&app, scanner, "nope9", json).await.status(), 404);
    assert_eq!(visit(&app, scanner, "nope10", json).await.status(), 429);
}
