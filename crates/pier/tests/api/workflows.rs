//! Workflows over HTTP: the order-fulfilment saga end to end, the graph checks, lists,
//! cancellation, tenants and permissions, and exact queue counters throughout.

use serde_json::{Value, json};

use crate::support::{Backend, Options, TestApp, on_both_backends, problem};

on_both_backends!(
    an_order_saga_runs_and_compensates_over_http,
    a_bad_graph_is_refused_naming_the_step,
    workflows_are_listed_cancelled_and_kept_to_their_workspace,
);

async fn claim(app: &TestApp, queue: &str) -> Vec<Value> {
    let (status, value) = app
        .post_value(&format!("/v1/queues/{queue}/claim"), &json!({"max": 10}))
        .await;
    assert_eq!(status, 200, "{value}");
    value["jobs"].as_array().expect("jobs").clone()
}

fn path(job: &Value, action: &str) -> String {
    format!("/v1/jobs/{}/{action}", job["id"].as_str().expect("id"))
}

async fn complete(app: &TestApp, job: &Value, result: Value) {
    let body = json!({"lease_token": job["lease_token"], "result": result});
    let (status, body) = app.post_value(&path(job, "complete"), &body).await;
    assert_eq!(status, 204, "{body}");
}

fn order() -> Value {
    json!({"name": "order-42", "steps": [
        {"name": "charge_card", "job": {"queue": "orders", "kind": "charge_card", "payload": {"order": 42}},
         "compensate": {"queue": "orders", "kind": "refund_card", "payload": {"order": 42}}},
        {"name": "reserve_stock", "depends_on": ["charge_card"],
         "job": {"queue": "orders", "kind": "reserve_stock"}},
        {"name": "send_email", "depends_on": ["reserve_stock"],
         "job": {"queue": "orders", "kind": "send_email"}}]})
}

async fn counts(app: &TestApp) -> Value {
    let queues = app.get_value("/v1/queues").await;
    queues["data"][0]["counts"].clone()
}

