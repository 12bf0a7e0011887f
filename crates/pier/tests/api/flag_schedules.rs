//! Scheduled flag changes over HTTP: applied by the job queue when the clock reaches them (and
//! not before), audited as the schedule's, failed when the patch stopped fitting, cancelled
//! before their time (409 after), refused with the path of the fault, and private to their
//! workspace.

use std::time::Duration;

use pier_core::Clock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, on_both_backends, problem};

on_both_backends!(
    changes_apply_at_their_time_or_fail_with_a_reason,
    a_cancelled_schedule_changes_nothing_and_an_ended_one_is_409,
    bad_schedules_are_422_naming_the_path,
    another_workspace_neither_sees_nor_cancels_schedules,
);

const HOUR: Duration = Duration::from_secs(3600);

async fn flag(app: &TestApp, key: &str) {
    let definition = json!({"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"});
    let created = app
        .post_json("/v1/flags", &json!({"key": key, "definition": definition}))
        .await;
    assert_eq!(created.status(), 201);
}

/// `apply_at`, `after` from now on the app's clock.
fn in_(app: &TestApp, after: Duration) -> String {
    app.clock.now().saturating_add(after).to_rfc3339()
}

/// Schedules `patch` on `key` an hour from now; returns the schedule.
async fn schedule(app: &TestApp, key: &str, patch: Value) -> Value {
    let body = json!({"apply_at": in_(app, HOUR), "patch": patch});
    let created = app
        .post_json(&format!("/v1/flags/{key}/schedules"), &body)
        .await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let schedule: Value = created.json().await.expect("json");
    let id = schedule["id"].as_str().expect("an id");
    assert_eq!(location, format!("/v1/flags/{key}/schedules/{id}"));
    assert_eq!(schedule["status"], "pending");
    schedule
}

fn path(schedule: &Value) -> String {
    format!(
        "/v1/flags/{}/schedules/{}",
        schedule["flag_key"].as_str().expect("key"),
        schedule["id"].as_str().expect("id")
    )
}

