//! A delivery's outcome is written only by the run that holds its job: a run whose lease was
//! lost (rescued while it sent) changes nothing; a discarded job ends its delivery; and no
//! delivery is ever left pending without a live job behind it.

use std::time::Duration;

use pier_db::{with_reader, with_tx};
use rand::Rng;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestApp, on_both_backends};
use crate::webhooks::{delivery_in, endpoint, id, publish, spawn, spawn_with, store_of};

on_both_backends!(
    a_stale_failure_after_a_rescue_changes_nothing,
    a_stale_success_after_a_rescue_changes_nothing,
    a_discarded_delivery_job_fails_its_delivery,
    a_retry_while_the_last_job_finishes_gets_a_job_of_its_own,
    switching_to_ordered_orders_what_is_published_after,
    every_pending_delivery_has_one_live_job_after_a_random_run,
);

/// The lease a delivery job holds, on the app's clock.
const LEASE: Duration = Duration::from_secs(30);

/// Every delivery that is pending has exactly one unfinished job; one waiting has none.
async fn assert_every_pending_delivery_has_one_live_job(app: &TestApp) {
    let rows: Vec<(String, String, i64)> = with_reader!(&app.db, pool => {
        sqlx::query_as(
            "SELECT d.id, d.state, (SELECT COUNT(*) FROM jobs j WHERE j.workspace_id = d.workspace_id \
             AND j.queue = 'pier.webhooks' AND j.unique_key LIKE d.id || '/%' \
             AND j.state IN ('scheduled', 'available', 'running', 'retryable')) \
             FROM webhook_deliveries d WHERE d.state IN ('pending', 'waiting')",
        )
        .fetch_all(pool)
        .await
    })
    .expect("deliveries and their jobs");
    for (delivery, state, jobs) in rows {
        let expected = i64::from(state == "pending");
        assert_eq!(
            jobs, expected,
            "{state} delivery {delivery} has {jobs} live jobs"
        );
    }
}

/// The first delivery of `event` as the API shows it.
async fn delivery_of(app: &TestApp, event: &Value) -> Value {
    let page = app
        .get_value(&format!("/v1/events/{}/deliveries", id(event)))
        .await;
    page["data"][0].clone()
}

/// Waits (in real time) until the endpoint has `n` attempts recorded.
async fn attempts_recorded(app: &TestApp, endpoint: &Value, n: usize) {
    let path = format!("/v1/webhook-endpoints/{}/attempts", id(endpoint));
    for _ in 0..300 {
        let page = app.get_value(&path).await;
        if page["data"].as_array().is_some_and(|a| a.len() >= n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} attempts were never recorded");
}

/// The delivery job's lease runs out while its request is still out (a node stalled in a
/// failover), and lease rescue hands the job to a new run.
async fn rescue_the_running_delivery(app: &TestApp) {
    app.clock.advance(LEASE + Duration::from_secs(1));
    let rescued = app.jobs.rescue_expired().await.expect("rescue");
    assert_eq!(rescued, 1, "the slow run's job is rescued");
    // Past the rescued job's backoff, so the new run claims it.
    app.clock.advance(Duration::from_secs(600));
}

async fn a_stale_failure_after_a_rescue_changes_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer([
        Reply::status(500).after(Duration::from_secs(3)),
        Reply::status(200),
    ]);
    let (endpoint, _) = endpoint(&app, json!({"url": receiver.url})).await;
    let event = publish(&app, json!({"type": "a.b", "payload": {}})).await;
    receiver.wait_for(1).await;
    rescue_the_running_delivery(&app).await;
    receiver.wait_for(2).await;
    delivery_in(&app, &event, "succeeded").await;
    // The first run's 500 comes back after the second run succeeded: logged, nothing else.
    attempts_recorded(&app, &endpoint, 2).await;
    let delivery = delivery_of(&app, &event).await;
    assert_eq!(
        delivery["state"], "succeeded",
        "a late failure reopened {delivery}"
    );
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    assert_eq!(delivery["last_status"], 200);
    assert_every_pending_delivery_has_one_live_job(&app).await;
}

async fn a_stale_success_after_a_rescue_changes_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer([
        Reply::status(200).after(Duration::from_secs(3)),
        Reply::status(500),
    ]);
    let (endpoint, _) = endpoint(&app, json!({"url": receiver.url})).await;
    let event = publish(&app, json!({"type": "a.b", "payload": {}})).await;
    receiver.wait_for(1).await;
    rescue_the_running_delivery(&app).await;
    receiver.wait_for(2).await;
    attempts_recorded(&app, &endpoint, 2).await;
    // The second run failed and scheduled a retry; the first run's late 200 must not end the
    // delivery under that retry (on an ordered endpoint the next delivery would go beside it).
    let delivery = delivery_of(&app, &event).await;
    assert_eq!(
        delivery["state"], "pending",
        "a late success ended {delivery}"
    );
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    assert_eq!(delivery["last_status"], 500);
    assert_every_pending_delivery_has_one_live_job(&app).await;
    // The retry still happens, and ends it.
    app.clock.advance(Duration::from_secs(3600));
    receiver.wait_for(3).await;
    delivery_in(&app, &event, "succeeded").await;
}

