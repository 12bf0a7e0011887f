//! Feature flags over HTTP: management with cursors and `If-Match`, the flagd document, the
//! audit trail and its events, faults named by path, OFREP evaluation (single, bulk with
//! `ETag`/304, its error shapes), permissions, tenants, a change reaching another node, and the
//! server-sent change stream.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Options, TestApp, on_both_backends, problem};

on_both_backends!(
    flags_are_created_listed_changed_and_deleted,
    bad_definitions_are_422_naming_the_path,
    documents_import_and_export_whole_workspaces,
    ofrep_evaluates_one_flag_and_all_of_them,
    keys_need_the_flag_permissions,
    a_key_of_one_workspace_never_evaluates_anothers_flags,
    a_change_reaches_evaluations_on_every_node,
    the_stream_sends_the_document_then_each_change_and_resumes,
    streams_are_bounded_per_workspace_and_need_flags_read,
    a_stream_ends_cleanly_when_its_node_drains,
    a_stream_ends_in_time_so_a_revoked_key_stops_following,
    bulk_answers_kept_for_polls_follow_changes_and_the_clock,
);

fn rollout() -> Value {
    json!({
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": "off",
        "targeting": {"fractional": [["on", 50], ["off", 50]]}
    })
}

async fn create(app: &TestApp, key: &str, definition: Value) -> reqwest::Response {
    app.post_json("/v1/flags", &json!({"key": key, "definition": definition}))
        .await
}

async fn send(app: &TestApp, method: Method, path: &str, body: &Value) -> reqwest::Response {
    app.request(method, path)
        .json(body)
        .send()
        .await
        .expect("sent")
}

