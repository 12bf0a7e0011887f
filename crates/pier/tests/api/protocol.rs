//! The HTTP worker protocol beyond the basics: batch reports with per-job outcomes, group-
//! committed single reports, bounded claims and bounded long-polls, reserved queues, and queue
//! settings as a merge patch.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Backend, Options, TestApp, on_both_backends, problem};

on_both_backends!(
    batch_reports_give_each_job_its_outcome,
    concurrent_single_reports_each_get_their_own_answer,
    claims_stop_at_the_configured_byte_budget,
    long_polls_are_capped_per_workspace_and_hold_no_connection,
    pier_queues_are_refused_everywhere_a_tenant_names_a_queue,
    queue_patches_merge,
);

async fn enqueue_n(app: &TestApp, queue: &str, n: usize, payload: Value) {
    let jobs: Vec<Value> = (0..n)
        .map(|_| json!({"kind": "k", "queue": queue, "payload": payload}))
        .collect();
    let (status, body) = app
        .post_value("/v1/jobs/batch", &json!({ "jobs": jobs }))
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn claim(app: &TestApp, queue: &str, max: u32) -> Vec<Value> {
    let (status, body) = app
        .post_value(&format!("/v1/queues/{queue}/claim"), &json!({ "max": max }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["jobs"].as_array().expect("jobs").clone()
}

fn report(job: &Value) -> Value {
    json!({"id": job["id"], "lease_token": job["lease_token"]})
}

async fn batch_reports_give_each_job_its_outcome(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    enqueue_n(&app, "batch", 4, json!({})).await;
    let claimed = claim(&app, "batch", 4).await;
    let unknown = "job_01m8hpqca6yrpxjm9wy9jmw19v";
    let mut completions: Vec<Value> = claimed[..2].iter().map(report).collect();
    completions[1]["result"] = json!({"rows": 12});
    completions.push(json!({"id": unknown, "lease_token": "0".repeat(32)}));
    let (status, body) = app
        .post_value("/v1/jobs/complete", &json!(completions))
        .await;
    assert_eq!(status, 200, "{body}");
    let outcomes: Vec<&str> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(outcomes, ["completed", "completed", "not_found"]);
    let done = app
        .get_value(&format!(
            "/v1/jobs/{}",
            claimed[1]["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(done["result"], json!({"rows": 12}));

    // Reporting the same jobs again: their leases are gone.
    let (_, again) = app
        .post_value("/v1/jobs/complete", &json!([report(&claimed[0])]))
        .await;
    assert_eq!(again["data"][0]["outcome"], "stale_lease");

    let failures: Vec<Value> = claimed[2..]
        .iter()
        .map(|j| json!({"id": j["id"], "lease_token": j["lease_token"], "error": "boom"}))
        .collect();
    let (status, body) = app.post_value("/v1/jobs/fail", &json!(failures)).await;
    assert_eq!(status, 200, "{body}");
    for item in body["data"].as_array().expect("data") {
        assert_eq!(
            (item["outcome"].as_str(), item["state"].as_str()),
            (Some("failed"), Some("retryable"))
        );
    }

    let response = app.post_json("/v1/jobs/complete", &json!([])).await;
    problem(response, 422, "validation_failed").await;
    let response = app
        .post_json(
            "/v1/jobs/complete",
            &json!([report(&claimed[0]), {"id": "nope", "lease_token": "x"}]),
        )
        .await;
    let body = problem(response, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "[1]", "{body}");
}

/// Single completions sent at once are committed together, yet each caller learns its own
/// outcome (here half of them present a stale token).
async fn concurrent_single_reports_each_get_their_own_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    enqueue_n(&app, "singles", 40, json!({})).await;
    let claimed = claim(&app, "singles", 40).await;
    let requests = claimed.iter().enumerate().map(|(i, job)| {
        let token = if i % 2 == 0 {
            job["lease_token"].as_str().expect("token").to_owned()
        } else {
            "f".repeat(32)
        };
        let path = format!("/v1/jobs/{}/complete", job["id"].as_str().expect("id"));
        let request = app
            .request(reqwest::Method::POST, &path)
            .json(&json!({"lease_token": token}));
        async move { request.send().await.expect("sent").status().as_u16() }
    });
    // Joined, not awaited one by one: every request is in flight at once.
    let statuses = futures_util::future::join_all(requests).await;
    for (i, status) in statuses.iter().enumerate() {
        assert_eq!(*status, if i % 2 == 0 { 204 } else { 409 }, "report {i}");
    }
    let queue = app.get_value("/v1/queues").await;
    assert_eq!(queue["data"][0]["counts"]["completed"], 20);
    assert_eq!(queue["data"][0]["counts"]["running"], 20);
}

async fn claims_stop_at_the_configured_byte_budget(backend: Backend) {
    let options = Options {
        settings: vec![("jobs.claim_budget_bytes", "2000".to_owned())],
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    enqueue_n(&app, "big", 5, json!("x".repeat(900))).await;
    assert_eq!(
        claim(&app, "big", 5).await.len(),
        2,
        "two 900-byte payloads fit in 2000"
    );
}

async fn long_polls_are_capped_per_workspace_and_hold_no_connection(backend: Backend) {
    let options = Options {
        settings: vec![
            ("jobs.max_waiting_claims_per_workspace", "3".to_owned()),
            ("db_max_connections", "2".to_owned()),
        ],
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let request = app
                .request(reqwest::Method::POST, "/v1/queues/idle/claim")
                .json(&json!({"wait_seconds": 3}));
            tokio::spawn(async move { request.send().await.expect("sent").status().as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = app
        .post_json("/v1/queues/idle/claim", &json!({"wait_seconds": 3}))
        .await;
    assert_eq!(response.headers()["retry-after"], "1");
    problem(response, 429, "too_many_waiting_claims").await;
    // Three waiters and a pool of two connections: other requests are still served at once.
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(app.get("/v1/workspace").await.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waiters hold no connection"
    );
    for waiter in waiters {
        assert_eq!(waiter.await.expect("waiter"), 200);
    }
}

async fn pier_queues_are_refused_everywhere_a_tenant_names_a_queue(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (path, body) in [
        ("/v1/jobs", json!({"kind": "k", "queue": "pier.webhooks"})),
        (
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "k", "queue": "PIER.webhooks"}]}),
        ),
        ("/v1/queues/pier.webhooks/claim", json!({})),
        ("/v1/queues/pier.webhooks/pause", json!({})),
    ] {
        let response = app.post_json(path, &body).await;
        problem(response, 422, "validation_failed").await;
    }
    let response = app.get("/v1/jobs?queue=pier.webhooks").await;
    problem(response, 422, "validation_failed").await;
}

async fn queue_patches_merge(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let patch = |body: Value| {
        app.request(reqwest::Method::PATCH, "/v1/queues/mail")
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
    };
    let set: Value = patch(json!({"concurrency_limit": 5}))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(set["concurrency_limit"], 5);
    let unchanged: Value = patch(json!({}))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        unchanged["concurrency_limit"], 5,
        "an empty patch changes nothing"
    );
    let paused: Value = patch(json!({"paused": true}))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            paused["paused"].clone(),
            paused["concurrency_limit"].clone()
        ),
        (json!(true), json!(5))
    );
    let cleared: Value = patch(json!({"concurrency_limit": null, "paused": false}))
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            cleared["paused"].clone(),
            cleared["concurrency_limit"].clone()
        ),
        (json!(false), Value::Null)
    );
}