async fn a_discarded_delivery_job_fails_its_delivery(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer([Reply::status(200).after(Duration::from_secs(3))]);
    let (endpoint, _) = endpoint(&app, json!({"url": receiver.url, "ordered": true})).await;
    let event = publish(&app, json!({"type": "a.b", "payload": {"n": 1}})).await;
    let next = publish(&app, json!({"type": "a.b", "payload": {"n": 2}})).await;
    receiver.wait_for(1).await;
    // The job has no runs left: the rescue discards it.
    let mut tx = app.db.begin().await.expect("begin");
    with_tx!(&mut tx, conn => {
        sqlx::query("UPDATE jobs SET max_attempts = 1 WHERE queue = 'pier.webhooks'")
            .execute(conn)
            .await
            .map(drop)
    })
    .expect("one run only");
    tx.commit().await.expect("commit");
    app.clock.advance(LEASE + Duration::from_secs(1));
    app.jobs.rescue_expired().await.expect("rescue");
    let failed = delivery_in(&app, &event, "failed").await;
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("ran out of runs"), "{failed}");
    // The ordered endpoint's line moves on, and the late success changes nothing.
    receiver.wait_for(2).await;
    delivery_in(&app, &next, "succeeded").await;
    attempts_recorded(&app, &endpoint, 2).await;
    assert_eq!(delivery_of(&app, &event).await["state"], "failed");
    assert_every_pending_delivery_has_one_live_job(&app).await;
}

async fn a_retry_while_the_last_job_finishes_gets_a_job_of_its_own(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    endpoint(&app, json!({"url": receiver.url})).await;
    let event = publish(&app, json!({"type": "a.b", "payload": {}})).await;
    let delivery = delivery_in(&app, &event, "succeeded").await;
    // The delivery ended, but its job's completion is not recorded yet: it still runs.
    let mut tx = app.db.begin().await.expect("begin");
    with_tx!(&mut tx, conn => {
        sqlx::query(
            "UPDATE jobs SET state = 'running', lease_token = '0123456789abcdef0123456789abcdef', \
             lease_expires_at = run_at + 30000000 WHERE queue = 'pier.webhooks'",
        )
        .execute(conn)
        .await
        .map(drop)
    })
    .expect("the job runs again");
    tx.commit().await.expect("commit");
    let retried = app
        .post_json(
            &format!("/v1/deliveries/{}/retry", id(&delivery)),
            &json!({}),
        )
        .await;
    assert_eq!(retried.status(), 202);
    receiver.wait_for(2).await;
    let again = delivery_in(&app, &event, "succeeded").await;
    assert_eq!(again["attempts"], 2, "{again}");
}

async fn switching_to_ordered_orders_what_is_published_after(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer([
        Reply::status(500).after(Duration::from_secs(1)),
        Reply::status(500).after(Duration::from_secs(1)),
    ]);
    let (endpoint, _) = endpoint(&app, json!({"url": receiver.url})).await;
    let unordered = publish(&app, json!({"type": "a.b", "payload": {"n": 1}})).await;
    receiver.wait_for(1).await;
    let patched = app
        .request(
            Method::PATCH,
            &format!("/v1/webhook-endpoints/{}", id(&endpoint)),
        )
        .json(&json!({"ordered": true}))
        .send()
        .await
        .expect("sent");
    assert_eq!(patched.status(), 200);
    // Ordering starts with what is published after the switch: the first ordered delivery
    // does not wait for the unordered one still retrying, the second waits for the first.
    let first = publish(&app, json!({"type": "a.b", "payload": {"n": 2}})).await;
    let second = publish(&app, json!({"type": "a.b", "payload": {"n": 3}})).await;
    attempts_recorded(&app, &endpoint, 2).await;
    assert_eq!(delivery_of(&app, &second).await["state"], "waiting");
    app.clock.advance(Duration::from_secs(3600));
    delivery_in(&app, &first, "succeeded").await;
    delivery_in(&app, &second, "succeeded").await;
    delivery_in(&app, &unordered, "succeeded").await;
    assert_every_pending_delivery_has_one_live_job(&app).await;
}

