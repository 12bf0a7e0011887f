//! The API contract every endpoint shares: problem bodies for each error status, request ids,
//! health probes and the OpenAPI document.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Backend, Options, TestApp, on_both_backends, problem};

on_both_backends!(
    metric_labels_stay_bounded,
    error_statuses_are_problems,
    request_ids_round_trip,
    health_and_openapi,
    server_errors_hide_their_cause,
    docs_work_offline,
    json_reads_as_json_schema_says
);

async fn error_statuses_are_problems(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            body_limit_bytes: Some(4096),
            ..Options::default()
        },
    )
    .await;

    // Unknown route.
    problem(app.get("/v1/nothing-here").await, 404, "not_found").await;

    // Wrong method keeps `Allow`.
    let response = app.call(Method::PUT, "/v1/api-keys").await;
    let allow = response.headers()["allow"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow}"
    );
    problem(response, 405, "method_not_allowed").await;

    // Wrong media type.
    let response = app.post_raw("/v1/api-keys", "text/plain", "name=x").await;
    problem(response, 415, "unsupported_media_type").await;

    // Malformed JSON.
    let response = app
        .post_raw("/v1/api-keys", "application/json", "{\"name\": ")
        .await;
    problem(response, 400, "malformed_json").await;

    // Too large.
    let big = json!({"name": "x".repeat(8192)});
    problem(
        app.post_json("/v1/api-keys", &big).await,
        413,
        "payload_too_large",
    )
    .await;

    // Validation names every bad field.
    let body = json!({"name": "", "role": "emperor", "scopes": ["jobs:fly"], "expires_at": "2001-01-01T00:00:00Z"});
    let invalid = problem(
        app.post_json("/v1/api-keys", &body).await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        ["name", "role", "scopes[0]", "expires_at"],
        "{invalid}"
    );

    // Wrong JSON shape names the field.
    let shape = problem(
        app.post_json("/v1/api-keys", &json!({"name": 5})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(shape["errors"][0]["field"], "name");
    let unknown = problem(
        app.post_json("/v1/api-keys", &json!({"name": "x", "rol": "admin"}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert!(
        unknown["detail"].as_str().expect("detail").contains("rol"),
        "{unknown}"
    );

    // Query parameters out of range.
    let limit = problem(
        app.get("/v1/api-keys?limit=101").await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(limit["errors"][0]["field"], "limit");
    problem(
        app.get("/v1/api-keys?limit=0").await,
        422,
        "validation_failed",
    )
    .await;
    problem(
        app.get("/v1/api-keys?limit=ten").await,
        422,
        "validation_failed",
    )
    .await;
    problem(
        app.get("/v1/api-keys?role=emperor").await,
        422,
        "validation_failed",
    )
    .await;

    // Missing and malformed credentials carry a challenge.
    let response = app
        .client
        .get(app.url("/v1/workspace"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    problem(response, 401, "unauthorized").await;
    let response = app.call_as("pier_typo", Method::GET, "/v1/workspace").await;
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("invalid_token")
    );
    problem(response, 401, "unauthorized").await;
    let response = app
        .client
        .get(app.url("/v1/workspace"))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .expect("sent");
    problem(response, 401, "unauthorized").await;
}

async fn request_ids_round_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .request(Method::GET, "/v1/workspace")
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");

    // Unsafe ids are replaced, not echoed.
    let response = app
        .request(Method::GET, "/v1/workspace")
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .expect("sent");
    let generated = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(generated.starts_with("req_"), "{generated}");

    let body: Value = app.get("/v1/workspace").await.json().await.expect("json");
    assert_eq!(body["id"], app.workspace_id.as_str());
    assert_eq!(body["name"], "default");
}

async fn health_and_openapi(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(health.status(), 200);
    let ready: Value = app.public_json("/readyz").await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"][0]["name"], "database");

    let spec: Value = app.public_json("/v1/openapi.json").await;
    assert!(
        spec["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.1")
    );
    for (path, method) in [
        ("/v1/workspace", "get"),
        ("/v1/api-keys", "get"),
        ("/v1/api-keys", "post"),
        ("/v1/api-keys/{id}", "get"),
        ("/v1/api-keys/{id}", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        assert!(
            op["responses"]["500"].is_object(),
            "{method} {path} documents errors"
        );
    }
    assert!(spec["paths"]["/v1/api-keys"]["post"]["responses"]["422"].is_object());
    assert!(spec["paths"]["/v1/api-keys/{id}"]["delete"]["responses"]["412"].is_object());
    assert!(spec["components"]["schemas"]["Problem"].is_object());
    for path in ["/v1/api-keys", "/v1/jobs", "/v1/queues"] {
        let names: Vec<&str> = spec["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| p["name"].as_str().expect("name"))
            .collect();
        assert!(
            names.contains(&"limit") && names.contains(&"cursor"),
            "{path}: {names:?}"
        );
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());

    let metrics = app
        .client
        .get(format!("{}/metrics", app.admin_base))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("pier_http_requests_total"), "{metrics}");
}

#[tokio::test]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn readiness_checks_redis_when_configured() {
    let redis_url = pier_testkit::redis_url();
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        Options {
            redis_url: Some(redis_url),
            ..Options::default()
        },
    )
    .await;
    let ready: Value = app.public_json("/readyz").await;
    assert_eq!(
        ready["checks"][1],
        json!({"name": "redis", "status": "ok"}),
        "{ready}"
    );
}

/// A failure inside the server is a bare 500 problem: the cause is logged, never shown.
async fn server_errors_hide_their_cause(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    pier_db::with_writer!(&app.db, pool => sqlx::query("DROP TABLE jobs")
        .execute(pool)
        .await
        .map(drop))
    .expect("drop a table from under the server");
    let response = app.get("/v1/jobs").await;
    let body = problem(response, 500, "internal_error").await;
    let shown = body.to_string().to_lowercase();
    assert!(
        !shown.contains("jobs") && !shown.contains("sql") && !shown.contains("table"),
        "{body}"
    );
}

/// Labels come from closed sets: invented methods and unknown paths add no series.
async fn metric_labels_stay_bounded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let metrics = || async {
        app.client
            .get(format!("{}/metrics", app.admin_base))
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("text")
    };
    let send_odd = |i: usize| {
        let method = Method::from_bytes(format!("BREW{i}").as_bytes()).expect("method");
        app.client
            .request(method, app.url(&format!("/no/such/path/{i}")))
            .send()
    };
    for i in 0..10 {
        send_odd(i).await.expect("sent");
    }
    // The series these requests land in: the metrics are the process's, so tests running
    // beside this one add series of their own routes meanwhile.
    let http_series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("pier_http_") && l.contains("method=\"other\""))
            .map(|l| {
                l.rsplit_once(' ')
                    .map_or(l, |(series, _)| series)
                    .to_owned()
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    let before = http_series(&metrics().await);
    for i in 10..310 {
        send_odd(i).await.expect("sent");
    }
    let after = metrics().await;
    let added: Vec<_> = http_series(&after).difference(&before).cloned().collect();
    assert!(added.is_empty(), "300 odd requests added series: {added:?}");
    assert!(after.contains("method=\"other\""), "{after}");
    assert!(
        !after.contains("BREW") && !after.contains("/no/such"),
        "a client-chosen method or path became a label"
    );
}

/// `/docs` loads nothing from elsewhere: its script and stylesheet come from the binary under
/// content-hashed names, cached for a year; a stale name is a 404.
async fn docs_work_offline(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.client.get(app.url("/docs")).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let header = |response: &reqwest::Response, name: &str| {
        response.headers()[name].to_str().expect("ascii").to_owned()
    };
    let policy = header(&response, "content-security-policy");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("https:"), "{policy}");
    let html = response.text().await.expect("text");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "an inline script: {html}");
    for tag in html.split("<script").skip(1) {
        let tag = &tag[..tag.find('>').expect("a closed tag")];
        assert!(tag.contains("src="), "an inline script: {html}");
    }

    // The asset paths the page names: `"/docs/assets/docs.<hash>.<ext>"`.
    let asset = |ext: &str| {
        html.split('"')
            .find(|part| part.starts_with("/docs/assets/docs.") && part.ends_with(ext))
            .unwrap_or_else(|| panic!("no {ext} asset in {html}"))
            .to_owned()
    };
    for (path, content_type) in [
        (asset(".js"), "text/javascript"),
        (asset(".css"), "text/css"),
    ] {
        let response = app.client.get(app.url(&path)).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            header(&response, "content-type").starts_with(content_type),
            "{path}"
        );
        assert!(
            header(&response, "cache-control").contains("immutable"),
            "{path}"
        );
        let body = response.text().await.expect("text");
        assert!(!body.trim().is_empty(), "{path}");
    }

    let stale = app
        .client
        .get(app.url("/docs/assets/docs.0000.js"))
        .send()
        .await
        .expect("sent");
    assert_eq!(stale.status(), 404);
}

/// What the OpenAPI document says of JSON holds: a whole number is an integer however it is
/// written, a struct is an object (never the array of its fields), and an Idempotency-Key is
/// printable ASCII of at most 255 characters.
async fn json_reads_as_json_schema_says(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, job) = app
        .post_value(
            "/v1/jobs",
            &json!({"kind": "whole", "max_attempts": 3.0, "priority": -2.0, "lease_seconds": 6e1}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(
        (&job["max_attempts"], &job["priority"]),
        (&json!(3), &json!(-2))
    );
    for (body, field) in [
        (json!({"kind": "x", "max_attempts": 2.5}), "max_attempts"),
        (json!({"kind": "x", "priority": 1e300}), "priority"),
        (json!({"kind": "x", "backoff": [1, 2]}), "backoff"),
        (json!(["x"]), "body"),
    ] {
        let error = problem(
            app.post_json("/v1/jobs", &body).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(error["errors"][0]["field"], field, "{body}: {error}");
    }
    let patch = app
        .request(Method::PATCH, "/v1/queues/default")
        .header("content-type", "application/merge-patch+json")
        .body("[null, null]")
        .send()
        .await
        .expect("sent");
    problem(patch, 422, "validation_failed").await;

    let keyed = |key: &'static str| {
        app.request(Method::POST, "/v1/jobs")
            .header("idempotency-key", key)
            .json(&json!({"kind": "keyed"}))
            .send()
    };
    assert_eq!(keyed("a b~!").await.expect("sent").status(), 201);
    let long: &'static str = "k".repeat(256).leak();
    problem(
        keyed(long).await.expect("sent"),
        400,
        "invalid_idempotency_key",
    )
    .await;
    problem(
        keyed("tab\tinside").await.expect("sent"),
        400,
        "invalid_idempotency_key",
    )
    .await;
}