async fn evaluate_as(app: &TestApp, key: &str, flag: &str, context: Value) -> (u16, Value) {
    let response = app
        .request_as(
            key,
            Method::POST,
            &format!("/ofrep/v1/evaluate/flags/{flag}"),
        )
        .json(&json!({"context": context}))
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn flags_are_created_listed_changed_and_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = create(&app, "checkout", rollout()).await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["location"], "/v1/flags/checkout");
    let etag = created.headers()["etag"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = created.json().await.expect("json");
    assert_eq!(
        (body["key"].clone(), body["version"].clone()),
        (json!("checkout"), json!(1))
    );
    assert_eq!(body["definition"], rollout());
    problem(
        create(&app, "checkout", rollout()).await,
        409,
        "flag_exists",
    )
    .await;

    for key in ["a-flag", "b-flag", "c-flag"] {
        assert_eq!(create(&app, key, rollout()).await.status(), 201);
    }
    let first = app.get_value("/v1/flags?limit=2").await;
    let keys = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|f| f["key"].as_str().expect("key").to_owned())
            .collect()
    };
    assert_eq!(keys(&first), ["a-flag", "b-flag"]);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = app
        .get_value(&format!("/v1/flags?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(keys(&second), ["c-flag", "checkout"]);
    assert_eq!(second["has_more"], false);

    // A merge patch of the definition, conditional on the ETag.
    let patch = json!({"definition": {"state": "DISABLED"}});
    let stale = app
        .request(Method::PATCH, "/v1/flags/checkout")
        .header("if-match", "\"stale\"")
        .json(&patch)
        .send()
        .await
        .expect("sent");
    problem(stale, 412, "precondition_failed").await;
    let patched = app
        .request(Method::PATCH, "/v1/flags/checkout")
        .header("if-match", &etag)
        .json(&patch)
        .send()
        .await
        .expect("sent");
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.expect("json");
    assert_eq!(
        (
            patched["version"].clone(),
            patched["definition"]["state"].clone()
        ),
        (json!(2), json!("DISABLED"))
    );
    assert_eq!(patched["definition"]["targeting"], rollout()["targeting"]);

    let mut replacement = rollout();
    replacement["defaultVariant"] = json!("on");
    let replaced = send(
        &app,
        Method::PUT,
        "/v1/flags/checkout",
        &json!({"definition": replacement}),
    )
    .await;
    assert_eq!(replaced.status(), 200);

    let deleted = app.call(Method::DELETE, "/v1/flags/checkout").await;
    assert_eq!(deleted.status(), 204);
    problem(app.get("/v1/flags/checkout").await, 404, "not_found").await;

    // The trail outlives the flag, newest first, with what changed.
    let changes = app.get_value("/v1/flags/checkout/changes").await;
    let changes = changes["data"].as_array().expect("data");
    let actions: Vec<&str> = changes
        .iter()
        .map(|c| c["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["deleted", "updated", "updated", "created"]);
    assert_eq!(changes[2]["diff"], json!({"state": "DISABLED"}));
    assert_eq!(
        changes[1]["diff"],
        json!({"state": "ENABLED", "defaultVariant": "on"})
    );

    // Every change was published through the outbox, in its transaction.
    for (event, count) in [
        ("flag.created", 4),
        ("flag.updated", 2),
        ("flag.deleted", 1),
    ] {
        let events = app.get_value(&format!("/v1/events?type={event}")).await;
        assert_eq!(
            events["data"].as_array().expect("data").len(),
            count,
            "{event}: {events}"
        );
    }
}

async fn bad_definitions_are_422_naming_the_path(backend: Backend) {
    let app = spawn_with_setting(backend, "flags.max_document_bytes", "2048").await;
    let field = |body: &Value| {
        body["errors"][0]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let mut unknown_op = rollout();
    unknown_op["targeting"] = json!({"if": [{"regex": ["a", "b"]}, "on", "off"]});
    // Arrays count as levels: 70 of them stay within what a JSON parser reads (128).
    let mut deep = json!(1);
    for _ in 0..70 {
        deep = json!([deep]);
    }
    let mut too_deep = rollout();
    too_deep["targeting"] = json!({"in": [1, deep]});
    let cases = [
        (
            json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "nope"}),
            "definition.defaultVariant",
        ),
        (
            json!({"state": "ENABLED", "defaultVariant": "on"}),
            "definition.variants",
        ),
        (unknown_op, "definition.targeting.if[0].regex"),
    ];
    for (definition, path) in cases {
        let body = problem(
            create(&app, "bad", definition).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(field(&body), path, "{body}");
    }
    let body = problem(
        create(&app, "bad", too_deep).await,
        422,
        "validation_failed",
    )
    .await;
    assert!(
        field(&body).starts_with("definition.targeting.in[1][0][0]"),
        "{body}"
    );
    let body = problem(
        create(&app, "bad key", rollout()).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(field(&body), "key");

    let cycle = json!({
        "$evaluators": {"a": {"!": [{"$ref": "b"}]}, "b": {"!": [{"$ref": "a"}]}},
        "flags": {"f": {"state": "ENABLED", "variants": {"on": true, "off": false},
                        "defaultVariant": "on", "targeting": {"if": [{"$ref": "a"}, "on", "off"]}}}
    });
    let body = problem(
        send(&app, Method::PUT, "/v1/flags/document", &cycle).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["code"], "evaluator_cycle", "{body}");
    assert_eq!(field(&body), "$evaluators.b.![0].$ref", "{body}");
    let mut big = serde_json::Map::new();
    for i in 0..40 {
        big.insert(format!("flag-{i}"), rollout());
    }
    let body = problem(
        send(
            &app,
            Method::PUT,
            "/v1/flags/document",
            &json!({"flags": big}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(
        (field(&body), body["errors"][0]["code"].clone()),
        ("document".to_owned(), json!("too_large"))
    );
    // Nothing was stored by any of it.
    assert_eq!(app.get_value("/v1/flags").await["data"], json!([]));
}

async fn documents_import_and_export_whole_workspaces(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(create(&app, "old", rollout()).await.status(), 201);
    let document = json!({
        "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@pier.dev"]}},
        "flags": {
            "banner": {"state": "ENABLED", "variants": {"show": {"text": "hi"}, "hide": {}},
                       "defaultVariant": "hide", "targeting": {"if": [{"$ref": "staff"}, "show", null]}},
            "limit": {"state": "ENABLED", "variants": {"low": 10, "high": 100}, "defaultVariant": "low"}
        }
    });
    let imported = send(&app, Method::PUT, "/v1/flags/document", &document).await;
    assert_eq!(imported.status(), 200);
    let imported: Value = imported.json().await.expect("json");
    assert_eq!(
        imported,
        json!({"created": ["banner", "limit"], "updated": [], "deleted": ["old"], "unchanged": 0})
    );
    let exported = app.get_value("/v1/flags/document").await;
    let keys: Vec<&String> = exported["flags"]
        .as_object()
        .expect("flags")
        .keys()
        .collect();
    assert_eq!(keys, ["banner", "limit"]);
    assert_eq!(
        exported["flags"]["banner"]["targeting"],
        json!({"if": [{"ends_with": [{"var": ["email"]}, "@pier.dev"]}, "show", null]})
    );
    // Importing the export changes nothing.
    let again: Value = send(&app, Method::PUT, "/v1/flags/document", &exported)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["unchanged"], 2);
    let (status, body) = evaluate_as(
        &app,
        &app.owner_key,
        "banner",
        json!({"email": "ana@pier.dev"}),
    )
    .await;
    assert_eq!(
        (status, body["value"].clone(), body["reason"].clone()),
        (200, json!({"text": "hi"}), json!("TARGETING_MATCH"))
    );
}

async fn ofrep_evaluates_one_flag_and_all_of_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(create(&app, "rollout", rollout()).await.status(), 201);
    let kill = json!({"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"});
    assert_eq!(create(&app, "kill", kill).await.status(), 201);
    let owner = app.owner_key.clone();

    // The same user lands in the same bucket every time; users spread over both.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let context = json!({"targetingKey": format!("user-{i}")});
        let (status, first) = evaluate_as(&app, &owner, "rollout", context.clone()).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["reason"], "TARGETING_MATCH");
        assert_eq!(evaluate_as(&app, &owner, "rollout", context).await.1, first);
        seen.insert(first["variant"].as_str().expect("variant").to_owned());
    }
    assert_eq!(seen.len(), 2);
    let (status, body) = evaluate_as(&app, &owner, "kill", json!({})).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"key": "kill", "reason": "DISABLED", "metadata": {}})
        )
    );
    let (status, body) = evaluate_as(&app, &owner, "missing", json!({})).await;
    assert_eq!(
        (status, body["errorCode"].clone(), body["key"].clone()),
        (404, json!("FLAG_NOT_FOUND"), json!("missing"))
    );
    let (status, body) = evaluate_as(&app, &owner, "rollout", json!("not an object")).await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (400, json!("INVALID_CONTEXT"))
    );
    let (status, body) = evaluate_as(&app, &owner, "rollout", json!({"targetingKey": 7})).await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (400, json!("INVALID_CONTEXT"))
    );

    let bulk = |etag: Option<String>| {
        let mut request = app
            .request(Method::POST, "/ofrep/v1/evaluate/flags")
            .json(&json!({"context": {"targetingKey": "user-1"}}));
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        async move { request.send().await.expect("sent") }
    };
    let first = bulk(None).await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().expect("ascii").to_owned();
    let body: Value = first.json().await.expect("json");
    let keys: Vec<&str> = body["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .map(|f| f["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["kill", "rollout"]);
    let unchanged = bulk(Some(etag.clone())).await;
    assert_eq!(unchanged.status(), 304);
    assert_eq!(unchanged.headers()["etag"], etag.as_str());
    // A change of any flag moves the tag.
    let patch = json!({"definition": {"state": "ENABLED"}});
    assert_eq!(
        send(&app, Method::PATCH, "/v1/flags/kill", &patch)
            .await
            .status(),
        200
    );
    let changed = bulk(Some(etag.clone())).await;
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"], etag.as_str());
}

