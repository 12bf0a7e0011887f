//! The slug quarantine over HTTP: a slug a link gives up (deleted or renamed away from) stays
//! its workspace's for `links.slug_quarantine_secs`; another workspace finds it taken, with the
//! same answer as a slug a link holds, until the time has passed.

use std::sync::Arc;
use std::time::Duration;

use pier_auth::{WorkspaceName, WorkspaceStore};
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::support::{Backend, Options, TestApp, on_both_backends, problem};

on_both_backends!(
    deleted_slugs_stay_with_their_workspace_for_the_quarantine,
    renamed_and_imported_slugs_are_held_too,
    a_quarantine_of_zero_frees_slugs_at_once,
);

const HOUR: u64 = 3600;

async fn spawn(backend: Backend, quarantine_secs: u64) -> (TestApp, String) {
    let options = Options {
        settings: vec![("links.slug_quarantine_secs", quarantine_secs.to_string())],
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let store = WorkspaceStore::new(app.db.clone(), Arc::new(app.clock.clone()));
    let (_, _, other) = store
        .create_with_owner_key(WorkspaceName::parse("other").expect("name"))
        .await
        .expect("workspace");
    let other = other.expose().to_owned();
    (app, other)
}

async fn create_as(app: &TestApp, key: &str, slug: &str) -> Response {
    app.request_as(key, Method::POST, "/v1/links")
        .json(&json!({"url": "https://example.com/", "slug": slug}))
        .send()
        .await
        .expect("sent")
}

/// Renames the link at `path` to `slug`.
async fn rename_as(app: &TestApp, key: &str, path: &str, slug: &str) -> Response {
    app.request_as(key, Method::PATCH, path)
        .json(&json!({"slug": slug}))
        .send()
        .await
        .expect("sent")
}

async fn created(response: Response) -> Value {
    assert_eq!(response.status(), 201);
    response.json().await.expect("json")
}

async fn delete_as(app: &TestApp, key: &str, link: &Value) {
    let path = format!("/v1/links/{}", link["id"].as_str().expect("id"));
    let response = app.call_as(key, Method::DELETE, &path).await;
    assert_eq!(response.status(), 204);
}

/// The problem another workspace gets for `slug`, checked to be a plain `slug_taken`.
async fn taken(response: Response, slug: &str) -> Value {
    let body = problem(response, 409, "slug_taken").await;
    assert_eq!(body["detail"], format!("the slug `{slug}` is taken"));
    body
}

async fn deleted_slugs_stay_with_their_workspace_for_the_quarantine(backend: Backend) {
    let (app, other) = spawn(backend, HOUR).await;
    let ours = app.owner_key.clone();
    // The answer for a slug a live link holds, to compare with.
    let live = created(create_as(&app, &ours, "spring").await).await;
    let held_live = taken(create_as(&app, &other, "spring").await, "spring").await;
    delete_as(&app, &ours, &live).await;

    // Deleted: another workspace is told it is taken, in the same words.
    let held = taken(create_as(&app, &other, "spring").await, "spring").await;
    for field in ["type", "title", "status", "code", "detail"] {
        assert_eq!(held[field], held_live[field], "{field}");
    }
    // The workspace that held it takes it again at once, and gives it up again.
    let again = created(create_as(&app, &ours, "spring").await).await;
    delete_as(&app, &ours, &again).await;

    // Up to the end of the quarantine, then free for anyone.
    app.clock.advance(Duration::from_secs(HOUR - 1));
    taken(create_as(&app, &other, "spring").await, "spring").await;
    app.clock.advance(Duration::from_secs(1));
    let theirs = created(create_as(&app, &other, "spring").await).await;
    assert_eq!(theirs["slug"], "spring");
}

async fn renamed_and_imported_slugs_are_held_too(backend: Backend) {
    let (app, other) = spawn(backend, HOUR).await;
    let ours = app.owner_key.clone();
    let link = created(create_as(&app, &ours, "summer").await).await;
    let path = format!("/v1/links/{}", link["id"].as_str().expect("id"));
    assert_eq!(rename_as(&app, &ours, &path, "autumn").await.status(), 200);

    // The old slug is held: another workspace can neither create it nor rename to it.
    taken(create_as(&app, &other, "summer").await, "summer").await;
    let theirs = created(create_as(&app, &other, "winter").await).await;
    let their_path = format!("/v1/links/{}", theirs["id"].as_str().expect("id"));
    taken(
        rename_as(&app, &other, &their_path, "summer").await,
        "summer",
    )
    .await;
    // Nor import it: the row is reported taken, the others are created.
    let import = app
        .request_as(&other, Method::POST, "/v1/links/import")
        .header("content-type", "application/x-ndjson")
        .body(
            "{\"url\": \"https://example.com/\", \"slug\": \"summer\"}\n\
             {\"url\": \"https://example.com/\", \"slug\": \"spring\"}\n",
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(import.status(), 200);
    let report: Value = import.json().await.expect("json");
    assert_eq!(report["created"], 1, "{report}");
    assert_eq!(report["failed"], 1, "{report}");
    assert_eq!(report["rows"][0]["status"], "failed", "{report}");
    assert_eq!(report["rows"][0]["errors"][0]["code"], "taken", "{report}");
    // Its workspace renames back to it at once.
    assert_eq!(rename_as(&app, &ours, &path, "summer").await.status(), 200);
}

async fn a_quarantine_of_zero_frees_slugs_at_once(backend: Backend) {
    let (app, other) = spawn(backend, 0).await;
    let ours = app.owner_key.clone();
    let link = created(create_as(&app, &ours, "spring").await).await;
    delete_as(&app, &ours, &link).await;
    created(create_as(&app, &other, "spring").await).await;
}
