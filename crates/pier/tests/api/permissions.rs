//! Resource-level grants over HTTP: a grant opens one link or queue to a key or a user and
//! nothing else, `check` explains the decision, and another workspace can neither see nor use
//! them.

use std::sync::Arc;

use pier_auth::{Role, WorkspaceName, WorkspaceStore};
use pier_core::Clock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::sessions::{PASSWORD, sign_in, user};
use crate::support::{Backend, Options, TestApp, on_both_backends, problem};

on_both_backends!(
    a_grant_opens_one_resource_and_nothing_else,
    grants_are_checked_when_made_and_explained_by_check,
    another_workspace_can_neither_see_nor_use_grants,
    a_grant_opens_one_webhook_endpoint,
);

async fn link(app: &TestApp, url: &str) -> String {
    let (status, body) = app.post_value("/v1/links", &json!({"url": url})).await;
    assert_eq!(status, 201);
    body["id"].as_str().expect("id").to_owned()
}

async fn grant(app: &TestApp, subject: &str, kind: &str, id: &str, relation: &str) -> Value {
    let (status, body) = app
        .post_value(
            "/v1/permissions/grants",
            &json!({"subject": subject, "resource_type": kind, "resource_id": id,
                "relation": relation}),
        )
        .await;
    assert!(status == 201 || status == 200, "{status} {body}");
    body
}