async fn keys_need_the_flag_permissions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(create(&app, "rollout", rollout()).await.status(), 201);
    // A front end's key: evaluation only.
    let (_, front_end) = app.create_key("member", Some(&["flags:evaluate"])).await;
    let (status, _) = evaluate_as(&app, &front_end, "rollout", json!({"targetingKey": "u"})).await;
    assert_eq!(status, 200);
    problem(
        app.call_as(&front_end, Method::GET, "/v1/flags").await,
        403,
        "forbidden",
    )
    .await;
    let (_, reader) = app.create_key("viewer", None).await;
    assert_eq!(
        app.call_as(&reader, Method::GET, "/v1/flags/rollout")
            .await
            .status(),
        200
    );
    let write = app
        .request_as(&reader, Method::POST, "/v1/flags")
        .json(&json!({"key": "x", "definition": rollout()}))
        .send()
        .await
        .expect("sent");
    problem(write, 403, "forbidden").await;
    let (_, jobs_only) = app.create_key("member", Some(&["jobs:read"])).await;
    let refused = app
        .request_as(&jobs_only, Method::POST, "/ofrep/v1/evaluate/flags/rollout")
        .json(&json!({"context": {}}))
        .send()
        .await
        .expect("sent");
    problem(refused, 403, "forbidden").await;
}

