//! Throttled endpoints and fairness between workspaces: a throttled delivery waits in the
//! queue, not in a delivery slot, and a backlog in one workspace does not delay another's.

use std::time::{Duration, Instant};

use pier_db::with_reader;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::receiver::Receiver;
use crate::support::{Backend, TestApp, on_both_backends};
use crate::webhooks::{delivery_in, endpoint, publish, spawn, spawn_with};

on_both_backends!(
    throttled_endpoints_wait_for_their_rate,
    a_backlog_in_one_workspace_does_not_delay_another,
);

/// How many delivery jobs wait in the given state.
async fn delivery_jobs_in(app: &TestApp, state: &str) -> i64 {
    with_reader!(&app.db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE queue = 'pier.webhooks' AND state = $1")
            .bind(state)
            .fetch_one(pool)
            .await
    })
    .expect("count delivery jobs")
}

/// Waits (in real time, at most 10 s) until `n` delivery jobs are scheduled for later.
async fn scheduled_deliveries(app: &TestApp, n: i64) {
    for _ in 0..200 {
        if delivery_jobs_in(app, "scheduled").await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} delivery jobs never waited for their turn");
}

async fn throttled_endpoints_wait_for_their_rate(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    endpoint(
        &app,
        json!({"url": receiver.url, "rate_limit_per_second": 1}),
    )
    .await;
    let mut events = Vec::new();
    for n in 0..3 {
        events.push(publish(&app, json!({"type": "a.b", "payload": {"n": n}})).await);
    }
    // One a second on the app's clock, which stands still until the test moves it: the first
    // goes, the other two are given back to the queue for their turns, a second apart.
    receiver.wait_for(1).await;
    scheduled_deliveries(&app, 2).await;
    assert_eq!(receiver.received().len(), 1, "the others wait for the rate");
    app.clock.advance(Duration::from_secs(1));
    receiver.wait_for(2).await;
    scheduled_deliveries(&app, 1).await;
    assert_eq!(
        receiver.received().len(),
        2,
        "the third's turn is a second later"
    );
    app.clock.advance(Duration::from_secs(1));
    receiver.wait_for(3).await;
    for event in &events {
        let delivery = delivery_in(&app, event, "succeeded").await;
        assert_eq!(delivery["attempts"], 1, "waiting spends no attempt");
        assert_eq!(
            delivery["last_error"],
            Value::Null,
            "waiting records no error"
        );
    }
}

/// Workspace A's endpoint takes 5 deliveries a second and has 500 queued; workspace B's one
/// event still arrives at once, and A's endpoint gets no more than its rate meanwhile.
async fn a_backlog_in_one_workspace_does_not_delay_another(backend: Backend) {
    let app = spawn_with(backend, &[("webhooks.concurrency", "20")]).await;
    let slow = Receiver::start().await;
    endpoint(&app, json!({"url": slow.url, "rate_limit_per_second": 5})).await;
    for n in 0..500 {
        publish(&app, json!({"type": "a.b", "payload": {"n": n}})).await;
    }
    let store =
        pier_auth::WorkspaceStore::new(app.db.clone(), std::sync::Arc::new(app.clock.clone()));
    let (_, _, other) = store
        .create_with_owner_key(pier_auth::WorkspaceName::parse("b").expect("name"))
        .await
        .expect("workspace");
    let other = other.expose();
    let fast = Receiver::start().await;
    let created = app
        .request_as(other, Method::POST, "/v1/webhook-endpoints")
        .json(&json!({"url": fast.url}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    let published = Instant::now();
    let theirs = app
        .request_as(other, Method::POST, "/v1/events")
        .json(&json!({"type": "a.b", "payload": {}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(theirs.status(), 202);
    fast.wait_for(1).await;
    let waited = published.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "B's delivery waited {waited:?} behind A's backlog"
    );
    // The app's clock has not moved: A's endpoint got its burst (its rate) and no more, and
    // one second later on that clock at most one second's worth more.
    assert!(
        slow.received().len() <= 5,
        "{} sent to A",
        slow.received().len()
    );
    app.clock.advance(Duration::from_secs(1));
    slow.wait_for(6).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        slow.received().len() <= 10,
        "{} sent to A",
        slow.received().len()
    );
}
