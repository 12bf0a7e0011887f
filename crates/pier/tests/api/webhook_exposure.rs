//! What the webhook API shows of the places deliveries go: attempts keep a short excerpt of
//! readable answers only, and a viewer sees endpoint URLs without their query.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, TestApp, on_both_backends};
use crate::webhooks::{after_attempts, endpoint, id, publish, spawn};

on_both_backends!(
    attempts_keep_a_short_excerpt_of_readable_answers_only,
    viewers_see_endpoint_urls_without_their_query,
);

/// The attempt of `event`'s delivery, once one is recorded.
async fn attempt_of(app: &TestApp, endpoint: &Value, event: &Value) -> Value {
    after_attempts(app, event, 1).await;
    let attempts = app
        .get_value(&format!("/v1/webhook-endpoints/{}/attempts", id(endpoint)))
        .await;
    attempts["data"]
        .as_array()
        .expect("attempts")
        .iter()
        .find(|a| a["event_id"] == event["id"])
        .expect("the event's attempt")
        .clone()
}

async fn attempts_keep_a_short_excerpt_of_readable_answers_only(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = endpoint(&app, json!({"url": receiver.url})).await;
    let big = json!({"detail": "x".repeat(5000)}).to_string();
    let cases = [
        Reply::status(200).body("application/json", big.clone()),
        Reply::status(200).body("image/png", vec![0x89, b'P', b'N', b'G']),
        Reply::status(422).body("application/problem+json", r#"{"title":"no"}"#),
        Reply::status(302)
            .header("location", "http://127.0.0.1:1/elsewhere")
            .body("text/html", "<a href=/elsewhere>moved</a>"),
    ];
    let mut excerpts = Vec::new();
    // One at a time, so each event meets its answer; the failures wait for a retry that the
    // test's clock never reaches.
    for reply in cases {
        receiver.answer([reply]);
        let event = publish(&app, json!({"type": "a.b", "payload": {}})).await;
        let attempt = attempt_of(&app, &endpoint, &event).await;
        excerpts.push(attempt["response_body"].clone());
    }
    assert_eq!(excerpts[0], big[..512], "the first 512 bytes of the JSON");
    assert_eq!(excerpts[1], Value::Null, "an image keeps nothing");
    assert_eq!(
        excerpts[2], r#"{"title":"no"}"#,
        "a problem document is kept"
    );
    assert_eq!(excerpts[3], Value::Null, "a redirect keeps nothing");
}

async fn viewers_see_endpoint_urls_without_their_query(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start().await;
    let url = format!("{}?token=s3cret", receiver.url);
    let (endpoint, _) = endpoint(&app, json!({"url": url})).await;
    assert_eq!(endpoint["url"], url.as_str(), "its creator sees it whole");
    let path = format!("/v1/webhook-endpoints/{}", id(&endpoint));
    let (_, admin) = app.create_key("admin", None).await;
    let (_, member) = app.create_key("member", None).await;
    let (_, viewer) = app.create_key("viewer", None).await;
    for (key, expected) in [
        (&admin, url.as_str()),
        (&member, url.as_str()),
        (&viewer, receiver.url.as_str()),
    ] {
        let one: Value = app
            .call_as(key, Method::GET, &path)
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(one["url"], expected);
        let listed: Value = app
            .call_as(key, Method::GET, "/v1/webhook-endpoints")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(listed["data"][0]["url"], expected);
    }
}