async fn a_key_of_one_workspace_never_evaluates_anothers_flags(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(
        create(&app, "secret-feature", rollout()).await.status(),
        201
    );
    let other = another_workspace(&app).await;
    let (status, body) =
        evaluate_as(&app, &other, "secret-feature", json!({"targetingKey": "u"})).await;
    assert_eq!(
        (status, body["errorCode"].clone()),
        (404, json!("FLAG_NOT_FOUND"))
    );
    let bulk: Value = app
        .request_as(&other, Method::POST, "/ofrep/v1/evaluate/flags")
        .json(&json!({"context": {}}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(bulk["flags"], json!([]));
    problem(
        app.call_as(&other, Method::GET, "/v1/flags/secret-feature")
            .await,
        404,
        "not_found",
    )
    .await;
    let exported: Value = app
        .call_as(&other, Method::GET, "/v1/flags/document")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(exported["flags"], json!({}));
    // The same key in the other workspace is its own flag, and changes nothing here.
    let theirs = app
        .request_as(&other, Method::POST, "/v1/flags")
        .json(&json!({"key": "secret-feature", "definition": {"state": "DISABLED", "variants": {"on": true}}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(theirs.status(), 201);
    let (_, mine) = evaluate_as(
        &app,
        &app.owner_key,
        "secret-feature",
        json!({"targetingKey": "u"}),
    )
    .await;
    assert_eq!(mine["reason"], "TARGETING_MATCH");
}

/// An app with one setting changed.
async fn spawn_with_setting(backend: Backend, setting: &'static str, value: &str) -> TestApp {
    let settings = vec![(setting, value.to_owned())];
    TestApp::spawn_with(
        backend,
        Options {
            settings,
            ..Options::default()
        },
    )
    .await
}

/// The owner key of a new workspace beside the app's.
async fn another_workspace(app: &TestApp) -> String {
    let (_, _, key) =
        pier_auth::WorkspaceStore::new(app.db.clone(), std::sync::Arc::new(app.clock.clone()))
            .create_with_owner_key(pier_auth::WorkspaceName::parse("other").expect("name"))
            .await
            .expect("workspace");
    key.expose().to_owned()
}

async fn a_change_reaches_evaluations_on_every_node(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let other = a.another_node_if_shared().await;
    let b = other.as_ref().unwrap_or(&a);
    let kill =
        json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"});
    assert_eq!(create(&a, "switch", kill).await.status(), 201);
    let owner = a.owner_key.clone();
    // B reads (and caches) the flag as it is now.
    assert_eq!(wait_for_value(b, &owner, json!(true)).await, json!(true));
    let patch = json!({"definition": {"state": "DISABLED"}});
    assert_eq!(
        send(&a, Method::PATCH, "/v1/flags/switch", &patch)
            .await
            .status(),
        200
    );
    assert_eq!(wait_for_value(b, &owner, Value::Null).await, Value::Null);
}

/// Polls node `app` until flag `switch` evaluates to `want` (null: the caller's default), or
/// gives up after many tries, returning what it saw last.
async fn wait_for_value(app: &TestApp, key: &str, want: Value) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        let (_, body) = evaluate_as(app, key, "switch", json!({})).await;
        last = body.get("value").cloned().unwrap_or(Value::Null);
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    last
}

/// One server-sent event.
#[derive(Debug)]
struct Sse {
    event: String,
    id: String,
    data: Value,
}

/// A `GET /v1/flags/stream` response read event by event.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(app: &TestApp, key: &str, last_event_id: Option<&str>) -> reqwest::Response {
        let mut request = app.request_as(key, Method::GET, "/v1/flags/stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.expect("sent")
    }

    async fn start(app: &TestApp, last_event_id: Option<&str>) -> Self {
        Self::start_as(app, &app.owner_key, last_event_id).await
    }

    /// A stream opened with `key`, past its reconnect advice.
    async fn start_as(app: &TestApp, key: &str, last_event_id: Option<&str>) -> Self {
        let response = Self::open(app, key, last_event_id).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut stream = Self {
            response,
            buffer: String::new(),
        };
        let first = stream.next_block().await.expect("the first block");
        assert_eq!(first, "retry: 2000", "reconnect advice first");
        stream
    }

    /// The next block of lines up to a blank line, skipping keep-alive comments; `None` once
    /// the stream ended cleanly.
    async fn next_block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let block = block.trim_end().to_owned();
                if block.starts_with(':') {
                    continue;
                }
                return Some(block);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("the stream did not break");
            self.buffer
                .push_str(std::str::from_utf8(&chunk?).expect("UTF-8"));
        }
    }

    async fn next(&mut self) -> Sse {
        let block = self.next_block().await.expect("another event");
        let field = |name: &str| {
            block
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {block}"))
                .to_owned()
        };
        Sse {
            event: field("event: "),
            id: field("id: "),
            data: serde_json::from_str(&field("data: ")).expect("JSON data"),
        }
    }
}

async fn the_stream_sends_the_document_then_each_change_and_resumes(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let other = a.another_node_if_shared().await;
    // The stream is on B, the changes on A: B's stream hears of them through the database.
    let b = other.as_ref().unwrap_or(&a);
    assert_eq!(create(&a, "banner", rollout()).await.status(), 201);
    let mut stream = Stream::start(b, None).await;
    let document = stream.next().await;
    assert_eq!(document.event, "document");
    assert_eq!(document.data["flags"]["banner"], rollout());

    let patch = json!({"definition": {"state": "DISABLED"}});
    let patched = send(&a, Method::PATCH, "/v1/flags/banner", &patch).await;
    assert_eq!(patched.status(), 200);
    let changed = stream.next().await;
    assert_eq!(changed.event, "change");
    assert_eq!(changed.data["key"], "banner");
    assert_eq!(changed.data["action"], "updated");
    assert_eq!(changed.data["version"], 2);
    assert_eq!(changed.data["definition"]["state"], "DISABLED");
    let ids = [&document.id, &changed.id].map(|id| id.parse::<i64>().expect("numeric id"));
    assert!(ids[0] < ids[1], "ids grow: {ids:?}");

    // Away from the stream, a flag is created and another deleted; resuming gets just those.
    drop(stream);
    assert_eq!(create(&a, "checkout", rollout()).await.status(), 201);
    let deleted = a.call(Method::DELETE, "/v1/flags/banner").await;
    assert_eq!(deleted.status(), 204);
    let mut resumed = Stream::start(b, Some(&changed.id)).await;
    let created = resumed.next().await;
    assert_eq!(
        (created.event.as_str(), &created.data["action"]),
        ("change", &json!("created"))
    );
    assert_eq!(created.data["definition"], rollout());
    let gone = resumed.next().await;
    assert_eq!(gone.data["action"], "deleted");
    assert_eq!(gone.data.get("definition"), None);

    // An id this workspace's feed never gave starts over with the document.
    let mut fresh = Stream::start(b, Some("999999999")).await;
    let document = fresh.next().await;
    assert_eq!(document.event, "document");
    assert_eq!(document.id, gone.id);
    assert_eq!(document.data["flags"], json!({"checkout": rollout()}));

    let garbage = Stream::open(b, &a.owner_key, Some("yesterday")).await;
    problem(garbage, 400, "invalid_last_event_id").await;
}

async fn streams_are_bounded_per_workspace_and_need_flags_read(backend: Backend) {
    let app = spawn_with_setting(backend, "flags.max_streams_per_workspace", "1").await;
    let mut first = Stream::start(&app, None).await;
    assert_eq!(first.next().await.event, "document");
    let second = Stream::open(&app, &app.owner_key, None).await;
    assert_eq!(second.headers()["retry-after"], "5");
    problem(second, 503, "too_many_streams").await;

    // Another workspace has slots of its own.
    let other_key = another_workspace(&app).await;
    let mut their_stream = Stream::open(&app, &other_key, None).await;
    assert_eq!(their_stream.status(), 200);
    assert!(their_stream.chunk().await.expect("chunk").is_some());

    let (_, evaluator) = app.create_key("member", Some(&["flags:evaluate"])).await;
    let refused = Stream::open(&app, &evaluator, None).await;
    problem(refused, 403, "forbidden").await;
}

async fn a_stream_ends_cleanly_when_its_node_drains(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let mut stream = Stream::start(&app, None).await;
    assert_eq!(stream.next().await.event, "document");
    app.trigger_shutdown();
    // Ended by the server with the body's last chunk, not cut off when the grace ran out.
    assert_eq!(stream.next_block().await, None);
    app.join().await.expect("the node stops");
}

async fn a_stream_ends_in_time_so_a_revoked_key_stops_following(backend: Backend) {
    let app = spawn_with_setting(backend, "flags.stream_max_secs", "1").await;
    let (id, reader) = app.create_key("member", Some(&["flags:read"])).await;
    let mut stream = Stream::start_as(&app, &reader, None).await;
    assert_eq!(stream.next().await.event, "document");
    let revoked = app
        .call(Method::DELETE, &format!("/v1/api-keys/{id}"))
        .await;
    assert_eq!(revoked.status(), 204);
    // The server ends the stream cleanly after its second; the reconnect is refused.
    assert_eq!(stream.next_block().await, None);
    let again = Stream::open(&app, &reader, None).await;
    problem(again, 401, "unauthorized").await;
}

/// A bulk answer kept for a context that polls again is never served past a change of the
/// flags, nor, for a flag that reads `$flagd.timestamp`, past its second.
async fn bulk_answers_kept_for_polls_follow_changes_and_the_clock(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let soon = pier_core::Clock::now(&app.clock).as_unix_seconds() + 60;
    let launch = json!({"state": "ENABLED", "variants": {"on": true, "off": false},
        "defaultVariant": "off",
        "targeting": {"if": [{">=": [{"var": "$flagd.timestamp"}, soon]}, "on", "off"]}});
    assert_eq!(create(&app, "launch", launch).await.status(), 201);
    assert_eq!(create(&app, "banner", rollout()).await.status(), 201);
    let bulk = || async {
        let response = app
            .request(Method::POST, "/ofrep/v1/evaluate/flags")
            .json(&json!({"context": {"targetingKey": "user-42"}}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        let etag = response.headers()["etag"]
            .to_str()
            .expect("etag")
            .to_owned();
        let body: Value = response.json().await.expect("json");
        let values: Vec<Value> = body["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .map(|flag| flag["value"].clone())
            .collect();
        (etag, values)
    };
    let (first, values) = bulk().await;
    assert_eq!(
        bulk().await,
        (first.clone(), values.clone()),
        "the same poll, the same answer"
    );
    let banner = values[0].clone();
    assert_eq!(values[1], json!(false), "not launched yet");

    let off = json!({"definition": {"state": "DISABLED"}});
    assert_eq!(
        send(&app, Method::PATCH, "/v1/flags/banner", &off)
            .await
            .status(),
        200
    );
    let (changed, values) = bulk().await;
    assert_ne!(changed, first);
    assert_eq!(
        (values[0].clone(), banner.is_boolean()),
        (Value::Null, true),
        "the change shows"
    );

    app.clock.advance(Duration::from_secs(61));
    let (later, values) = bulk().await;
    assert_ne!(later, changed);
    assert_eq!(values[1], json!(true), "the clock moved past the launch");
}
