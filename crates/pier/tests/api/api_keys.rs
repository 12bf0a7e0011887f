//! API keys: lifecycle, expiry, roles and scopes, tenant isolation and conditional revocation.

use std::sync::Arc;
use std::time::Duration;

use pier_auth::{WorkspaceName, WorkspaceStore};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, on_both_backends, problem};

on_both_backends!(
    key_lifecycle,
    expired_keys_stop_working,
    roles_and_scopes_are_enforced,
    other_workspaces_are_invisible,
    if_match_guards_revocation,
);

/// The key at `path` as GET shows it once its use has been recorded: uses are written off the
/// request path, about a second later.
async fn once_used(app: &TestApp, path: &str) -> Value {
    for _ in 0..50 {
        let shown: Value = app.get(path).await.json().await.expect("json");
        if shown["last_used_at"].is_string() {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no use of {path} was recorded within 5 s");
}

async fn key_lifecycle(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post_json(
            "/v1/api-keys",
            &json!({"name": "deploy bot", "role": "member", "scopes": ["jobs:read"]}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(response.headers().contains_key("etag"));
    let created: Value = response.json().await.expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = created["key"].as_str().expect("key").to_owned();
    assert_eq!(location, format!("/v1/api-keys/{id}"));
    assert!(
        secret.starts_with("pier_")
            && created["prefix"]
                .as_str()
                .is_some_and(|p| secret.starts_with(p))
    );
    assert_eq!(created["scopes"], json!(["jobs:read"]));

    // The new key works, and reading it never shows the secret again.
    let me = app.call_as(&secret, Method::GET, "/v1/workspace").await;
    assert_eq!(
        me.status(),
        403,
        "jobs:read alone does not include workspace:read"
    );
    let shown = once_used(&app, &location).await;
    assert!(shown.get("key").is_none());

    let revoke = app.call(Method::DELETE, &location).await;
    assert_eq!(revoke.status(), 204);
    let after = app.call_as(&secret, Method::GET, "/v1/api-keys").await;
    let body = problem(after, 401, "unauthorized").await;
    assert!(body["detail"].as_str().expect("detail").contains("revoked"));
    let shown: Value = app.get(&location).await.json().await.expect("json");
    assert!(shown["revoked_at"].is_string());
    // Revoking again is harmless.
    assert_eq!(app.call(Method::DELETE, &location).await.status(), 204);

    // A well-formed key that was never issued.
    let unknown = pier_auth::KeySecret::generate();
    let response = app
        .call_as(unknown.expose(), Method::GET, "/v1/workspace")
        .await;
    problem(response, 401, "unauthorized").await;
}

async fn expired_keys_stop_working(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let expires = pier_core::Clock::now(&app.clock).saturating_add(Duration::from_secs(3600));
    let response = app
        .post_json(
            "/v1/api-keys",
            &json!({"name": "temp", "role": "viewer", "expires_at": expires.to_rfc3339()}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let secret = response.json::<Value>().await.expect("json")["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let ok = app.call_as(&secret, Method::GET, "/v1/workspace").await;
    assert_eq!(ok.status(), 200);

    app.clock.advance(Duration::from_secs(3601));
    let late = app.call_as(&secret, Method::GET, "/v1/workspace").await;
    let body = problem(late, 401, "unauthorized").await;
    assert!(body["detail"].as_str().expect("detail").contains("expired"));
}

async fn roles_and_scopes_are_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, viewer) = app.create_key("viewer", None).await;
    let (_, member) = app.create_key("member", None).await;
    let (_, admin) = app.create_key("admin", None).await;
    let (_, narrow_admin) = app
        .create_key("admin", Some(&["workspace:read", "api_keys:read"]))
        .await;

    let new_key = json!({"name": "x", "role": "viewer"});
    let post = |key: &str, body: &Value| {
        app.request_as(key, Method::POST, "/v1/api-keys")
            .json(body)
            .send()
    };

    // Viewers and members cannot manage keys at all.
    problem(
        post(&viewer, &new_key).await.expect("sent"),
        403,
        "forbidden",
    )
    .await;
    problem(
        app.call_as(&member, Method::GET, "/v1/api-keys").await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        app.call_as(&viewer, Method::GET, "/v1/workspace")
            .await
            .status(),
        200
    );

    // Admins cannot mint owners; they can mint admins and below.
    let owner = json!({"name": "x", "role": "owner"});
    let body = problem(post(&admin, &owner).await.expect("sent"), 403, "forbidden").await;
    assert!(body["detail"].as_str().expect("detail").contains("owner"));
    assert_eq!(
        post(&admin, &json!({"name": "x", "role": "admin"}))
            .await
            .expect("sent")
            .status(),
        201
    );

    // Scopes narrow: a read-only admin key can list but not create.
    assert_eq!(
        app.call_as(&narrow_admin, Method::GET, "/v1/api-keys")
            .await
            .status(),
        200
    );
    let body = problem(
        post(&narrow_admin, &new_key).await.expect("sent"),
        403,
        "forbidden",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("api_keys:write")
    );

    // A scope outside the role is a validation error, not a silent grant.
    let beyond = json!({"name": "x", "role": "viewer", "scopes": ["jobs:write"]});
    let body = problem(
        app.post_json("/v1/api-keys", &beyond).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["code"], "scope_exceeds_role");

    // An admin cannot revoke the owner's key.
    let keys: Value = app
        .get("/v1/api-keys?role=owner")
        .await
        .json()
        .await
        .expect("json");
    let owner_id = keys["data"][0]["id"]
        .as_str()
        .expect("owner key")
        .to_owned();
    let response = app
        .call_as(&admin, Method::DELETE, &format!("/v1/api-keys/{owner_id}"))
        .await;
    problem(response, 403, "forbidden").await;
}

async fn other_workspaces_are_invisible(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (own_key_id, _) = app.create_key("viewer", None).await;
    let store = WorkspaceStore::new(app.db.clone(), Arc::new(app.clock.clone()));
    let (other, other_key, other_secret) = store
        .create_with_owner_key(WorkspaceName::parse("other").expect("name"))
        .await
        .expect("workspace");

    let theirs = format!("/v1/api-keys/{}", other_key.id);
    problem(app.get(&theirs).await, 404, "not_found").await;
    problem(app.call(Method::DELETE, &theirs).await, 404, "not_found").await;
    problem(app.get("/v1/api-keys/not-an-id").await, 404, "not_found").await;

    let ours = format!("/v1/api-keys/{own_key_id}");
    let response = app.call_as(other_secret.expose(), Method::GET, &ours).await;
    problem(response, 404, "not_found").await;
    let listed: Value = app
        .call_as(other_secret.expose(), Method::GET, "/v1/api-keys")
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|k| k["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [other_key.id.as_str()]);
    let ws: Value = app
        .call_as(other_secret.expose(), Method::GET, "/v1/workspace")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ws["id"], other.id.as_str());
}

async fn if_match_guards_revocation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (id, secret) = app.create_key("viewer", None).await;
    let path = format!("/v1/api-keys/{id}");
    let etag = app.get(&path).await.headers()["etag"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );

    // Using the key changes what GET shows (last_used_at), so the old ETag is stale.
    app.call_as(&secret, Method::GET, "/v1/workspace").await;
    once_used(&app, &path).await;
    let stale = app
        .request(Method::DELETE, &path)
        .header("if-match", &etag)
        .send()
        .await
        .expect("sent");
    problem(stale, 412, "precondition_failed").await;
    let weak = app
        .request(Method::DELETE, &path)
        .header("if-match", format!("W/{etag}"))
        .send()
        .await
        .expect("sent");
    problem(weak, 412, "precondition_failed").await;
    assert_eq!(
        app.call_as(&secret, Method::GET, "/v1/workspace")
            .await
            .status(),
        200,
        "still active"
    );

    let current = app.get(&path).await.headers()["etag"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_ne!(current, etag);
    let response = app
        .request(Method::DELETE, &path)
        .header("if-match", &current)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 204);
    problem(
        app.call_as(&secret, Method::GET, "/v1/workspace").await,
        401,
        "unauthorized",
    )
    .await;
}

/// A key revoked through one node is refused by another at once (the revocation reaches every
/// node's key cache through the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn revocation_reaches_every_node() {
    let a = TestApp::spawn(Backend::postgres()).await;
    let b = a.another_node().await;
    let (id, secret) = a.create_key("member", None).await;
    // Both nodes have authenticated the key, so both caches hold it.
    for node in [&a, &b] {
        assert_eq!(
            node.call_as(&secret, Method::GET, "/v1/workspace")
                .await
                .status(),
            200
        );
    }
    let response = a.call(Method::DELETE, &format!("/v1/api-keys/{id}")).await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        a.call_as(&secret, Method::GET, "/v1/workspace")
            .await
            .status(),
        401
    );
    // The notification travels through PostgreSQL: allow it a moment, far below the cache TTL.
    let mut refused = false;
    for _ in 0..50 {
        if b.call_as(&secret, Method::GET, "/v1/workspace")
            .await
            .status()
            == 401
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "node B still accepts a key revoked on node A");
}
