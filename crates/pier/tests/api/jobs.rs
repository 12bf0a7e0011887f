//! Jobs over HTTP: enqueue, ordering, unique keys, leases and fencing, retries and dead letters,
//! cancellation, pruning, batches, queues and long-poll claims. Time moves on the manual clock.

use std::time::Duration;

use pier_core::Clock;
use pier_jobs::Retention;
use serde_json::{Value, json};

use crate::support::{Backend, TestApp, on_both_backends, problem};

on_both_backends!(
    priorities_and_run_at_order_claims,
    unique_keys_return_the_unfinished_job,
    failures_back_off_then_dead_letter,
    a_permanent_failure_discards_at_once,
    expired_leases_are_rescued_and_fenced,
    cancellation_of_waiting_and_running_jobs,
    pruning_removes_old_finished_jobs,
    batches_are_atomic,
    queues_pause_resume_and_count,
    long_poll_claim_wakes_on_enqueue,
    jobs_are_invisible_to_other_workspaces,
    listing_filters_and_pages,
    counters_match_the_rows,
);

async fn claim(app: &TestApp, queue: &str, body: Value) -> Vec<Value> {
    let (status, value) = app
        .post_value(&format!("/v1/queues/{queue}/claim"), &body)
        .await;
    assert_eq!(status, 200, "{value}");
    value["jobs"].as_array().expect("jobs").clone()
}

async fn enqueue(app: &TestApp, body: Value) -> Value {
    let (status, value) = app.post_value("/v1/jobs", &body).await;
    assert_eq!(status, 201, "{value}");
    value
}

fn id(job: &Value) -> String {
    job["id"].as_str().expect("id").to_owned()
}

fn token(job: &Value) -> String {
    job["lease_token"].as_str().expect("lease token").to_owned()
}

async fn priorities_and_run_at_order_claims(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let later = app.clock.now().saturating_add(Duration::from_secs(60));
    let low = enqueue(&app, json!({"kind": "k", "priority": 5})).await;
    let urgent = enqueue(&app, json!({"kind": "k", "priority": -1})).await;
    let normal = enqueue(&app, json!({"kind": "k"})).await;
    let scheduled = enqueue(
        &app,
        json!({"kind": "k", "priority": -10, "run_at": later.to_rfc3339()}),
    )
    .await;
    assert_eq!(scheduled["state"], "scheduled");

    let claimed = claim(&app, "default", json!({"max": 10})).await;
    let order: Vec<String> = claimed.iter().map(id).collect();
    assert_eq!(
        order,
        [id(&urgent), id(&normal), id(&low)],
        "priority order, scheduled job not yet due"
    );
    assert!(claimed.iter().all(|j| j["attempt"] == 1));

    app.clock.advance(Duration::from_secs(61));
    let due = claim(&app, "default", json!({"max": 10})).await;
    assert_eq!(due.iter().map(id).collect::<Vec<_>>(), [id(&scheduled)]);
}

