//! Webhooks end to end: a real receiver on a local socket, deliveries sent by the in-process
//! workers, time moved on the manual clock. Signatures are checked with the receivers' crate.

use std::time::Duration;

use pier_core::{Clock, Timestamp};
use pier_webhook_verify::{Headers, SigningSecret, verify};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::receiver::{Received, Receiver, Reply};
use crate::support::{Backend, Options, TestApp, on_both_backends, problem};

on_both_backends!(
    deliveries_are_signed_the_standard_way,
    failures_follow_the_retry_schedule,
    gone_disables_the_endpoint_and_says_so,
    retry_after_pushes_the_next_attempt_back,
    rotation_signs_with_both_secrets_for_the_overlap,
    ordered_endpoints_deliver_one_at_a_time_in_order,
    ordered_endpoints_hold_concurrent_publishes_in_line,
    payloads_are_checked_and_deduplicated,
    private_targets_are_refused_by_default,
    link_changes_are_announced_only_when_they_commit,
    imported_links_are_announced_as_created,
    retry_and_recover_send_again,
    other_workspaces_see_nothing,
    signing_secrets_are_sealed_at_rest,
    discarded_jobs_are_announced,
    endpoints_failing_past_the_window_are_disabled,
    failures_days_apart_are_not_one_streak,
    old_history_is_pruned_once_its_deliveries_ended,
    ed25519_endpoints_are_verified_with_their_public_key,
    concurrent_publishes_each_get_their_own_outcome,
    schemas_hold_publishes_on_every_node_once_registered,
);

/// An app whose endpoints may be on loopback, where the test receiver listens.
pub(crate) async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, &[]).await
}

