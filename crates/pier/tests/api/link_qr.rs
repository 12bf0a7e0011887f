//! QR codes of short links: SVG and PNG at the size asked for, the size's bounds, and another
//! workspace's link.

use std::sync::Arc;

use pier_auth::{WorkspaceName, WorkspaceStore};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, on_both_backends, problem};

on_both_backends!(
    qr_codes_come_as_svg_or_png_of_the_asked_size,
    qr_sizes_are_bounded_and_other_workspaces_links_are_404,
);

async fn link_qr_path(app: &TestApp, slug: &str) -> String {
    let response = app
        .post_json(
            "/v1/links",
            &json!({"url": "https://example.com/", "slug": slug}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let link: Value = response.json().await.expect("json");
    format!("/v1/links/{}/qr", link["id"].as_str().expect("id"))
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response.headers()[name].to_str().expect("ascii")
}

/// The width and height of a PNG, from its header chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    let number = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    (number(16), number(20))
}

async fn qr_codes_come_as_svg_or_png_of_the_asked_size(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let path = link_qr_path(&app, "qr-me").await;

    let svg = app.get(&path).await;
    assert_eq!(svg.status(), 200);
    assert_eq!(header(&svg, "content-type"), "image/svg+xml");
    assert_eq!(header(&svg, "cache-control"), "private, max-age=300");
    let svg = svg.text().await.expect("body");
    assert!(svg.starts_with("<svg") && svg.contains("width=\"256\" height=\"256\""));

    for size in [64, 300, 2048] {
        let png = app.get(&format!("{path}?format=png&size={size}")).await;
        assert_eq!(png.status(), 200);
        assert_eq!(header(&png, "content-type"), "image/png");
        assert_eq!(header(&png, "cache-control"), "private, max-age=300");
        let png = png.bytes().await.expect("body");
        assert_eq!(png_size(&png), (size, size));
        assert_eq!(png[24..26], [1, 0], "1-bit grayscale");
    }
    let large = app.get(&format!("{path}?format=svg&size=2048")).await;
    assert!(large.text().await.expect("body").contains("width=\"2048\""));

    // Another link, another code.
    let other = link_qr_path(&app, "qr-you").await;
    let other = app.get(&other).await.text().await.expect("body");
    assert_ne!(other, svg);
}

async fn qr_sizes_are_bounded_and_other_workspaces_links_are_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let path = link_qr_path(&app, "bounded").await;
    for size in ["63", "2049", "0"] {
        let response = app.get(&format!("{path}?size={size}")).await;
        let shown = problem(response, 422, "validation_failed").await;
        assert_eq!(shown["errors"][0]["field"], "size");
        assert_eq!(shown["errors"][0]["code"], "out_of_range");
    }
    for query in ["?size=-1", "?size=big", "?format=gif"] {
        let response = app.get(&format!("{path}{query}")).await;
        problem(response, 422, "validation_failed").await;
    }

    problem(app.get("/v1/links/link_nope/qr").await, 404, "not_found").await;
    let store = WorkspaceStore::new(app.db.clone(), Arc::new(app.clock.clone()));
    let (_, _, other_secret) = store
        .create_with_owner_key(WorkspaceName::parse("other").expect("name"))
        .await
        .expect("workspace");
    let response = app.call_as(other_secret.expose(), Method::GET, &path).await;
    problem(response, 404, "not_found").await;
    // A viewer reads links, so it may draw them.
    let (_, viewer) = app.create_key("viewer", None).await;
    assert_eq!(app.call_as(&viewer, Method::GET, &path).await.status(), 200);
}