/// The schedule once it left `pending`, waiting for the job queue to get to it.
async fn ended(app: &TestApp, schedule: &Value) -> Value {
    for _ in 0..100 {
        let now = app.get_value(&path(schedule)).await;
        if now["status"] != "pending" {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} still pending", path(schedule));
}

async fn changes_apply_at_their_time_or_fail_with_a_reason(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    flag(&app, "checkout").await;
    flag(&app, "banner").await;
    let on = schedule(&app, "checkout", json!({"state": "ENABLED"})).await;
    let renamed = schedule(&app, "banner", json!({"defaultVariant": "on"})).await;
    // The variant the banner's patch names goes before its time.
    let replaced = app
        .request(Method::PUT, "/v1/flags/banner")
        .json(&json!({"definition": {"state": "DISABLED",
            "variants": {"yes": true, "off": false}, "defaultVariant": "off"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(replaced.status(), 200);

    // Not before its time (the workers poll every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.get_value(&path(&on)).await["status"], "pending");
    assert_eq!(app.get_value("/v1/flags/checkout").await["version"], 1);

    app.clock.advance(HOUR);
    let applied = ended(&app, &on).await;
    assert_eq!(
        (
            applied["status"].clone(),
            applied["applied_version"].clone()
        ),
        (json!("applied"), json!(2))
    );
    let flag = app.get_value("/v1/flags/checkout").await;
    assert_eq!(
        (flag["definition"]["state"].clone(), flag["version"].clone()),
        (json!("ENABLED"), json!(2))
    );
    let trail = app.get_value("/v1/flags/checkout/changes").await;
    let latest = &trail["data"][0];
    let actor = latest["actor"].as_str().expect("an actor");
    let by = on["created_by"].as_str().expect("who");
    assert_eq!(
        actor,
        format!("schedule:{} (by {by})", on["id"].as_str().expect("id"))
    );
    assert_eq!(latest["diff"], json!({"state": "ENABLED"}));

    let failed = ended(&app, &renamed).await;
    assert_eq!(failed["status"], "failed");
    let reason = failed["reason"].as_str().expect("a reason");
    assert!(reason.contains("patch.defaultVariant"), "{reason}");
    assert_eq!(app.get_value("/v1/flags/banner").await["version"], 2);
}

async fn a_cancelled_schedule_changes_nothing_and_an_ended_one_is_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    flag(&app, "search").await;
    let cancelled = schedule(&app, "search", json!({"metadata": {"team": "x"}})).await;
    app.clock.advance(Duration::from_millis(1));
    let applied = schedule(&app, "search", json!({"state": "ENABLED"})).await;
    let cancel = |s: &Value| format!("{}/cancel", path(s));
    let (status, body) = app.post_value(&cancel(&cancelled), &json!({})).await;
    assert_eq!((status, body["status"].clone()), (200, json!("cancelled")));

    let listed = app.get_value("/v1/flags/search/schedules?limit=1").await;
    assert_eq!(listed["data"][0]["id"], applied["id"], "newest first");
    let cursor = listed["next_cursor"].as_str().expect("a next page");
    let rest = app
        .get_value(&format!(
            "/v1/flags/search/schedules?limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(
        (rest["data"][0]["id"].clone(), rest["has_more"].clone()),
        (cancelled["id"].clone(), json!(false))
    );

    app.clock.advance(HOUR);
    assert_eq!(ended(&app, &applied).await["status"], "applied");
    let flag = app.get_value("/v1/flags/search").await;
    assert_eq!(flag["version"], 2, "only the pending schedule applied");
    assert_eq!(flag["definition"].get("metadata"), None);
    for schedule in [&cancelled, &applied] {
        let again = app.call(Method::POST, &cancel(schedule)).await;
        problem(again, 409, "invalid_state").await;
    }
}

async fn bad_schedules_are_422_naming_the_path(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    flag(&app, "pricing").await;
    let past = app.clock.now().saturating_sub(HOUR).to_rfc3339();
    let cases = [
        (
            json!({"apply_at": past, "patch": {"state": "ENABLED"}}),
            "apply_at",
        ),
        (
            json!({"apply_at": in_(&app, 400 * 24 * HOUR), "patch": {"state": "ENABLED"}}),
            "apply_at",
        ),
        (
            json!({"apply_at": in_(&app, HOUR), "patch": {"defaultVariant": "maybe"}}),
            "patch.defaultVariant",
        ),
        (
            json!({"apply_at": in_(&app, HOUR), "patch": {"targeting": {"nope": [1]}}}),
            "patch.targeting",
        ),
    ];
    for (body, field) in cases {
        let refused = app.post_json("/v1/flags/pricing/schedules", &body).await;
        let problem = problem(refused, 422, "validation_failed").await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(
            fields.iter().any(|f| f.starts_with(field)),
            "{body}: {fields:?}"
        );
    }
    let body = json!({"apply_at": in_(&app, HOUR), "patch": {"state": "ENABLED"}});
    let missing = app.post_json("/v1/flags/nope/schedules", &body).await;
    problem(missing, 404, "not_found").await;
    for unknown in [
        "/v1/flags/pricing/schedules/sched_nope",
        "/v1/flags/pricing/schedules/not-an-id",
    ] {
        problem(app.get(unknown).await, 404, "not_found").await;
    }
}

async fn another_workspace_neither_sees_nor_cancels_schedules(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    flag(&app, "private").await;
    let mine = schedule(&app, "private", json!({"state": "ENABLED"})).await;
    let (_, _, other) =
        pier_auth::WorkspaceStore::new(app.db.clone(), std::sync::Arc::new(app.clock.clone()))
            .create_with_owner_key(pier_auth::WorkspaceName::parse("other").expect("name"))
            .await
            .expect("workspace");
    let other = other.expose().to_owned();
    let listed: Value = app
        .call_as(&other, Method::GET, "/v1/flags/private/schedules")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["data"], json!([]));
    problem(
        app.call_as(&other, Method::GET, &path(&mine)).await,
        404,
        "not_found",
    )
    .await;
    let cancel = format!("{}/cancel", path(&mine));
    problem(
        app.call_as(&other, Method::POST, &cancel).await,
        404,
        "not_found",
    )
    .await;
    let body = json!({"apply_at": in_(&app, HOUR), "patch": {"state": "ENABLED"}});
    let theirs = app
        .request_as(&other, Method::POST, "/v1/flags/private/schedules")
        .json(&body)
        .send()
        .await
        .expect("sent");
    problem(theirs, 404, "not_found").await;
    assert_eq!(app.get_value(&path(&mine)).await["status"], "pending");
}