/// [`spawn`] with more settings.
pub(crate) async fn spawn_with(backend: Backend, settings: &[(&'static str, &str)]) -> TestApp {
    let mut all = vec![("allow_private_webhook_targets", "true".to_owned())];
    all.extend(settings.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let options = Options {
        settings: all,
        ..Options::default()
    };
    TestApp::spawn_with(backend, options).await
}

/// Creates an endpoint; returns it with its secret.
pub(crate) async fn endpoint(app: &TestApp, body: Value) -> (Value, SigningSecret) {
    let (status, created) = app.post_value("/v1/webhook-endpoints", &body).await;
    assert_eq!(status, 201, "{created}");
    let secret = SigningSecret::parse(created["secret"].as_str().expect("secret")).expect("whsec");
    (created, secret)
}

pub(crate) async fn publish(app: &TestApp, body: Value) -> Value {
    let (status, event) = app.post_value("/v1/events", &body).await;
    assert_eq!(status, 202, "{event}");
    event
}

/// A webhook store on the app's database and clock, for what the API does not reach (pruning).
pub(crate) fn store_of(app: &TestApp) -> pier_webhooks::WebhookStore {
    pier_webhooks::WebhookStore::new(
        app.db.clone(),
        std::sync::Arc::new(app.clock.clone()),
        app.jobs.clone(),
        pier_core::MasterKey::generate().derive("test"),
        pier_webhooks::Settings::default(),
        pier_webhooks::guard::Guard::new(true),
    )
}

pub(crate) fn id(value: &Value) -> &str {
    value["id"].as_str().expect("id")
}

/// The delivery of `event`, once it has settled in `state` (polled in real time).
pub(crate) async fn delivery_in(app: &TestApp, event: &Value, state: &str) -> Value {
    for _ in 0..200 {
        let page = app
            .get_value(&format!("/v1/events/{}/deliveries", id(event)))
            .await;
        if let Some(d) = page["data"].as_array().and_then(|d| d.first())
            && d["state"] == state
        {
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = app
        .get_value(&format!("/v1/events/{}/deliveries", id(event)))
        .await;
    panic!("the delivery of {} never became {state}: {now}", id(event));
}

/// The delivery of `event` once `n` attempts are recorded (polled in real time).
pub(crate) async fn after_attempts(app: &TestApp, event: &Value, n: u64) -> Value {
    for _ in 0..200 {
        let page = app
            .get_value(&format!("/v1/events/{}/deliveries", id(event)))
            .await;
        if let Some(d) = page["data"].as_array().and_then(|d| d.first())
            && d["attempts"].as_u64() >= Some(n)
        {
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the delivery of {} never made {n} attempts", id(event));
}

fn verifies(received: &Received, secrets: &[SigningSecret], now: i64) -> bool {
    let headers = Headers {
        id: received.header("webhook-id"),
        timestamp: received.header("webhook-timestamp"),
        signature: received.header("webhook-signature"),
    };
    verify(secrets, headers, &received.body, now).is_ok()
}

fn unix(app: &TestApp) -> i64 {
    app.clock.now().as_micros() / 1_000_000
}

/// How far in the future `at` (RFC 3339) is, in seconds.
fn seconds_until(app: &TestApp, at: &Value) -> i64 {
    let at = Timestamp::parse_rfc3339(at.as_str().expect("a time")).expect("RFC 3339");
    (at.as_micros() - app.clock.now().as_micros()) / 1_000_000
}

async fn deliveries_are_signed_the_standard_way(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    let (endpoint, secret) = endpoint(&app, json!({"url": receiver.url})).await;
    assert!(
        endpoint["secret"]
            .as_str()
            .expect("secret")
            .starts_with("whsec_")
    );
    let event = publish(
        &app,
        json!({"type": "invoice.paid", "payload": {"invoice": "in_1", "amount": 1200}}),
    )
    .await;

    let received = receiver.wait_for(1).await;
    let request = &received[0];
    assert_eq!(request.header("webhook-id"), id(&event));
    assert_eq!(request.header("content-type"), "application/json");
    assert!(request.header("user-agent").starts_with("Pier-Webhooks/"));
    let signature = request.header("webhook-signature");
    assert!(
        signature.starts_with("v1,") && !signature.contains(' '),
        "{signature}"
    );
    assert!(verifies(request, std::slice::from_ref(&secret), unix(&app)));
    let other = SigningSecret::from_bytes(vec![7; 32]).expect("secret");
    assert!(
        !verifies(request, &[other], unix(&app)),
        "another secret fails"
    );
    assert_eq!(
        request.json(),
        json!({"type": "invoice.paid", "timestamp": event["created_at"],
               "data": {"invoice": "in_1", "amount": 1200}})
    );

    let delivery = delivery_in(&app, &event, "succeeded").await;
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["last_status"], 200);
    let attempts = app
        .get_value(&format!("/v1/webhook-endpoints/{}/attempts", id(&endpoint)))
        .await;
    let attempt = &attempts["data"][0];
    assert_eq!(attempt["status_code"], 200);
    assert_eq!(attempt["response_body"], "received");
    assert_eq!(attempt["succeeded"], true);
    assert_eq!(attempt["delivery_id"], delivery["id"]);
}

async fn failures_follow_the_retry_schedule(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer([Reply::status(500), Reply::status(502)]);
    let (_, secret) = endpoint(&app, json!({"url": receiver.url})).await;
    let event = publish(&app, json!({"type": "a.b", "payload": {}})).await;

    let first = after_attempts(&app, &event, 1).await;
    assert_eq!(first["state"], "pending");
    let wait = seconds_until(&app, &first["next_attempt_at"]);
    assert!(
        (4..=6).contains(&wait),
        "about 5 s after the first failure: {wait}"
    );
    assert_eq!(first["last_status"], 500);

    // Not before its time.
    app.clock.advance(Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "the second attempt waits for its time"
    );

    app.clock.advance(Duration::from_secs(3));
    let second = after_attempts(&app, &event, 2).await;
    assert_eq!(second["last_status"], 502);
    let wait = seconds_until(&app, &second["next_attempt_at"]);
    assert!(
        (270..=330).contains(&wait),
        "about 5 min after the second: {wait}"
    );

    app.clock.advance(Duration::from_secs(331));
    let received = receiver.wait_for(3).await;
    let delivered = delivery_in(&app, &event, "succeeded").await;
    assert_eq!(delivered["attempts"], 3);
    // Every attempt carries the same id and body, freshly signed.
    assert!(
        received
            .iter()
            .all(|r| r.header("webhook-id") == id(&event))
    );
    assert!(received.windows(2).all(|w| w[0].body == w[1].body));
    assert!(verifies(&received[2], &[secret], unix(&app)));
}

async fn gone_disables_the_endpoint_and_says_so(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer([Reply::status(410)]);
    let url = format!("{}?token=s3cret", receiver.url);
    let (endpoint, _) = endpoint(&app, json!({"url": url, "event_types": ["a.b"]})).await;
    // A second endpoint hears about the first one's disabling.
    let watcher = Receiver::start().await;
    endpoint_for(&app, &watcher, &["webhook_endpoint.disabled"]).await;
    let event = publish(&app, json!({"type": "a.b", "payload": {}})).await;

    let failed = delivery_in(&app, &event, "failed").await;
    assert_eq!(failed["last_status"], 410);
    let now = app
        .get_value(&format!("/v1/webhook-endpoints/{}", id(&endpoint)))
        .await;
    assert_eq!(now["enabled"], false);
    assert_eq!(now["disabled_reason"], "gone");
    let notice = watcher.wait_for(1).await;
    let body = notice[0].json();
    assert_eq!(body["type"], "webhook_endpoint.disabled");
    assert_eq!(body["data"]["endpoint"]["id"], id(&endpoint));
    // Every role that reads webhooks reads events: the URL comes without its query.
    assert_eq!(body["data"]["endpoint"]["url"], receiver.url.as_str());
    assert_eq!(body["data"]["reason"], "gone");

    // Later events skip it; enabling it again clears the reason.
    let later = publish(&app, json!({"type": "a.b", "payload": {}})).await;
    let none = app
        .get_value(&format!("/v1/events/{}/deliveries", id(&later)))
        .await;
    assert_eq!(none["data"], json!([]));
    let response = app
        .request(
            Method::PATCH,
            &format!("/v1/webhook-endpoints/{}", id(&endpoint)),
        )
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"enabled": true}"#)
        .send()
        .await
        .expect("sent");
    let enabled: Value = response.json().await.expect("json");
    assert_eq!(enabled["enabled"], true);
    assert_eq!(enabled["disabled_reason"], Value::Null);
}

async fn endpoint_for(app: &TestApp, receiver: &Receiver, types: &[&str]) -> Value {
    endpoint(app, json!({"url": receiver.url, "event_types": types}))
        .await
        .0
}

async fn retry_after_pushes_the_next_attempt_back(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer([
        Reply::status(429).header("retry-after", "120"),
        Reply::status(503).header("retry-after", "999999"),
    ]);
    endpoint(&app, json!({"url": receiver.url})).await;
    let event = publish(&app, json!({"type": "a.b", "payload": {}})).await;
    let first = after_attempts(&app, &event, 1).await;
    let wait = seconds_until(&app, &first["next_attempt_at"]);
    assert!((119..=121).contains(&wait), "Retry-After 120 s: {wait}");

    app.clock.advance(Duration::from_secs(121));
    let second = after_attempts(&app, &event, 2).await;
    let wait = seconds_until(&app, &second["next_attempt_at"]);
    assert!(
        (3599..=3601).contains(&wait),
        "capped at max_retry_after: {wait}"
    );
}

async fn rotation_signs_with_both_secrets_for_the_overlap(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    let (endpoint, old) = endpoint(&app, json!({"url": receiver.url})).await;
    let path = format!("/v1/webhook-endpoints/{}/secret", id(&endpoint));
    assert_eq!(app.get_value(&path).await["secret"], old.to_whsec());
    let (status, rotated) = app.post_value(&format!("{path}/rotate"), &json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    let new = SigningSecret::parse(rotated["secret"].as_str().expect("secret")).expect("whsec");
    assert_ne!(new, old);
    assert_eq!(rotated["previous"], json!([old.to_whsec()]));

    publish(&app, json!({"type": "a.b", "payload": {}})).await;
    let request = &receiver.wait_for(1).await[0];
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
    assert!(verifies(request, std::slice::from_ref(&old), unix(&app)));
    assert!(verifies(request, std::slice::from_ref(&new), unix(&app)));

    // After the overlap, only the new secret signs.
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let shown = app.get_value(&path).await;
    assert_eq!(shown["secret"], new.to_whsec());
    assert_eq!(shown["previous"], json!([]));
    publish(&app, json!({"type": "a.b", "payload": {}})).await;
    let request = &receiver.wait_for(2).await[1];
    assert!(!request.header("webhook-signature").contains(' '));
    assert!(verifies(request, std::slice::from_ref(&new), unix(&app)));
    assert!(!verifies(request, &[old], unix(&app)));

    // Rotating again during an overlap ends it: two keys at most ever sign.
    let (_, first) = app.post_value(&format!("{path}/rotate"), &json!({})).await;
    let (_, second) = app.post_value(&format!("{path}/rotate"), &json!({})).await;
    assert_eq!(second["previous"], json!([first["secret"]]));
    publish(&app, json!({"type": "a.b", "payload": {}})).await;
    let request = &receiver.wait_for(3).await[2];
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
}

async fn ordered_endpoints_deliver_one_at_a_time_in_order(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer([Reply::status(500), Reply::status(500)]);
    endpoint(&app, json!({"url": receiver.url, "ordered": true})).await;
    let mut events = Vec::new();
    for n in 0..5 {
        events.push(publish(&app, json!({"type": "seq", "payload": {"n": n}})).await);
    }
    // The first fails and retries; the rest wait behind it.
    after_attempts(&app, &events[0], 1).await;
    delivery_in(&app, &events[1], "waiting").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "nothing overtakes a retrying event"
    );

    app.clock.advance(Duration::from_secs(6));
    after_attempts(&app, &events[0], 2).await;
    app.clock.advance(Duration::from_secs(331));
    let received = receiver.wait_for(7).await;
    let order: Vec<i64> = received
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(order, [0, 0, 0, 1, 2, 3, 4]);
    for event in &events {
        delivery_in(&app, event, "succeeded").await;
    }
}

/// Concurrent publishes (most of them sharing commits) queue behind one another on an ordered
/// endpoint: one delivery in flight, the rest waiting. One commit of several publishes with
/// nothing in flight is checked in `pier_webhooks::publish`'s own test.
async fn ordered_endpoints_hold_concurrent_publishes_in_line(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer([Reply::status(500)]);
    endpoint(&app, json!({"url": receiver.url, "ordered": true})).await;
    let events = futures_util::future::join_all(
        (0..100).map(|n| publish(&app, json!({"type": "seq", "payload": {"n": n}}))),
    )
    .await;
    receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "one delivery in flight; the rest wait behind its retry"
    );

    app.clock.advance(Duration::from_secs(6));
    let received = receiver.wait_for(101).await;
    let mut sent: Vec<i64> = received
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().expect("n"))
        .collect();
    assert_eq!(
        sent[0], sent[1],
        "the failed delivery is retried before any other"
    );
    sent.sort_unstable();
    sent.dedup();
    assert_eq!(
        sent,
        (0..100).collect::<Vec<i64>>(),
        "each event once, and all of them"
    );
    for event in &events {
        delivery_in(&app, event, "succeeded").await;
    }
}

async fn payloads_are_checked_and_deduplicated(backend: Backend) {
    let app = spawn(backend).await;
    let schema = json!({"type": "object", "required": ["invoice"],
                        "properties": {"invoice": {"type": "string"}}});
    let (status, created) = app
        .post_value(
            "/v1/event-types",
            &json!({"name": "invoice.paid", "description": "Paid", "schema": schema}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let again = app
        .post_json("/v1/event-types", &json!({"name": "invoice.paid"}))
        .await;
    problem(again, 409, "event_type_exists").await;
    let bad_schema = app
        .post_json(
            "/v1/event-types",
            &json!({"name": "x", "schema": {"type": "nonsense"}}),
        )
        .await;
    problem(bad_schema, 422, "validation_failed").await;
    let listed = app.get_value("/v1/event-types").await;
    assert_eq!(listed["data"][0]["name"], "invoice.paid");

    let mismatch = app
        .post_json(
            "/v1/events",
            &json!({"type": "invoice.paid", "payload": {"invoice": 7}}),
        )
        .await;
    let body = problem(mismatch, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["code"], "schema_mismatch", "{body}");

    let big = "x".repeat(256 * 1024);
    let too_large = app
        .post_json("/v1/events", &json!({"type": "blob", "payload": big}))
        .await;
    problem(too_large, 413, "payload_too_large").await;

    let event = json!({"type": "invoice.paid", "payload": {"invoice": "in_1"},
                       "event_id": "in_1-paid"});
    let first = publish(&app, event.clone()).await;
    let second = publish(&app, event).await;
    assert_eq!(id(&first), id(&second), "an event id publishes once");
    let reused = app
        .post_json(
            "/v1/events",
            &json!({"type": "invoice.paid", "payload": {"invoice": "in_2"},
                    "event_id": "in_1-paid"}),
        )
        .await;
    problem(reused, 409, "event_id_reused").await;
    let bad_name = app
        .post_json("/v1/events", &json!({"type": "no spaces", "payload": {}}))
        .await;
    assert_eq!(bad_name.status(), 422);
}

/// Publishes check their type's schema from a node's cache, yet follow a registration at once:
/// a type published before it was registered (remembered as "not registered") is held to its
/// schema from then on. On PostgreSQL node A registers and node B publishes (the invalidation
/// travels by `NOTIFY`, so B is given a moment, far less than the cache's life of "not
/// registered"); on SQLite one node does both, and its first answer must already be right.
async fn schemas_hold_publishes_on_every_node_once_registered(backend: Backend) {
    let a = spawn(backend).await;
    let other = a.another_node_if_shared().await;
    let (b, patience) = match &other {
        Some(b) => (b, Duration::from_secs(3)),
        None => (&a, Duration::ZERO),
    };
    let bad = json!({"type": "invoice.sent", "payload": {"invoice": 7}});
    let early = b.post_json("/v1/events", &bad).await;
    assert_eq!(early.status(), 202, "no schema yet: accepted");
    let schema = json!({"type": "object", "properties": {"invoice": {"type": "string"}}});
    let (status, created) = a
        .post_value(
            "/v1/event-types",
            &json!({"name": "invoice.sent", "schema": schema}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let response = b.post_json("/v1/events", &bad).await;
        if response.status() == 422 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a payload against the new schema still answers {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let good = json!({"type": "invoice.sent", "payload": {"invoice": "in_7"}});
    assert_eq!(b.post_json("/v1/events", &good).await.status(), 202);
}

/// Concurrent publishes share commits, yet each is answered with its own outcome: every good
/// event gets an id of its own and is delivered once; a repeated event id answers with its first
/// event; a reused event id, a payload failing its schema and an oversized payload each fail
/// alone, whatever they were gathered with.
async fn concurrent_publishes_each_get_their_own_outcome(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    endpoint_for(&app, &receiver, &[]).await;
    let schema = json!({"type": "object", "required": ["n"]});
    let (status, created) = app
        .post_value(
            "/v1/event-types",
            &json!({"name": "checked", "schema": schema}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let good = |n: usize| json!({"type": "order.created", "payload": {"n": n}});
    let with_id =
        |n: usize, id: &str| json!({"type": "checked", "payload": {"n": n}, "event_id": id});
    let mut bodies: Vec<Value> = (0..40).map(good).collect();
    for pair in 0..5 {
        // The same event twice (one event), and one id with two payloads (one is refused).
        bodies.push(with_id(pair, &format!("same-{pair}")));
        bodies.push(with_id(pair, &format!("same-{pair}")));
        bodies.push(with_id(0, &format!("reused-{pair}")));
        bodies.push(with_id(1, &format!("reused-{pair}")));
        bodies.push(json!({"type": "checked", "payload": {"m": pair}}));
        bodies.push(json!({"type": "big", "payload": "x".repeat(256 * 1024)}));
    }
    let answers = futures_util::future::join_all(bodies.iter().map(|body| async {
        let response = app.post_json("/v1/events", body).await;
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.expect("json"))
    }))
    .await;
    let good_ids: std::collections::HashSet<&str> = answers[..40]
        .iter()
        .map(|(status, event)| {
            assert_eq!(*status, 202, "{event}");
            id(event)
        })
        .collect();
    assert_eq!(good_ids.len(), 40, "every good event has an id of its own");
    let mut delivered = good_ids.clone();
    for (pair, group) in answers[40..].chunks(6).enumerate() {
        let statuses: Vec<u16> = group.iter().map(|(status, _)| *status).collect();
        assert_eq!(statuses[..2], [202, 202], "pair {pair}: {group:?}");
        assert_eq!(
            id(&group[0].1),
            id(&group[1].1),
            "an event id publishes once"
        );
        let mut reused = statuses[2..4].to_vec();
        reused.sort_unstable();
        assert_eq!(reused, [202, 409], "pair {pair}: {group:?}");
        assert_eq!(group[4].1["errors"][0]["code"], "schema_mismatch");
        assert_eq!(statuses[4..], [422, 413]);
        delivered.insert(id(&group[0].1));
        let winner = group[2..4].iter().find(|(status, _)| *status == 202);
        delivered.insert(id(&winner.expect("one publication of the id").1));
    }
    let received = receiver.wait_for(delivered.len()).await;
    let mut arrived: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    arrived.sort_unstable();
    let mut expected: Vec<&str> = delivered.into_iter().collect();
    expected.sort_unstable();
    assert_eq!(arrived, expected, "every event delivered once");
}

async fn private_targets_are_refused_by_default(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://127.1/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://localhost/",
        "ftp://example.com/",
        "http://user:pass@example.com/",
    ] {
        let response = app
            .post_json("/v1/webhook-endpoints", &json!({"url": url}))
            .await;
        let body = problem(response, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "url", "{url}: {body}");
    }
}

async fn link_changes_are_announced_only_when_they_commit(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    endpoint_for(
        &app,
        &receiver,
        &["link.created", "link.updated", "link.deleted"],
    )
    .await;
    let (status, link) = app
        .post_value(
            "/v1/links",
            &json!({"url": "https://example.com/a", "slug": "first"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .post_value(
            "/v1/links",
            &json!({"url": "https://example.com/b", "slug": "second"}),
        )
        .await;
    assert_eq!(status, 201);
    // Taking a slug that is in use fails and rolls back: no event.
    let response = app
        .request(Method::PATCH, &format!("/v1/links/{}", id(&link)))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"slug": "second"}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 409);
    let deleted = app
        .call(Method::DELETE, &format!("/v1/links/{}", id(&link)))
        .await;
    assert_eq!(deleted.status(), 204);

    receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Deliveries to an unordered endpoint may arrive in any order.
    let mut announced: Vec<(String, String)> = receiver
        .received()
        .iter()
        .map(|r| {
            let body = r.json();
            let slug = body["data"]["slug"].as_str().expect("slug").to_owned();
            (body["type"].as_str().expect("type").to_owned(), slug)
        })
        .collect();
    announced.sort();
    let expected = [
        ("link.created", "first"),
        ("link.created", "second"),
        ("link.deleted", "first"),
    ];
    assert_eq!(
        announced,
        expected.map(|(t, s)| (t.to_owned(), s.to_owned()))
    );
    let events = app.get_value("/v1/events?type=link.updated").await;
    assert_eq!(
        events["data"],
        json!([]),
        "the rolled-back update left no event"
    );
}

/// An import announces each link it creates, as a single create does; one it rolls back
/// announces nothing.
async fn imported_links_are_announced_as_created(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    endpoint_for(&app, &receiver, &["link.created"]).await;
    let import = async |query: &str, slugs: &[&str]| {
        let rows: Vec<String> = slugs
            .iter()
            .map(|slug| json!({"url": "https://example.com/", "slug": slug}).to_string())
            .collect();
        app.request(Method::POST, &format!("/v1/links/import{query}"))
            .header("content-type", "application/x-ndjson")
            .body(rows.join("\n"))
            .send()
            .await
            .expect("sent")
    };
    // One slug twice: the atomic import rolls back, and announces nothing.
    let refused = import("?atomic=true", &["a", "b", "a"]).await;
    problem(refused, 422, "validation_failed").await;
    let created = import("", &["x", "y", "z"]).await;
    assert_eq!(created.status(), 200);
    let report: Value = created.json().await.expect("json");
    assert_eq!(report["created"], 3);

    receiver.wait_for(3).await;
    let mut announced: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| {
            let body = r.json();
            assert_eq!(body["type"], "link.created");
            body["data"]["slug"].as_str().expect("slug").to_owned()
        })
        .collect();
    announced.sort();
    assert_eq!(announced, ["x", "y", "z"]);
    let events = app.get_value("/v1/events?type=link.created").await;
    assert_eq!(events["data"].as_array().expect("data").len(), 3);
}

async fn retry_and_recover_send_again(backend: Backend) {
    let receiver = Receiver::start().await;
    // One attempt per delivery, so failures end at once.
    let app = spawn_with(backend, &[("webhooks.retry_schedule", "0")]).await;
    receiver.answer([Reply::status(500), Reply::status(500)]);
    let (endpoint, _) = endpoint(&app, json!({"url": receiver.url})).await;
    let first = publish(&app, json!({"type": "a.b", "payload": {"n": 1}})).await;
    let second = publish(&app, json!({"type": "a.b", "payload": {"n": 2}})).await;
    let failed = delivery_in(&app, &first, "failed").await;
    delivery_in(&app, &second, "failed").await;

    let (status, retried) = app
        .post_value(&format!("/v1/deliveries/{}/retry", id(&failed)), &json!({}))
        .await;
    assert_eq!(status, 202, "{retried}");
    delivery_in(&app, &first, "succeeded").await;
    let again = app
        .post_json(&format!("/v1/deliveries/{}/retry", id(&failed)), &json!({}))
        .await;
    assert_eq!(
        again.status(),
        202,
        "a succeeded delivery can be sent again"
    );
    let since = app.clock.now().saturating_sub(Duration::from_secs(60));
    let (status, recovered) = app
        .post_value(
            &format!("/v1/webhook-endpoints/{}/recover", id(&endpoint)),
            &json!({"since": since.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, 202, "{recovered}");
    assert_eq!(recovered["recovered"], 1);
    delivery_in(&app, &second, "succeeded").await;
    let unknown = app
        .post_json(
            "/v1/deliveries/dlv_01m8hpqca6yrpxjm9wy9jmw19v/retry",
            &json!({}),
        )
        .await;
    problem(unknown, 404, "not_found").await;
}

async fn other_workspaces_see_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = endpoint(&app, json!({"url": receiver.url})).await;
    let event = publish(&app, json!({"type": "a.b", "payload": {}})).await;
    let delivery = delivery_in(&app, &event, "succeeded").await;
    let store =
        pier_auth::WorkspaceStore::new(app.db.clone(), std::sync::Arc::new(app.clock.clone()));
    let (_, _, other) = store
        .create_with_owner_key(pier_auth::WorkspaceName::parse("other").expect("name"))
        .await
        .expect("workspace");
    let endpoint_path = format!("/v1/webhook-endpoints/{}", id(&endpoint));
    for (method, path) in [
        (Method::GET, endpoint_path.clone()),
        (Method::DELETE, endpoint_path.clone()),
        (Method::GET, format!("{endpoint_path}/secret")),
        (Method::POST, format!("{endpoint_path}/secret/rotate")),
        (Method::GET, format!("{endpoint_path}/attempts")),
        (Method::GET, format!("/v1/events/{}", id(&event))),
        (Method::GET, format!("/v1/events/{}/deliveries", id(&event))),
        (
            Method::POST,
            format!("/v1/deliveries/{}/retry", id(&delivery)),
        ),
    ] {
        let response = app.call_as(other.expose(), method.clone(), &path).await;
        assert_eq!(response.status(), 404, "{method} {path}");
    }
    let listed = app
        .call_as(other.expose(), Method::GET, "/v1/webhook-endpoints")
        .await;
    let listed: Value = listed.json().await.expect("json");
    assert_eq!(listed["data"], json!([]));
    // Their events reach only their endpoints.
    let theirs = app
        .request_as(other.expose(), Method::POST, "/v1/events")
        .json(&json!({"type": "a.b", "payload": {}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(theirs.status(), 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1);
}

async fn signing_secrets_are_sealed_at_rest(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    let (endpoint, secret) = endpoint(&app, json!({"url": receiver.url})).await;
    let path = format!("/v1/webhook-endpoints/{}/secret/rotate", id(&endpoint));
    let (_, rotated) = app.post_value(&path, &json!({})).await;
    let stored = everything(&app).await;
    let rotated = SigningSecret::parse(rotated["secret"].as_str().expect("secret")).expect("whsec");
    for secret in [secret, rotated] {
        let text = secret.to_whsec();
        let base64 = text.trim_start_matches("whsec_");
        assert!(
            !contains(&stored, base64.as_bytes()),
            "a secret is stored in the clear"
        );
        assert!(
            !contains(&stored, secret.as_bytes()),
            "a secret's bytes are stored"
        );
    }
}

async fn discarded_jobs_are_announced(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    endpoint_for(&app, &receiver, &["job.discarded"]).await;
    let (status, job) = app
        .post_value("/v1/jobs", &json!({"kind": "report", "max_attempts": 1}))
        .await;
    assert_eq!(status, 201);
    let (_, claimed) = app
        .post_value("/v1/queues/default/claim", &json!({"max": 1}))
        .await;
    let token = &claimed["jobs"][0]["lease_token"];
    let (status, _) = app
        .post_value(
            &format!("/v1/jobs/{}/fail", id(&job)),
            &json!({"lease_token": token, "error": "the printer is on fire"}),
        )
        .await;
    assert_eq!(status, 200);
    let notice = receiver.wait_for(1).await[0].json();
    assert_eq!(notice["type"], "job.discarded");
    assert_eq!(notice["data"]["id"], id(&job));
    assert_eq!(notice["data"]["kind"], "report");
    assert_eq!(notice["data"]["error"], "the printer is on fire");
}

async fn endpoints_failing_past_the_window_are_disabled(backend: Backend) {
    let app = spawn_with(backend, &[("webhooks.retry_schedule", "0, 3d, 3d")]).await;
    let receiver = Receiver::start().await;
    receiver.answer([Reply::status(500), Reply::status(500), Reply::status(500)]);
    let (endpoint, _) = endpoint(&app, json!({"url": receiver.url})).await;
    let event = publish(&app, json!({"type": "a.b", "payload": {}})).await;
    after_attempts(&app, &event, 1).await;
    app.clock.advance(Duration::from_secs(84 * 3600));
    after_attempts(&app, &event, 2).await;
    let path = format!("/v1/webhook-endpoints/{}", id(&endpoint));
    assert_eq!(
        app.get_value(&path).await["enabled"],
        true,
        "3.5 days of failures"
    );
    app.clock.advance(Duration::from_secs(84 * 3600));
    let failed = delivery_in(&app, &event, "failed").await;
    assert_eq!(failed["attempts"], 3);
    let now = app.get_value(&path).await;
    assert_eq!(now["enabled"], false, "7 days of failures");
    assert_eq!(now["disabled_reason"], "failing");
}

/// One failure six days ago and one today are two short streaks, not six days of failing; a
/// success in between ends a streak too.
async fn failures_days_apart_are_not_one_streak(backend: Backend) {
    let app = spawn_with(backend, &[("webhooks.retry_schedule", "0")]).await;
    let receiver = Receiver::start().await;
    receiver.answer([Reply::status(500), Reply::status(500)]);
    let (endpoint, _) = endpoint(&app, json!({"url": receiver.url})).await;
    let failing_since = || async {
        pier_db::with_reader!(&app.db, pool => {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT failing_since FROM webhook_endpoints WHERE id = $1",
            )
            .bind(id(&endpoint))
            .fetch_one(pool)
            .await
        })
        .expect("the endpoint")
    };
    let first = publish(&app, json!({"type": "a.b", "payload": {}})).await;
    delivery_in(&app, &first, "failed").await;
    assert_eq!(failing_since().await, Some(app.clock.now().as_micros()));
    app.clock.advance(Duration::from_secs(6 * 24 * 3600));
    let second = publish(&app, json!({"type": "a.b", "payload": {}})).await;
    delivery_in(&app, &second, "failed").await;
    let path = format!("/v1/webhook-endpoints/{}", id(&endpoint));
    let now = app.get_value(&path).await;
    assert_eq!(now["enabled"], true, "two failures six days apart: {now}");
    let today = Some(app.clock.now().as_micros());
    assert_eq!(
        failing_since().await,
        today,
        "today's failure starts a new streak"
    );
    let third = publish(&app, json!({"type": "a.b", "payload": {}})).await;
    delivery_in(&app, &third, "succeeded").await;
    assert_eq!(failing_since().await, None, "a success ends the streak");
}

async fn old_history_is_pruned_once_its_deliveries_ended(backend: Backend) {
    let app = spawn_with(backend, &[("webhooks.disable_after_secs", "8640000")]).await;
    let fine = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.answer((0..10).map(|_| Reply::status(500)));
    let (to_fine, _) = endpoint(&app, json!({"url": fine.url, "event_types": ["a"]})).await;
    endpoint(&app, json!({"url": failing.url, "event_types": ["b"]})).await;
    let delivered = publish(&app, json!({"type": "a", "payload": {}})).await;
    let retrying = publish(&app, json!({"type": "b", "payload": {}})).await;
    delivery_in(&app, &delivered, "succeeded").await;
    after_attempts(&app, &retrying, 1).await;

    app.clock.advance(Duration::from_secs(31 * 24 * 3600));
    after_attempts(&app, &retrying, 2).await;
    let pruned = store_of(&app)
        .prune(Duration::from_secs(30 * 24 * 3600))
        .await
        .expect("pruned");
    assert_eq!(pruned, 1, "the event still being delivered stays");
    let events = app.get_value("/v1/events").await;
    let left: Vec<&str> = events["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(id)
        .collect();
    assert_eq!(left, [id(&retrying)]);
    let attempts = app
        .get_value(&format!("/v1/webhook-endpoints/{}/attempts", id(&to_fine)))
        .await;
    assert_eq!(attempts["data"], json!([]), "its attempts went with it");
}

async fn ed25519_endpoints_are_verified_with_their_public_key(backend: Backend) {
    use pier_webhook_verify::{PublicKey, verify_ed25519};

    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    let (endpoint, secret) = endpoint(&app, json!({"url": receiver.url, "ed25519": true})).await;
    assert_eq!(endpoint["ed25519"], true);
    let public =
        PublicKey::parse(endpoint["public_key"].as_str().expect("public key")).expect("whpk_");
    publish(&app, json!({"type": "a.b", "payload": {}})).await;
    let request = &receiver.wait_for(1).await[0];
    let signature = request.header("webhook-signature");
    let versions: Vec<&str> = signature
        .split(' ')
        .filter_map(|entry| entry.split_once(',').map(|(v, _)| v))
        .collect();
    assert_eq!(versions, ["v1", "v1a"]);
    let headers = Headers {
        id: request.header("webhook-id"),
        timestamp: request.header("webhook-timestamp"),
        signature,
    };
    assert_eq!(
        verify_ed25519(
            std::slice::from_ref(&public),
            headers,
            &request.body,
            unix(&app)
        ),
        Ok(())
    );
    assert!(
        verifies(request, &[secret], unix(&app)),
        "the HMAC signature is there too"
    );

    // Rotation: the old key signs beside the new one for the overlap.
    let path = format!("/v1/webhook-endpoints/{}/secret", id(&endpoint));
    let (_, rotated) = app.post_value(&format!("{path}/rotate"), &json!({})).await;
    assert_eq!(rotated["previous_public_keys"], json!([public.to_whpk()]));
    let new = PublicKey::parse(rotated["public_key"].as_str().expect("key")).expect("whpk_");
    publish(&app, json!({"type": "a.b", "payload": {}})).await;
    let request = &receiver.wait_for(2).await[1];
    let headers = Headers {
        id: request.header("webhook-id"),
        timestamp: request.header("webhook-timestamp"),
        signature: request.header("webhook-signature"),
    };
    for key in [public, new] {
        assert_eq!(
            verify_ed25519(&[key], headers, &request.body, unix(&app)),
            Ok(())
        );
    }

    // Turned off, it signs with HMAC alone; an endpoint without it has no public key.
    let response = app
        .request(
            Method::PATCH,
            &format!("/v1/webhook-endpoints/{}", id(&endpoint)),
        )
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"ed25519": false}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    publish(&app, json!({"type": "a.b", "payload": {}})).await;
    let request = &receiver.wait_for(3).await[2];
    assert!(!request.header("webhook-signature").contains("v1a,"));
    let (plain, _) = endpoint_plain(&app, &receiver).await;
    assert_eq!(plain["public_key"], Value::Null);
}

async fn endpoint_plain(app: &TestApp, receiver: &Receiver) -> (Value, SigningSecret) {
    endpoint(app, json!({"url": receiver.url, "event_types": ["none"]})).await
}

async fn everything(app: &TestApp) -> Vec<u8> {
    crate::support::everything_stored(app).await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// An endpoint changed through one node is sent to as changed by another at once: the change
/// reaches every node's endpoint cache through PostgreSQL. Node A serves the API only, so every
/// delivery is node B's, whose cache holds the endpoint after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn endpoint_changes_reach_the_node_that_delivers() {
    let a = spawn_with(Backend::postgres(), &[("role", "api")]).await;
    let _b = a
        .another_node_with(Options {
            settings: vec![("allow_private_webhook_targets", "true".to_owned())],
            ..Options::default()
        })
        .await;
    let (before, after) = (Receiver::start().await, Receiver::start().await);
    let (endpoint, _) = endpoint(&a, json!({"url": before.url})).await;
    publish(&a, json!({"type": "a.b", "payload": {"n": 1}})).await;
    before.wait_for(1).await;

    let response = a
        .request(
            Method::PATCH,
            &format!("/v1/webhook-endpoints/{}", id(&endpoint)),
        )
        .header("content-type", "application/merge-patch+json")
        .body(json!({"url": after.url}).to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    // The notification travels through PostgreSQL: allow it a moment, far below the cache TTL.
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish(&a, json!({"type": "a.b", "payload": {"n": 2}})).await;
    let arrived = after.wait_for(1).await;
    assert_eq!(arrived[0].json()["data"]["n"], 2);
    assert_eq!(
        before.received().len(),
        1,
        "the old URL got the second event"
    );
}