async fn an_order_saga_runs_and_compensates_over_http(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.post_json("/v1/workflows", &order()).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let created: Value = response.json().await.expect("json");
    assert_eq!(
        location,
        format!("/v1/workflows/{}", created["id"].as_str().expect("id"))
    );
    assert_eq!(created["state"], "running");
    let states: Vec<&Value> = created["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| &s["state"])
        .collect();
    assert_eq!(
        states,
        [&json!("available"), &json!("pending"), &json!("pending")]
    );
    let held = counts(&app).await;
    assert_eq!(
        (held["pending"].clone(), held["available"].clone()),
        (json!(2), json!(1))
    );

    let charge = claim(&app, "orders").await;
    assert_eq!(charge.len(), 1, "held steps are not claimable");
    assert_eq!(charge[0]["kind"], "charge_card");
    assert!(charge[0].get("inputs").is_none());
    complete(&app, &charge[0], json!({"charge": "ch_1"})).await;

    let reserve = claim(&app, "orders").await;
    assert_eq!(reserve[0]["kind"], "reserve_stock");
    assert_eq!(
        reserve[0]["inputs"],
        json!({"charge_card": {"charge": "ch_1"}})
    );
    let shown = app
        .get_value(&format!(
            "/v1/jobs/{}",
            reserve[0]["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(shown["inputs"], reserve[0]["inputs"]);
    assert_eq!(
        (shown["workflow_id"].clone(), shown["step"].clone()),
        (created["id"].clone(), json!("reserve_stock"))
    );

    let (status, failed) = app
        .post_value(
            &path(&reserve[0], "fail"),
            &json!({"lease_token": reserve[0]["lease_token"], "error": "out of stock", "discard": true}),
        )
        .await;
    assert_eq!((status, failed["state"].clone()), (200, json!("discarded")));
    let compensating = app.get_value(&location).await;
    assert_eq!(compensating["state"], "compensating");
    assert_eq!(compensating["failed_step"], "reserve_stock");
    assert_eq!(compensating["steps"][2]["state"], "cancelled");
    let response = app.post_json(&path(&reserve[0], "retry"), &json!({})).await;
    problem(response, 409, "invalid_state").await;

    let refund = claim(&app, "orders").await;
    assert_eq!(refund[0]["kind"], "refund_card");
    assert_eq!(
        refund[0]["inputs"],
        json!({"charge_card": {"charge": "ch_1"}})
    );
    complete(&app, &refund[0], json!(null)).await;
    let compensated = app.get_value(&location).await;
    assert_eq!(compensated["state"], "compensated");
    assert_eq!(
        compensated["steps"][0]["compensation"]["state"],
        "completed"
    );
    assert!(compensated["finished_at"].is_string());
    let end = counts(&app).await;
    assert_eq!(
        (
            end["pending"].clone(),
            end["completed"].clone(),
            end["discarded"].clone(),
            end["cancelled"].clone()
        ),
        (json!(0), json!(2), json!(1), json!(1))
    );
}

async fn a_bad_graph_is_refused_naming_the_step(backend: Backend) {
    let options = Options {
        settings: vec![("jobs.max_workflow_steps", "3".to_owned())],
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let job = json!({"kind": "k"});
    let cases = [
        (
            json!([{"name": "a", "job": job, "depends_on": ["ghost"]}]),
            "steps[0].depends_on",
            "`ghost`",
        ),
        (
            json!([{"name": "a", "job": job}, {"name": "a", "job": job}]),
            "steps[1].name",
            "step `a`",
        ),
        (
            json!([{"name": "a", "job": job, "depends_on": ["b"]}, {"name": "b", "job": job, "depends_on": ["a"]}]),
            "steps[0].depends_on",
            "step `a`",
        ),
        (
            json!([{"name": "a", "job": job}, {"name": "b", "job": job}, {"name": "c", "job": job}, {"name": "d", "job": job}]),
            "steps",
            "1 to 3",
        ),
        (
            json!([{"name": "a", "job": {"kind": "k", "unique_key": "x"}}]),
            "steps[0].job.unique_key",
            "step `a`",
        ),
        (
            json!([{"name": "a", "job": {"kind": "bad kind"}}]),
            "steps[0].job.kind",
            "bad kind",
        ),
        (json!([]), "steps", "1 to 3"),
    ];
    for (steps, field, named) in cases {
        let response = app
            .post_json("/v1/workflows", &json!({"name": "w", "steps": steps}))
            .await;
        let body = problem(response, 422, "validation_failed").await;
        let error = &body["errors"][0];
        assert_eq!(error["field"], field, "{body}");
        assert!(
            error["message"].as_str().expect("message").contains(named),
            "{body}"
        );
    }
    let response = app
        .post_json(
            "/v1/workflows",
            &json!({"name": "w", "steps": [], "extra": 1}),
        )
        .await;
    assert_eq!(response.status(), 422);
    let listed = app.get_value("/v1/workflows").await;
    assert_eq!(listed["data"], json!([]), "nothing was created");
}

async fn workflows_are_listed_cancelled_and_kept_to_their_workspace(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut made = Vec::new();
    for _ in 0..3 {
        let (status, created) = app.post_value("/v1/workflows", &order()).await;
        assert_eq!(status, 201);
        made.push(created["id"].as_str().expect("id").to_owned());
        app.clock.advance(std::time::Duration::from_millis(2));
    }
    let first = app.get_value("/v1/workflows?limit=2").await;
    let page: Vec<&str> = first["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|w| w["id"].as_str().expect("id"))
        .collect();
    assert_eq!(page, [made[2].as_str(), made[1].as_str()], "newest first");
    assert!(first["data"][0].get("steps").is_none());
    let cursor = first["next_cursor"].as_str().expect("cursor");
    let second = app
        .get_value(&format!("/v1/workflows?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(second["data"][0]["id"], made[0].as_str());
    assert_eq!(second["has_more"], false);

    let store =
        pier_auth::WorkspaceStore::new(app.db.clone(), std::sync::Arc::new(app.clock.clone()));
    let (_, _, other) = store
        .create_with_owner_key(pier_auth::WorkspaceName::parse("other").expect("name"))
        .await
        .expect("ws");
    let theirs = format!("/v1/workflows/{}", made[0]);
    let response = app
        .call_as(other.expose(), reqwest::Method::GET, &theirs)
        .await;
    problem(response, 404, "not_found").await;
    let response = app
        .call_as(
            other.expose(),
            reqwest::Method::POST,
            &format!("{theirs}/cancel"),
        )
        .await;
    problem(response, 404, "not_found").await;
    let listed = app
        .call_as(other.expose(), reqwest::Method::GET, "/v1/workflows")
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(listed["data"], json!([]));

    let (_, viewer) = app.create_key("viewer", None).await;
    let read = app.call_as(&viewer, reqwest::Method::GET, &theirs).await;
    assert_eq!(read.status(), 200, "jobs:read reads workflows");
    let response = app
        .call_as(&viewer, reqwest::Method::POST, &format!("{theirs}/cancel"))
        .await;
    problem(response, 403, "forbidden").await;

    let (status, cancelled) = app
        .post_value(&format!("{theirs}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status, cancelled["state"].clone()),
        (200, json!("cancelled"))
    );
    let (status, again) = app
        .post_value(&format!("{theirs}/cancel"), &json!({}))
        .await;
    assert_eq!((status, again["state"].clone()), (200, json!("cancelled")));
    let response = app.get("/v1/workflows/wf_nope").await;
    problem(response, 404, "not_found").await;
    let counts = counts(&app).await;
    assert_eq!(
        counts["pending"], 4,
        "two held steps each in the two running workflows"
    );
    assert_eq!(counts["cancelled"], 3);
}