async fn unique_keys_return_the_unfinished_job(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = enqueue(
        &app,
        json!({"kind": "report", "unique_key": "daily-2026-11-28"}),
    )
    .await;
    assert_eq!(first["existing"], false);
    let (status, again) = app
        .post_value(
            "/v1/jobs",
            &json!({"kind": "report", "unique_key": "daily-2026-11-28"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["existing"], true);
    assert_eq!(id(&again), id(&first));

    // Running still counts as unfinished; once completed, the key is free again.
    let claimed = claim(&app, "default", json!({})).await;
    let (status, _) = app
        .post_value(
            "/v1/jobs",
            &json!({"kind": "report", "unique_key": "daily-2026-11-28"}),
        )
        .await;
    assert_eq!(status, 200);
    let path = format!("/v1/jobs/{}/complete", id(&claimed[0]));
    let (status, _) = app
        .post_value(&path, &json!({"lease_token": token(&claimed[0])}))
        .await;
    assert_eq!(status, 204);
    let fresh = enqueue(
        &app,
        json!({"kind": "report", "unique_key": "daily-2026-11-28"}),
    )
    .await;
    assert_ne!(id(&fresh), id(&first));
}

async fn failures_back_off_then_dead_letter(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let job = enqueue(&app, json!({"kind": "flaky", "max_attempts": 3, "backoff": {"base_seconds": 10, "max_seconds": 15}})).await;
    // Failed attempt n waits min(10 s · 2^(n−1), 15 s), jittered into its upper half.
    for (attempt, ceiling) in [(1_u64, 10_u64), (2, 15)] {
        let claimed = claim(&app, "default", json!({})).await;
        assert_eq!(claimed[0]["attempt"], attempt);
        let failed_at = app.clock.now();
        let path = format!("/v1/jobs/{}/fail", id(&job));
        let (status, body) = app
            .post_value(
                &path,
                &json!({"lease_token": token(&claimed[0]), "error": format!("boom {attempt}")}),
            )
            .await;
        assert_eq!((status, body["state"].clone()), (200, json!("retryable")));
        let after = app.get_value(&format!("/v1/jobs/{}", id(&job))).await;
        let run_at = pier_core::Timestamp::parse_rfc3339(after["run_at"].as_str().expect("run_at"))
            .expect("ts");
        let delay = run_at.duration_since(failed_at).as_secs_f64();
        assert!(
            delay >= ceiling as f64 / 2.0 && delay <= ceiling as f64,
            "attempt {attempt}: delay {delay}"
        );
        assert!(
            claim(&app, "default", json!({})).await.is_empty(),
            "not before run_at"
        );
        app.clock.advance(Duration::from_secs(ceiling));
    }
    let claimed = claim(&app, "default", json!({})).await;
    let path = format!("/v1/jobs/{}/fail", id(&job));
    let (_, body) = app
        .post_value(
            &path,
            &json!({"lease_token": token(&claimed[0]), "error": "boom 3"}),
        )
        .await;
    assert_eq!(body["state"], "discarded");
    let dead = app.get_value(&format!("/v1/jobs/{}", id(&job))).await;
    let errors: Vec<&str> = dead["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["error"].as_str().expect("text"))
        .collect();
    assert_eq!(errors, ["boom 1", "boom 2", "boom 3"]);
    assert!(dead["finalized_at"].is_string());

    // A dead letter retried by hand gets one more attempt.
    let (status, retried) = app
        .post_value(&format!("/v1/jobs/{}/retry", id(&job)), &json!({}))
        .await;
    assert_eq!(
        (status, retried["state"].clone()),
        (200, json!("available"))
    );
    assert_eq!(retried["max_attempts"], 4);
    let again = claim(&app, "default", json!({})).await;
    assert_eq!(again[0]["attempt"], 4);

    // `retry_at` overrides the backoff.
    let at = app.clock.now().saturating_add(Duration::from_secs(3600));
    let (_, body) = app.post_value(&path, &json!({"lease_token": token(&again[0]), "error": "later", "retry_at": at.to_rfc3339()})).await;
    assert_eq!(
        body["state"], "discarded",
        "out of attempts wins over retry_at"
    );
}

/// `"discard": true` ends the job on this attempt, attempts left or not, in the single and the
/// batch report alike.
async fn a_permanent_failure_discards_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let single = enqueue(&app, json!({"kind": "charge", "max_attempts": 5})).await;
    let batched = enqueue(&app, json!({"kind": "charge", "max_attempts": 5})).await;
    let claimed = claim(&app, "default", json!({"max": 2})).await;
    let by_id = |job: &Value| {
        claimed
            .iter()
            .find(|c| id(c) == id(job))
            .expect("claimed")
            .clone()
    };
    let path = format!("/v1/jobs/{}/fail", id(&single));
    let (status, body) = app
        .post_value(
            &path,
            &json!({"lease_token": token(&by_id(&single)), "error": "card declined", "discard": true}),
        )
        .await;
    assert_eq!((status, body["state"].clone()), (200, json!("discarded")));
    let (status, body) = app
        .post_value(
            "/v1/jobs/fail",
            &json!([{"id": id(&batched), "lease_token": token(&by_id(&batched)),
                     "error": "no such card", "discard": true}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["state"], "discarded");
    for (job, error) in [(&single, "card declined"), (&batched, "no such card")] {
        let dead = app.get_value(&format!("/v1/jobs/{}", id(job))).await;
        assert_eq!(dead["state"], "discarded");
        assert_eq!(
            (dead["attempt"].clone(), dead["max_attempts"].clone()),
            (json!(1), json!(5))
        );
        assert_eq!(dead["errors"][0]["error"], error);
        assert!(dead["finalized_at"].is_string());
    }
    assert!(
        claim(&app, "default", json!({})).await.is_empty(),
        "no attempt follows"
    );
    let (status, problem) = app
        .post_value(
            &path,
            &json!({"lease_token": "0".repeat(32), "error": "x", "discard": "yes"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
}

async fn expired_leases_are_rescued_and_fenced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let job = enqueue(&app, json!({"kind": "slow", "lease_seconds": 5})).await;
    let first = claim(&app, "default", json!({"worker_id": "w1"})).await;
    let stale_token = token(&first[0]);

    // A heartbeat extends the lease from now.
    app.clock.advance(Duration::from_secs(4));
    let path = format!("/v1/jobs/{}/heartbeat", id(&job));
    let (status, beat) = app
        .post_value(&path, &json!({"lease_token": stale_token}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(beat["cancel_requested"], false);
    app.clock.advance(Duration::from_secs(4));
    assert_eq!(
        app.jobs.rescue_expired().await.expect("rescue"),
        0,
        "the heartbeat kept it alive"
    );

    // The worker goes silent; the lease runs out and the job is rescued as a failed attempt.
    app.clock.advance(Duration::from_secs(2));
    assert_eq!(app.jobs.rescue_expired().await.expect("rescue"), 1);
    let rescued = app.get_value(&format!("/v1/jobs/{}", id(&job))).await;
    assert_eq!(rescued["state"], "retryable");
    assert!(
        rescued["errors"][0]["error"]
            .as_str()
            .expect("error")
            .contains("lease expired")
    );

    app.clock.advance(Duration::from_secs(2));
    let second = claim(&app, "default", json!({"worker_id": "w2"})).await;
    assert_eq!(id(&second[0]), id(&job));
    assert_eq!(second[0]["attempt"], 2);

    // The first worker wakes up: everything it says is refused and changes nothing.
    for action in ["heartbeat", "complete"] {
        let response = app
            .post_json(
                &format!("/v1/jobs/{}/{action}", id(&job)),
                &json!({"lease_token": stale_token}),
            )
            .await;
        problem(response, 409, "stale_lease").await;
    }
    let response = app
        .post_json(
            &format!("/v1/jobs/{}/fail", id(&job)),
            &json!({"lease_token": stale_token, "error": "late"}),
        )
        .await;
    problem(response, 409, "stale_lease").await;
    let current = app.get_value(&format!("/v1/jobs/{}", id(&job))).await;
    assert_eq!(
        (current["state"].clone(), current["worker_id"].clone()),
        (json!("running"), json!("w2"))
    );

    let (status, _) = app
        .post_value(
            &format!("/v1/jobs/{}/complete", id(&job)),
            &json!({"lease_token": token(&second[0])}),
        )
        .await;
    assert_eq!(status, 204);
}

async fn cancellation_of_waiting_and_running_jobs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let waiting = enqueue(&app, json!({"kind": "k", "queue": "q1"})).await;
    let (status, cancelled) = app
        .post_value(&format!("/v1/jobs/{}/cancel", id(&waiting)), &json!({}))
        .await;
    assert_eq!(
        (status, cancelled["state"].clone()),
        (200, json!("cancelled"))
    );
    assert!(claim(&app, "q1", json!({})).await.is_empty());

    let running = enqueue(&app, json!({"kind": "k", "queue": "q1"})).await;
    let claimed = claim(&app, "q1", json!({})).await;
    let (_, requested) = app
        .post_value(&format!("/v1/jobs/{}/cancel", id(&running)), &json!({}))
        .await;
    assert_eq!(
        (
            requested["state"].clone(),
            requested["cancel_requested"].clone()
        ),
        (json!("running"), json!(true))
    );
    let (_, beat) = app
        .post_value(
            &format!("/v1/jobs/{}/heartbeat", id(&running)),
            &json!({"lease_token": token(&claimed[0])}),
        )
        .await;
    assert_eq!(beat["cancel_requested"], true);
    let (_, acked) = app
        .post_value(
            &format!("/v1/jobs/{}/fail", id(&running)),
            &json!({"lease_token": token(&claimed[0]), "error": "stopped on request"}),
        )
        .await;
    assert_eq!(acked["state"], "cancelled");

    let done = enqueue(&app, json!({"kind": "k", "queue": "q1"})).await;
    let claimed = claim(&app, "q1", json!({})).await;
    app.post_value(
        &format!("/v1/jobs/{}/complete", id(&done)),
        &json!({"lease_token": token(&claimed[0])}),
    )
    .await;
    let response = app
        .post_json(&format!("/v1/jobs/{}/cancel", id(&done)), &json!({}))
        .await;
    problem(response, 409, "invalid_state").await;
}

async fn pruning_removes_old_finished_jobs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for _ in 0..3 {
        enqueue(&app, json!({"kind": "k"})).await;
    }
    let waiting = enqueue(&app, json!({"kind": "k", "queue": "idle"})).await;
    let claimed = claim(&app, "default", json!({"max": 3})).await;
    for job in &claimed {
        app.post_value(
            &format!("/v1/jobs/{}/complete", id(job)),
            &json!({"lease_token": token(job)}),
        )
        .await;
    }
    let retention = Retention::default();
    assert_eq!(
        app.jobs.prune(&retention).await.expect("prune"),
        0,
        "too young"
    );
    app.clock
        .advance(retention.completed + Duration::from_secs(1));
    assert_eq!(app.jobs.prune(&retention).await.expect("prune"), 3);
    let response = app.get(&format!("/v1/jobs/{}", id(&claimed[0]))).await;
    problem(response, 404, "not_found").await;
    assert_eq!(
        app.get_value(&format!("/v1/jobs/{}", id(&waiting))).await["state"],
        "available",
        "unfinished jobs stay"
    );
    // A queue is listed while it has jobs or settings: `default` now has neither.
    let queues = app.get_value("/v1/queues").await;
    let names: Vec<&str> = queues["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|q| q["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["idle"], "counters follow pruning");
}

async fn batches_are_atomic(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let jobs: Vec<Value> = (0..500)
        .map(|i| json!({"kind": "bulk", "payload": {"n": i}}))
        .collect();
    let (status, body) = app
        .post_value("/v1/jobs/batch", &json!({"jobs": jobs}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["data"].as_array().expect("data").len(), 500);
    assert_eq!(body["data"][499]["payload"]["n"], 499);

    let mut bad: Vec<Value> = (0..3).map(|_| json!({"kind": "bulk"})).collect();
    bad.push(json!({"kind": "bad kind"}));
    let response = app.post_json("/v1/jobs/batch", &json!({"jobs": bad})).await;
    let problem_body = problem(response, 422, "validation_failed").await;
    assert_eq!(problem_body["errors"][0]["field"], "jobs[3].kind");
    let queues = app.get_value("/v1/queues").await;
    assert_eq!(
        queues["data"][0]["counts"]["available"], 500,
        "nothing from the rejected batch"
    );

    let response = app.post_json("/v1/jobs/batch", &json!({"jobs": []})).await;
    problem(response, 422, "validation_failed").await;
}

async fn queues_pause_resume_and_count(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for _ in 0..2 {
        enqueue(&app, json!({"kind": "k", "queue": "mail"})).await;
    }
    app.clock.advance(Duration::from_secs(7));
    let (status, paused) = app.post_value("/v1/queues/mail/pause", &json!({})).await;
    assert_eq!((status, paused["paused"].clone()), (200, json!(true)));
    assert_eq!(paused["counts"]["available"], 2);
    assert!(paused["oldest_available_age_secs"].as_f64().expect("age") >= 7.0);
    assert!(
        claim(&app, "mail", json!({"max": 5})).await.is_empty(),
        "paused queues hand out nothing"
    );
    let (_, resumed) = app.post_value("/v1/queues/mail/resume", &json!({})).await;
    assert_eq!(resumed["paused"], false);
    assert_eq!(claim(&app, "mail", json!({"max": 5})).await.len(), 2);

    let response = app
        .request(reqwest::Method::PATCH, "/v1/queues/mail")
        .json(&json!({"concurrency_limit": 0}))
        .send()
        .await
        .expect("sent");
    problem(response, 422, "validation_failed").await;
    let listed = app.get_value("/v1/queues?limit=1").await;
    assert_eq!(listed["data"][0]["counts"]["running"], 2);
}

async fn long_poll_claim_wakes_on_enqueue(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let waiter = {
        let client = app.client.clone();
        let url = app.url("/v1/queues/later/claim");
        let key = app.owner_key.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"wait_seconds": 20}))
                .send()
                .await
                .expect("sent");
            (
                started.elapsed(),
                response.json::<Value>().await.expect("json"),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = enqueue(&app, json!({"kind": "k", "queue": "later"})).await;
    let (elapsed, body) = waiter.await.expect("waiter");
    assert_eq!(
        body["jobs"][0]["id"], job["id"],
        "the waiting claim got the job"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "it returned before its deadline"
    );

    let response = app
        .post_json("/v1/queues/later/claim", &json!({"wait_seconds": 31}))
        .await;
    problem(response, 422, "validation_failed").await;
}

async fn jobs_are_invisible_to_other_workspaces(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let job = enqueue(&app, json!({"kind": "k"})).await;
    let store =
        pier_auth::WorkspaceStore::new(app.db.clone(), std::sync::Arc::new(app.clock.clone()));
    let (_, _, other) = store
        .create_with_owner_key(pier_auth::WorkspaceName::parse("other").expect("name"))
        .await
        .expect("ws");
    let response = app
        .call_as(
            other.expose(),
            reqwest::Method::GET,
            &format!("/v1/jobs/{}", id(&job)),
        )
        .await;
    problem(response, 404, "not_found").await;
    let claimed = app
        .request_as(
            other.expose(),
            reqwest::Method::POST,
            "/v1/queues/default/claim",
        )
        .json(&json!({"max": 10}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        claimed.json::<Value>().await.expect("json")["jobs"],
        json!([])
    );
    let ours = claim(&app, "default", json!({})).await;
    let response = app
        .request_as(
            other.expose(),
            reqwest::Method::POST,
            &format!("/v1/jobs/{}/complete", id(&job)),
        )
        .json(&json!({"lease_token": token(&ours[0])}))
        .send()
        .await
        .expect("sent");
    problem(response, 404, "not_found").await;
    let (_, viewer) = app.create_key("viewer", None).await;
    let response = app
        .request_as(&viewer, reqwest::Method::POST, "/v1/jobs")
        .json(&json!({"kind": "k"}))
        .send()
        .await
        .expect("sent");
    problem(response, 403, "forbidden").await;
}

async fn listing_filters_and_pages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        made.push(id(
            &enqueue(&app, json!({"kind": kind, "queue": "listed"})).await
        ));
        app.clock.advance(Duration::from_millis(2));
    }
    enqueue(&app, json!({"kind": "even", "queue": "elsewhere"})).await;

    let mut seen = Vec::new();
    let mut path = "/v1/jobs?queue=listed&limit=2".to_owned();
    loop {
        let page = app.get_value(&path).await;
        seen.extend(page["data"].as_array().expect("data").iter().map(id));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/jobs?queue=listed&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    made.reverse();
    assert_eq!(seen, made, "newest first, each once");

    let evens = app
        .get_value("/v1/jobs?queue=listed&kind=even&state=available")
        .await;
    assert_eq!(evens["data"].as_array().expect("data").len(), 3);
    let response = app.get("/v1/jobs?state=sleeping").await;
    problem(response, 422, "validation_failed").await;
    let first = app.get_value("/v1/jobs?queue=listed&limit=2").await;
    let cursor = first["next_cursor"].as_str().expect("cursor");
    let response = app
        .get(&format!("/v1/jobs?queue=elsewhere&limit=2&cursor={cursor}"))
        .await;
    problem(response, 400, "cursor_mismatch").await;
}

/// Every state change keeps the queue counters equal to what the rows say.
async fn counters_match_the_rows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let later = app.clock.now().saturating_add(Duration::from_secs(30));
    for i in 0..12 {
        let mut body = json!({"kind": "k", "queue": if i % 3 == 0 { "a" } else { "b" }, "max_attempts": 2, "lease_seconds": 5});
        if i >= 10 {
            body["run_at"] = json!(later.to_rfc3339());
        }
        enqueue(&app, body).await;
    }
    let mut claimed = claim(&app, "b", json!({"max": 6})).await;
    claimed.extend(claim(&app, "a", json!({"max": 2})).await);
    let action = |job: &Value, what: &str| {
        (
            format!("/v1/jobs/{}/{what}", id(job)),
            json!({"lease_token": token(job), "error": "x"}),
        )
    };
    for (job, what) in claimed
        .iter()
        .zip(["complete", "complete", "fail", "fail", "complete"])
    {
        let (path, body) = action(job, what);
        app.post_value(&path, &body).await;
    }
    app.post_value(&format!("/v1/jobs/{}/cancel", id(&claimed[5])), &json!({}))
        .await;
    let waiting = app.get_value("/v1/jobs?queue=a&state=available").await;
    app.post_value(
        &format!("/v1/jobs/{}/cancel", id(&waiting["data"][0])),
        &json!({}),
    )
    .await;
    app.clock.advance(Duration::from_secs(31));
    app.jobs.promote_due().await.expect("promote");
    app.jobs.rescue_expired().await.expect("rescue");
    let again = claim(&app, "b", json!({"max": 10})).await;
    for job in &again {
        let (path, body) = action(job, "fail");
        app.post_value(&path, &body).await;
    }
    let dead = app.get_value("/v1/jobs?state=discarded&limit=1").await;
    app.post_value(
        &format!("/v1/jobs/{}/retry", id(&dead["data"][0])),
        &json!({}),
    )
    .await;
    app.clock
        .advance(Retention::default().completed + Duration::from_secs(1));
    app.jobs.prune(&Retention::default()).await.expect("prune");

    let rows: Vec<(String, String, i64)> = pier_db::with_reader!(&app.db, pool => {
        sqlx::query_as("SELECT queue, state, COUNT(*) FROM jobs GROUP BY queue, state")
            .fetch_all(pool)
            .await
    })
    .expect("count rows");
    let queues = app.get_value("/v1/queues").await;
    let mut checked = 0;
    for queue in queues["data"].as_array().expect("queues") {
        for (state, n) in queue["counts"].as_object().expect("counts") {
            let actual = rows
                .iter()
                .find(|(q, s, _)| q == queue["name"].as_str().expect("name") && s == state)
                .map_or(0, |r| r.2);
            assert_eq!(
                n.as_i64(),
                Some(actual),
                "{} {state}: counter vs rows {rows:?}",
                queue["name"]
            );
            checked += actual;
        }
    }
    assert!(rows.iter().map(|r| r.2).sum::<i64>() == checked && checked > 0);
    assert!(
        rows.iter()
            .map(|r| r.1.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= 4,
        "varied states: {rows:?}"
    );
}
