//! `Idempotency-Key`: replay, mismatch, validation failures not stored, and a concurrent race in
//! which exactly one request runs.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, everything_stored, on_both_backends, problem};

on_both_backends!(
    no_secret_rests_in_the_clear,
    replays_and_mismatches,
    failures_are_not_stored,
    concurrent_duplicates_run_once
);

async fn keys_named(app: &TestApp, name: &str) -> usize {
    let list: Value = app
        .get("/v1/api-keys?limit=100")
        .await
        .json()
        .await
        .expect("json");
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|k| k["name"] == name)
        .count()
}

async fn replays_and_mismatches(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"name": "once", "role": "viewer"});
    let send = |key: &str, body: &Value| {
        app.request(Method::POST, "/v1/api-keys")
            .header("idempotency-key", key)
            .json(body)
            .send()
    };

    let first = send("create-once-1", &body).await.expect("sent");
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].clone();
    let first_body: Value = first.json().await.expect("json");

    let again = send("create-once-1", &body).await.expect("sent");
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], location);
    let again_body: Value = again.json().await.expect("json");
    assert_eq!(
        again_body, first_body,
        "the stored response, secret included"
    );
    assert_eq!(keys_named(&app, "once").await, 1);

    let other = send("create-once-1", &json!({"name": "different"}))
        .await
        .expect("sent");
    problem(other, 422, "idempotency_key_reused").await;

    // Keys are scoped to the caller: another key may reuse the same string.
    let (_, admin) = app.create_key("admin", None).await;
    let theirs = app
        .request_as(&admin, Method::POST, "/v1/api-keys")
        .header("idempotency-key", "create-once-1")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(theirs.status(), 201);
    assert!(theirs.headers().get("idempotent-replayed").is_none());

    // After 24 hours the key is forgotten and runs again.
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let later = send("create-once-1", &body).await.expect("sent");
    assert_eq!(later.status(), 201);
    assert!(later.headers().get("idempotent-replayed").is_none());

    for bad_key in [String::new(), "k".repeat(256), "tab\there".to_owned()] {
        let bad = send(&bad_key, &body).await.expect("sent");
        problem(bad, 400, "invalid_idempotency_key").await;
    }
}

async fn failures_are_not_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let send = |body: Value| {
        app.request(Method::POST, "/v1/api-keys")
            .header("idempotency-key", "fix-and-retry")
            .json(&body)
            .send()
    };
    problem(
        send(json!({"name": ""})).await.expect("sent"),
        422,
        "validation_failed",
    )
    .await;
    // Same key, corrected body: runs, because the failure released the key.
    let fixed = send(json!({"name": "fixed"})).await.expect("sent");
    assert_eq!(fixed.status(), 201);
    assert!(fixed.headers().get("idempotent-replayed").is_none());
}

async fn concurrent_duplicates_run_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"name": "raced", "role": "viewer"});
    let requests = (0..12).map(|_| {
        app.request(Method::POST, "/v1/api-keys")
            .header("idempotency-key", "race-1")
            .json(&body)
            .send()
    });
    let responses = futures_join_all(requests).await;
    let mut executed = 0;
    for response in responses {
        let response = response.expect("sent");
        match response.status().as_u16() {
            201 if response.headers().get("idempotent-replayed").is_none() => executed += 1,
            201 => {}
            409 => {
                problem(response, 409, "idempotency_key_in_use").await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(executed, 1, "exactly one request ran");
    assert_eq!(
        keys_named(&app, "raced").await,
        1,
        "exactly one key was created"
    );
}

/// Runs all futures at once, each on its own task, and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("request task"));
    }
    out
}

/// Every secret-bearing create, replayable or not, leaves no trace of the secret (or of the
/// client's Idempotency-Key) anywhere the database keeps bytes.
async fn no_secret_rests_in_the_clear(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut secrets = vec![app.owner_key.clone()];
    for (name, idempotency_key) in [
        ("plain", None),
        ("replayable", Some("secret-bearing-create-1")),
    ] {
        let mut request = app
            .request(Method::POST, "/v1/api-keys")
            .json(&json!({"name": name, "role": "viewer"}));
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let created: Value = request
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        secrets.push(created["key"].as_str().expect("secret").to_owned());
    }
    let stored = everything_stored(&app).await;
    let text = String::from_utf8_lossy(&stored);
    for secret in &secrets {
        let body = &secret["pier_".len()..];
        assert!(!text.contains(body), "a key's secret rests in the clear");
    }
    assert!(
        !text.contains("secret-bearing-create-1"),
        "the Idempotency-Key rests in the clear"
    );
}