/// Deliveries to a few endpoints (some ordered), receivers answering at random (fast or slow,
/// success or failure), lease rescues and clock moves between them; after it all settles,
/// every pending delivery has exactly one live job and every waiting one none.
async fn every_pending_delivery_has_one_live_job_after_a_random_run(backend: Backend) {
    let app = spawn_with(backend, &[("webhooks.retry_schedule", "0, 10s, 10s")]).await;
    let receivers = [Receiver::start().await, Receiver::start().await];
    for (n, receiver) in receivers.iter().enumerate() {
        let mut replies = Vec::new();
        let mut rng = rand::rng();
        for _ in 0..60 {
            let status = if rng.random_bool(0.6) { 200 } else { 500 };
            let delay = Duration::from_millis(rng.random_range(0..400));
            replies.push(Reply::status(status).after(delay));
        }
        receiver.answer(replies);
        endpoint(&app, json!({"url": receiver.url, "ordered": n == 0})).await;
    }
    for round in 0..4 {
        for n in 0..4 {
            publish(
                &app,
                json!({"type": "a.b", "payload": {"round": round, "n": n}}),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..300))).await;
        app.clock
            .advance(Duration::from_secs(rand::rng().random_range(1..40)));
        app.jobs.rescue_expired().await.expect("rescue");
    }
    // Settle: move time on until nothing is left in flight (failures end after three tries;
    // an idle worker looks for due jobs once a second).
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        app.clock.advance(Duration::from_secs(20));
        app.jobs.rescue_expired().await.expect("rescue");
        let unfinished: i64 = with_reader!(&app.db, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE state IN ('pending', 'waiting')",
            )
            .fetch_one(pool)
            .await
        })
        .expect("count");
        assert_every_pending_delivery_has_one_live_job(&app).await;
        if unfinished == 0 {
            return;
        }
    }
    let left: Vec<(String, String, i64)> = with_reader!(&app.db, pool => {
        sqlx::query_as(
            "SELECT id, state, attempts FROM webhook_deliveries WHERE state IN ('pending', 'waiting')",
        )
        .fetch_all(pool)
        .await
    })
    .expect("deliveries");
    panic!("deliveries still unfinished after the retries: {left:?}");
}

/// Runs `sql` (binding `id` as `$1`) in a transaction left open, holding its row locks.
async fn hold(app: &TestApp, sql: &str, id: &str) -> pier_db::Tx {
    let mut tx = app.db.begin().await.expect("begin");
    with_tx!(&mut tx, conn => sqlx::query(sql).bind(id).execute(conn).await.map(drop))
        .expect("statement in the holding transaction");
    tx
}

/// An ordered endpoint is deleted while an event is being published to it: the publish has
/// read the endpoint and waits for its row lock to number the delivery; the delete commits.
/// The event is published without a delivery there (the publisher's own write through the
/// outbox, a link create say, must not fail because of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn deleting_an_ordered_endpoint_during_a_publish_keeps_the_publish() {
    let app = spawn(Backend::postgres()).await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = endpoint(&app, json!({"url": receiver.url, "ordered": true})).await;
    let delete = hold(
        &app,
        "DELETE FROM webhook_endpoints WHERE id = $1",
        id(&endpoint),
    )
    .await;
    let request = app
        .request(Method::POST, "/v1/events")
        .json(&json!({"type": "a.b", "payload": {}}));
    let publish = tokio::spawn(async move { request.send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    delete.commit().await.expect("the delete commits");
    let response = publish.await.expect("task").expect("sent");
    assert_eq!(response.status(), 202);
    let event: Value = response.json().await.expect("json");
    let deliveries = app
        .get_value(&format!("/v1/events/{}/deliveries", id(&event)))
        .await;
    assert_eq!(deliveries["data"], json!([]));
}

/// Pruning picks an old event whose delivery has ended; a retry reopens that delivery before
/// the prune deletes it. The prune waits for the delivery's row lock, sees it pending, and
/// keeps the event: the retry is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn pruning_keeps_an_event_whose_delivery_was_reopened_meanwhile() {
    let app = spawn(Backend::postgres()).await;
    let receiver = Receiver::start().await;
    endpoint(&app, json!({"url": receiver.url})).await;
    let event = publish(&app, json!({"type": "a.b", "payload": {}})).await;
    let delivery = delivery_in(&app, &event, "succeeded").await;
    app.clock.advance(Duration::from_secs(31 * 24 * 3600));
    let reopen = hold(
        &app,
        "UPDATE webhook_deliveries SET state = 'pending' WHERE id = $1",
        id(&delivery),
    )
    .await;
    let store = store_of(&app);
    let prune = tokio::spawn(async move { store.prune(Duration::from_secs(30 * 24 * 3600)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    reopen.commit().await.expect("the reopen commits");
    let pruned = prune.await.expect("task").expect("pruned");
    assert_eq!(pruned, 0, "the event with a reopened delivery stays");
    assert_eq!(delivery_of(&app, &event).await["state"], "pending");
}