async fn patch(app: &TestApp, key: &str, id: &str) -> u16 {
    app.request_as(key, Method::PATCH, &format!("/v1/links/{id}"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"title": "changed"}"#)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

async fn status(app: &TestApp, key: &str, method: Method, path: &str) -> u16 {
    app.call_as(key, method, path).await.status().as_u16()
}

async fn a_grant_opens_one_resource_and_nothing_else(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (
        link(&app, "https://example.com/a").await,
        link(&app, "https://example.com/b").await,
    );
    // A key scoped to jobs only: links are closed to it by its scopes.
    let (key_id, key) = app.create_key("member", Some(&["jobs:read"])).await;
    assert_eq!(patch(&app, &key, &a).await, 403);
    assert_eq!(
        status(&app, &key, Method::GET, &format!("/v1/links/{a}")).await,
        403
    );

    let viewer = grant(&app, &key_id, "link", &a, "viewer").await;
    assert_eq!(
        status(&app, &key, Method::GET, &format!("/v1/links/{a}")).await,
        200
    );
    assert_eq!(
        status(&app, &key, Method::GET, &format!("/v1/links/{a}/stats")).await,
        200
    );
    assert_eq!(patch(&app, &key, &a).await, 403, "viewer does not change");
    let editor = grant(&app, &key_id, "link", &a, "editor").await;
    assert_eq!(patch(&app, &key, &a).await, 200);
    // Nothing else opens: the other link, the list, creating links.
    assert_eq!(patch(&app, &key, &b).await, 403);
    assert_eq!(
        status(&app, &key, Method::GET, &format!("/v1/links/{b}")).await,
        403
    );
    assert_eq!(status(&app, &key, Method::GET, "/v1/links").await, 403);

    // Queues: by name.
    assert_eq!(
        status(&app, &key, Method::POST, "/v1/queues/mail/pause").await,
        403
    );
    grant(&app, &key_id, "queue", "mail", "editor").await;
    assert_eq!(
        status(&app, &key, Method::POST, "/v1/queues/mail/pause").await,
        200
    );
    assert_eq!(
        status(&app, &key, Method::POST, "/v1/queues/other/pause").await,
        403
    );

    // Taking the grants back closes the link on the next request.
    for grant in [&viewer, &editor] {
        let path = format!(
            "/v1/permissions/grants/{}",
            grant["id"].as_str().expect("id")
        );
        assert_eq!(app.call(Method::DELETE, &path).await.status(), 204);
    }
    assert_eq!(patch(&app, &key, &a).await, 403);
    assert_eq!(
        status(&app, &key, Method::GET, &format!("/v1/links/{a}")).await,
        403
    );

    // A person too: a viewer user with an editor grant may change that link.
    user(&app, "ann@example.com", &app.workspace(), Role::Viewer).await;
    let ann = sign_in(&app, "ann@example.com", PASSWORD).await;
    let ann_id = ann.session["user"]["id"].as_str().expect("id").to_owned();
    let by_ann = |id: String| {
        ann.on(&app, Method::PATCH, &format!("/v1/links/{id}"))
            .header("x-csrf-token", &ann.csrf)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"title": "ann's"}"#)
            .send()
    };
    assert_eq!(by_ann(b.clone()).await.expect("sent").status(), 403);
    grant(&app, &ann_id, "link", &b, "editor").await;
    assert_eq!(by_ann(b.clone()).await.expect("sent").status(), 200);
}

async fn grants_are_checked_when_made_and_explained_by_check(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = link(&app, "https://example.com/a").await;
    let (key_id, key) = app.create_key("viewer", None).await;
    let (_, member) = app.create_key("member", None).await;

    // Only who holds what it grants may grant it, to a real subject, on a real resource.
    let by_member = app
        .request_as(&member, Method::POST, "/v1/permissions/grants")
        .json(
            &json!({"subject": key_id, "resource_type": "link", "resource_id": a,
            "relation": "editor"}),
        )
        .send()
        .await
        .expect("sent");
    problem(by_member, 403, "forbidden").await;
    for (body, field) in [
        (
            json!({"subject": "key_01m8pd91emf07nqws6p476403x", "resource_type": "link",
            "resource_id": a, "relation": "editor"}),
            "subject",
        ),
        (
            json!({"subject": key_id, "resource_type": "link",
            "resource_id": "lnk_01m8pd91emf07nqws6p476403x", "relation": "editor"}),
            "resource_id",
        ),
        (
            json!({"subject": key_id, "resource_type": "job", "resource_id": a,
            "relation": "editor"}),
            "resource_type",
        ),
        (
            json!({"subject": key_id, "resource_type": "link", "resource_id": a,
            "relation": "owner"}),
            "relation",
        ),
    ] {
        let response = app.post_json("/v1/permissions/grants", &body).await;
        let problem = problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let first = grant(&app, &key_id, "link", &a, "editor").await;
    let again = grant(&app, &key_id, "link", &a, "editor").await;
    assert_eq!(first["id"], again["id"], "granting twice is one grant");

    let check = |who: &str, query: String| {
        let request = app.request_as(who, Method::GET, &format!("/v1/permissions/check?{query}"));
        async move {
            let response = request.send().await.expect("sent");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (code, own) = check(
        &key,
        format!("action=write&resource_type=link&resource_id={a}"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        (own["allowed"].as_bool(), own["decision"].as_str()),
        (Some(true), Some("grant"))
    );
    let (_, read) = check(
        &key,
        format!("action=read&resource_type=link&resource_id={a}"),
    )
    .await;
    assert_eq!(
        read["decision"], "role",
        "a viewer reads every link by its role"
    );
    let (_, other) = check(
        &key,
        "action=write&resource_type=link&resource_id=lnk_01m8pd91emf07nqws6p476403x".to_owned(),
    )
    .await;
    assert_eq!(
        (other["allowed"].as_bool(), other["decision"].as_str()),
        (Some(false), Some("denied"))
    );
    let (_, by_owner) = check(
        &app.owner_key,
        format!("action=write&resource_type=link&resource_id={a}&subject={key_id}"),
    )
    .await;
    assert_eq!(by_owner["subject"], key_id.as_str());
    assert_eq!(by_owner["decision"], "grant");
    let (code, _) = check(
        &key,
        format!(
            "action=write&resource_type=link&resource_id={a}&subject=key_01m8pd91emf07nqws6p476403x"
        ),
    )
    .await;
    assert_eq!(code, 403, "checking another subject needs permissions:read");
    let listed = app
        .get_value(&format!("/v1/permissions/grants?subject={key_id}"))
        .await;
    assert_eq!(listed["data"].as_array().expect("data").len(), 1);

    // Hostile ids (NUL, which PostgreSQL cannot compare) match no grant, never a 500.
    let (_, scoped) = app.create_key("member", Some(&["jobs:read"])).await;
    assert_eq!(patch(&app, &scoped, "%00").await, 403);
    let (code, nul) = check(
        &key,
        "action=write&resource_type=link&resource_id=%00".to_owned(),
    )
    .await;
    assert_eq!((code, nul["decision"].as_str()), (200, Some("denied")));
    for filter in ["subject=%00", "resource_id=%00"] {
        let listed = app
            .get_value(&format!("/v1/permissions/grants?{filter}"))
            .await;
        assert_eq!(listed["data"], json!([]), "{filter}");
    }
}

async fn another_workspace_can_neither_see_nor_use_grants(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let clock: Arc<dyn Clock> = Arc::new(app.clock.clone());
    let (_, _, other_key) = WorkspaceStore::new(app.db.clone(), clock)
        .create_with_owner_key(WorkspaceName::parse("globex").expect("name"))
        .await
        .expect("workspace");
    let other_key = other_key.expose().to_owned();
    let a = link(&app, "https://example.com/a").await;
    let (key_id, _) = app.create_key("viewer", None).await;
    let ours = grant(&app, &key_id, "link", &a, "editor").await;
    let path = format!(
        "/v1/permissions/grants/{}",
        ours["id"].as_str().expect("id")
    );
    for method in [Method::GET, Method::DELETE] {
        assert_eq!(status(&app, &other_key, method, &path).await, 404);
    }
    let listed: Value = app
        .request_as(&other_key, Method::GET, "/v1/permissions/grants")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"], json!([]));
    // They can name neither our key nor our link.
    for body in [
        json!({"subject": key_id, "resource_type": "queue", "resource_id": "mail", "relation": "editor"}),
        json!({"subject": "key_01m8pd91emf07nqws6p476403x", "resource_type": "link", "resource_id": a, "relation": "editor"}),
    ] {
        let response = app
            .request_as(&other_key, Method::POST, "/v1/permissions/grants")
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 422, "{body}");
    }
}

async fn a_grant_opens_one_webhook_endpoint(backend: Backend) {
    let options = Options {
        settings: vec![("allow_private_webhook_targets", "true".to_owned())],
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let (status_code, endpoint) = app
        .post_value(
            "/v1/webhook-endpoints",
            &json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(status_code, 201, "{endpoint}");
    let path = format!(
        "/v1/webhook-endpoints/{}",
        endpoint["id"].as_str().expect("id")
    );
    let (key_id, key) = app.create_key("member", Some(&["jobs:read"])).await;
    assert_eq!(status(&app, &key, Method::GET, &path).await, 403);
    grant(
        &app,
        &key_id,
        "webhook_endpoint",
        endpoint["id"].as_str().expect("id"),
        "viewer",
    )
    .await;
    assert_eq!(status(&app, &key, Method::GET, &path).await, 200);
    let secret = format!("{path}/secret");
    assert_eq!(
        status(&app, &key, Method::GET, &secret).await,
        403,
        "reading the secret is a change"
    );
    grant(
        &app,
        &key_id,
        "webhook_endpoint",
        endpoint["id"].as_str().expect("id"),
        "editor",
    )
    .await;
    assert_eq!(status(&app, &key, Method::GET, &secret).await, 200);
    assert_eq!(
        status(&app, &key, Method::GET, "/v1/webhook-endpoints").await,
        403
    );
}
