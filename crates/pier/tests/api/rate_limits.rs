//! Rate limits over HTTP: the API's own protection with the IETF fields, named policies, the
//! decision API, tenants, and nodes sharing Redis.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::support::{Backend, Options, TestApp, on_both_backends, problem};

on_both_backends!(
    a_fresh_server_sends_the_fields_on_every_response,
    over_quota_requests_get_429_and_never_reach_the_handler,
    refused_credentials_spend_the_client_address_quota,
    protection_can_be_switched_off,
    policies_are_created_read_listed_and_deleted,
    checks_decide_spend_and_answer_200_either_way,
    batch_checks_spend_on_every_policy_or_none,
    workspaces_see_and_count_only_their_own,
    permissions_guard_policies_and_checks,
    checks_follow_policy_changes_on_every_node,
);

/// A structured-field list (RFC 9651) of string items with integer parameters, parsed by a
/// real parser: `[(name, [(param, value)])]`. A list may be split over several fields.
fn parse_fields(headers: &HeaderMap, name: &str) -> Vec<(String, Vec<(String, i64)>)> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert!(!parts.is_empty(), "{name} is sent");
    let text = parts.join(", ");
    let list: sfv::List = sfv::Parser::new(&text)
        .parse()
        .unwrap_or_else(|e| panic!("{name}: `{text}` is not a structured-field list: {e}"));
    list.into_iter()
        .map(|entry| {
            let sfv::ListEntry::Item(item) = entry else {
                panic!("{name}: `{text}` holds an inner list")
            };
            let sfv::BareItem::String(policy) = &item.bare_item else {
                panic!("{name}: items must be strings: `{text}`")
            };
            let params = item
                .params
                .iter()
                .map(|(key, value)| {
                    let sfv::BareItem::Integer(n) = value else {
                        panic!("{name}: parameter {} is not an integer", key.as_str())
                    };
                    (key.as_str().to_owned(), i64::from(*n))
                })
                .collect();
            (policy.as_str().to_owned(), params)
        })
        .collect()
}

fn param(item: &(String, Vec<(String, i64)>), key: &str) -> i64 {
    item.1
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("{} has no `{key}`", item.0))
        .1
}

/// Creates a policy as the owner, expecting `201`.
async fn create_policy(app: &TestApp, name: &str, body: &Value) {
    let response = app
        .request(Method::PUT, &format!("/v1/rate-limit-policies/{name}"))
        .json(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201, "creating policy {name}");
}

/// Checks a `422` whose first field error names `field`.
async fn invalid_field(response: reqwest::Response, field: &str) {
    let body = problem(response, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], field, "{body}");
}

async fn spawn_with_settings(backend: Backend, settings: &[(&'static str, &str)]) -> TestApp {
    let options = Options {
        settings: settings
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect(),
        ..Options::default()
    };
    TestApp::spawn_with(backend, options).await
}

async fn a_fresh_server_sends_the_fields_on_every_response(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/v1/workspace").await;
    assert_eq!(response.status(), 200);
    let policy = parse_fields(response.headers(), "ratelimit-policy");
    assert_eq!(policy.len(), 1);
    assert_eq!(policy[0].0, "per-key");
    assert_eq!(param(&policy[0], "q"), 60000);
    assert_eq!(param(&policy[0], "w"), 60);
    assert_eq!(param(&policy[0], "pier-burst"), 2000);
    let limit = parse_fields(response.headers(), "ratelimit");
    assert_eq!(limit[0].0, "per-key");
    assert_eq!(param(&limit[0], "r"), 1999);
    assert!((0..=1).contains(&param(&limit[0], "t")));
    // Public routes count per client address.
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    let policy = parse_fields(health.headers(), "ratelimit-policy");
    assert_eq!(policy[0].0, "per-ip");
    assert_eq!(param(&policy[0], "q"), 1200);
}

async fn over_quota_requests_get_429_and_never_reach_the_handler(backend: Backend) {
    let app = spawn_with_settings(
        backend,
        &[("rate_limits.per_api_key", "fixed_window 3/60s")],
    )
    .await;
    let enqueue = json!({"kind": "k", "queue": "limited"});
    // The owner key's three: a second key, then two jobs.
    let (_, other) = app.create_key("member", None).await;
    for _ in 0..2 {
        assert_eq!(app.post_json("/v1/jobs", &enqueue).await.status(), 201);
    }
    let refused = app.post_json("/v1/jobs", &enqueue).await;
    let headers = refused.headers().clone();
    let retry_after: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let limit = parse_fields(&headers, "ratelimit");
    assert_eq!(param(&limit[0], "r"), 0);
    // Retry-After is never earlier than the reset the fields announce.
    assert!(u64::try_from(param(&limit[0], "t")).expect("t") <= retry_after);
    let body = problem(refused, 429, "quota_exceeded").await;
    assert_eq!(body["violated-policies"], json!(["per-key"]));
    // The other key has its own quota, and sees that the refused request never ran.
    let jobs: Value = app
        .call_as(&other, Method::GET, "/v1/jobs?queue=limited")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(jobs["data"].as_array().expect("list").len(), 2, "{jobs}");
    // The next window restores the owner's quota.
    app.clock.advance(Duration::from_secs(60));
    assert_eq!(app.post_json("/v1/jobs", &enqueue).await.status(), 201);
}

async fn refused_credentials_spend_the_client_address_quota(backend: Backend) {
    let app = spawn_with_settings(
        backend,
        &[("rate_limits.per_client_ip", "fixed_window 2/60s")],
    )
    .await;
    let bad = "pier_0000000000000000000000000000000000000000";
    for _ in 0..2 {
        let response = app.call_as(bad, Method::GET, "/v1/jobs").await;
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("ratelimit"));
    }
    let refused = app.call_as(bad, Method::GET, "/v1/jobs").await;
    let body = problem(refused, 429, "quota_exceeded").await;
    assert_eq!(body["violated-policies"], json!(["per-ip"]));
    // A valid key is not held back by its address.
    assert_eq!(app.get("/v1/jobs").await.status(), 200);
}

async fn protection_can_be_switched_off(backend: Backend) {
    let app = spawn_with_settings(
        backend,
        &[
            ("rate_limits.enabled", "false"),
            ("rate_limits.per_api_key", "fixed_window 1/60s"),
        ],
    )
    .await;
    for _ in 0..3 {
        let response = app.get("/v1/workspace").await;
        assert_eq!(response.status(), 200);
        assert!(!response.headers().contains_key("ratelimit"));
    }
}

async fn policies_are_created_read_listed_and_deleted(backend: Backend) {
    let app = spawn_with_settings(
        backend,
        &[("rate_limit_policies.login", "gcra 5/60s burst=2")],
    )
    .await;
    let body = json!({"algorithm": "sliding_window", "limit": 100, "period_seconds": 3600});
    let created = app
        .request(Method::PUT, "/v1/rate-limit-policies/search")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    assert_eq!(
        created.headers()["location"],
        "/v1/rate-limit-policies/search"
    );
    let etag = created.headers()["etag"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let view: Value = created.json().await.expect("json");
    assert_eq!(view["burst"], 100);
    assert_eq!(view["failure_mode"], "local");
    assert_eq!(view["source"], "api");
    // Replacing is 200; a stale If-Match is 412.
    let replace = json!({"algorithm": "gcra", "limit": 10, "period_seconds": 1, "burst": 20, "failure_mode": "fail_closed"});
    let replaced = app
        .request(Method::PUT, "/v1/rate-limit-policies/search")
        .header("if-match", &etag)
        .json(&replace)
        .send()
        .await
        .expect("sent");
    assert_eq!(replaced.status(), 200);
    let stale = app
        .request(Method::PUT, "/v1/rate-limit-policies/search")
        .header("if-match", &etag)
        .json(&replace)
        .send()
        .await
        .expect("sent");
    problem(stale, 412, "precondition_failed").await;
    let read = app.get_value("/v1/rate-limit-policies/search").await;
    assert_eq!(
        (read["algorithm"].as_str(), read["burst"].as_u64()),
        (Some("gcra"), Some(20))
    );
    // The list holds both sources, by name.
    let list = app.get_value("/v1/rate-limit-policies").await;
    let names: Vec<(&str, &str)> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name"),
                p["source"].as_str().expect("source"),
            )
        })
        .collect();
    assert_eq!(names, [("login", "config"), ("search", "api")]);
    let page = app.get_value("/v1/rate-limit-policies?limit=1").await;
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let rest = app
        .get_value(&format!("/v1/rate-limit-policies?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(rest["data"][0]["name"], "search");
    // The configuration file's policy is read-only.
    let overwrite = app
        .request(Method::PUT, "/v1/rate-limit-policies/login")
        .json(&body)
        .send()
        .await
        .expect("sent");
    problem(overwrite, 409, "policy_configured").await;
    problem(
        app.call(Method::DELETE, "/v1/rate-limit-policies/login")
            .await,
        409,
        "policy_configured",
    )
    .await;
    // Bad input names its field.
    for (path, bad, field) in [
        ("bad name", body.clone(), "name"),
        (
            "ok",
            json!({"algorithm": "gcra", "limit": 0, "period_seconds": 1}),
            "limit",
        ),
        (
            "ok",
            json!({"algorithm": "fixed_window", "limit": 5, "period_seconds": 1, "burst": 9}),
            "burst",
        ),
        (
            "ok",
            json!({"algorithm": "leaky", "limit": 5, "period_seconds": 1}),
            "algorithm",
        ),
        (
            "ok",
            json!({"algorithm": "gcra", "limit": 1000000000, "period_seconds": 31622400}),
            "limit",
        ),
    ] {
        let response = app
            .request(Method::PUT, &format!("/v1/rate-limit-policies/{path}"))
            .json(&bad)
            .send()
            .await
            .expect("sent");
        invalid_field(response, field).await;
    }
    assert_eq!(
        app.call(Method::DELETE, "/v1/rate-limit-policies/search")
            .await
            .status(),
        204
    );
    problem(
        app.get("/v1/rate-limit-policies/search").await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.call(Method::DELETE, "/v1/rate-limit-policies/search")
            .await,
        404,
        "not_found",
    )
    .await;
}

async fn check(app: &TestApp, key: &str, policy: &str, body: Value) -> (Value, HeaderMap) {
    let response = app
        .request_as(
            key,
            Method::POST,
            &format!("/v1/rate-limit-policies/{policy}/check"),
        )
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "checks answer 200 either way");
    let headers = response.headers().clone();
    (response.json().await.expect("json"), headers)
}

async fn checks_decide_spend_and_answer_200_either_way(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.owner_key.clone();
    let body = json!({"algorithm": "gcra", "limit": 3, "period_seconds": 3});
    create_policy(&app, "api", &body).await;
    let dry = check(
        &app,
        &owner,
        "api",
        json!({"key": "user-1", "dry_run": true}),
    )
    .await
    .0;
    assert_eq!(dry["remaining"], 2);
    for remaining in [2, 1, 0] {
        let (result, headers) = check(&app, &owner, "api", json!({"key": "user-1"})).await;
        assert_eq!(result["allowed"], true);
        assert_eq!(result["remaining"], remaining);
        // The checked policy's fields, then the API protection's own.
        let fields = parse_fields(&headers, "ratelimit");
        let names: Vec<&str> = fields.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["api", "per-key"]);
        assert_eq!(param(&fields[0], "r"), remaining);
        assert_eq!(
            param(&parse_fields(&headers, "ratelimit-policy")[0], "q"),
            3
        );
    }
    let (refused, _) = check(&app, &owner, "api", json!({"key": "user-1", "cost": 1})).await;
    assert_eq!(refused["allowed"], false);
    assert_eq!(refused["retry_after_ms"], 1000);
    assert_eq!(refused["reset_after_ms"], 3000);
    assert_eq!(refused["limit"], 3);
    // Other callers are counted apart; time refills; reset restores at once.
    assert_eq!(
        check(&app, &owner, "api", json!({"key": "user-2"})).await.0["allowed"],
        true
    );
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(
        check(&app, &owner, "api", json!({"key": "user-1"})).await.0["allowed"],
        true
    );
    let reset = app
        .request(Method::POST, "/v1/rate-limit-policies/api/reset")
        .json(&json!({"key": "user-1"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(reset.status(), 204);
    assert_eq!(
        check(&app, &owner, "api", json!({"key": "user-1", "cost": 3}))
            .await
            .0["remaining"],
        0
    );
    // Impossible or malformed checks are 4xx, not decisions.
    for (bad, field) in [
        (json!({"key": "user-1", "cost": 4}), "cost"),
        (json!({"key": "user-1", "cost": 0}), "cost"),
        (json!({"key": ""}), "key"),
        (json!({"key": "a\u{0}b"}), "key"),
        (json!({"key": "x".repeat(257)}), "key"),
    ] {
        let response = app
            .post_json("/v1/rate-limit-policies/api/check", &bad)
            .await;
        invalid_field(response, field).await;
    }
    let unknown = app
        .post_json("/v1/rate-limit-policies/nope/check", &json!({"key": "k"}))
        .await;
    problem(unknown, 404, "not_found").await;
}

/// Checks `policy` through `node` (a dry run) until `want` holds for its status and body, for
/// at most `patience` (none: the first answer must do).
async fn wait_for_check(
    node: &TestApp,
    policy: &str,
    patience: Duration,
    want: impl Fn(u16, &Value) -> bool,
) {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let response = node
            .post_json(
                &format!("/v1/rate-limit-policies/{policy}/check"),
                &json!({"key": "k", "dry_run": true}),
            )
            .await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("json");
        if want(status, &body) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the check of {policy} still answers {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks decide with a node's cached policies, yet follow every write at once: a name checked
/// before its policy existed is found once it is created, a replaced policy decides by its new
/// limit and a deleted one answers 404. On PostgreSQL the writes go through node A and the
/// checks through node B (the invalidation travels by `NOTIFY`, so B is given a moment); on
/// SQLite one node does both, and its first answer must already be right.
async fn checks_follow_policy_changes_on_every_node(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let other = a.another_node_if_shared().await;
    let (b, patience) = match &other {
        Some(b) => (b, Duration::from_secs(3)),
        None => (&a, Duration::ZERO),
    };
    let limit_is =
        |limit: u64| move |status: u16, body: &Value| status == 200 && body["limit"] == limit;
    // B learns the name is no policy (and remembers that).
    wait_for_check(b, "late", Duration::ZERO, |status, _| status == 404).await;
    let policy = |limit: u64| json!({"algorithm": "gcra", "limit": limit, "period_seconds": 60});
    create_policy(&a, "late", &policy(1)).await;
    wait_for_check(b, "late", patience, limit_is(1)).await;
    let replaced = a
        .request(Method::PUT, "/v1/rate-limit-policies/late")
        .json(&policy(5))
        .send()
        .await
        .expect("sent");
    assert_eq!(replaced.status(), 200);
    wait_for_check(&a, "late", Duration::ZERO, limit_is(5)).await;
    wait_for_check(b, "late", patience, limit_is(5)).await;
    let deleted = a.call(Method::DELETE, "/v1/rate-limit-policies/late").await;
    assert_eq!(deleted.status(), 204);
    wait_for_check(&a, "late", Duration::ZERO, |status, _| status == 404).await;
    wait_for_check(b, "late", patience, |status, _| status == 404).await;
}

async fn batch_checks_spend_on_every_policy_or_none(backend: Backend) {
    let app = spawn_with_settings(
        backend,
        &[("rate_limit_policies.per-day", "fixed_window 100/1d")],
    )
    .await;
    let body = json!({"algorithm": "gcra", "limit": 2, "period_seconds": 60});
    create_policy(&app, "burst", &body).await;
    let batch = json!({"policies": ["per-day", "burst"], "key": "tenant-9"});
    for _ in 0..2 {
        let (status, result) = app.post_value("/v1/rate-limit-checks", &batch).await;
        assert_eq!(
            (status, &result["allowed"]),
            (200, &json!(true)),
            "{result}"
        );
    }
    let response = app.post_json("/v1/rate-limit-checks", &batch).await;
    let fields = parse_fields(response.headers(), "ratelimit");
    assert_eq!(
        fields.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["per-day", "burst", "per-key"]
    );
    let refused: Value = response.json().await.expect("json");
    assert_eq!(refused["allowed"], false);
    assert_eq!(refused["decisions"][0]["policy"], "per-day");
    assert_eq!(refused["decisions"][0]["allowed"], true);
    assert_eq!(refused["decisions"][1]["allowed"], false);
    // The refused batch spent nothing on the policy that allowed it.
    let (_, day) = app
        .post_value(
            "/v1/rate-limit-policies/per-day/check",
            &json!({"key": "tenant-9", "dry_run": true}),
        )
        .await;
    assert_eq!(
        day["remaining"], 97,
        "2 spent, this dry run's 1 counted in `remaining`"
    );
    for (bad, field) in [
        (json!({"policies": [], "key": "k"}), "policies"),
        (
            json!({"policies": ["burst", "burst"], "key": "k"}),
            "policies[1]",
        ),
        (
            json!({"policies": vec!["burst"; 11], "key": "k"}),
            "policies",
        ),
    ] {
        let response = app.post_json("/v1/rate-limit-checks", &bad).await;
        invalid_field(response, field).await;
    }
}

async fn workspaces_see_and_count_only_their_own(backend: Backend) {
    let app = spawn_with_settings(
        backend,
        &[("rate_limit_policies.shared", "fixed_window 1/60s")],
    )
    .await;
    let body = json!({"algorithm": "gcra", "limit": 1, "period_seconds": 60});
    create_policy(&app, "mine", &body).await;
    let (_, _, other) =
        pier_auth::WorkspaceStore::new(app.db.clone(), std::sync::Arc::new(app.clock.clone()))
            .create_with_owner_key(pier_auth::WorkspaceName::parse("other").expect("name"))
            .await
            .expect("workspace");
    let other = other.expose().to_owned();
    problem(
        app.call_as(&other, Method::GET, "/v1/rate-limit-policies/mine")
            .await,
        404,
        "not_found",
    )
    .await;
    let listed: Value = app
        .call_as(&other, Method::GET, "/v1/rate-limit-policies")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed["data"].as_array().expect("data").len(),
        1,
        "only the configured one: {listed}"
    );
    let owner = app.owner_key.clone();
    // The configured policy is shared by name, never by count.
    let key = json!({"key": "same-caller"});
    assert_eq!(
        check(&app, &owner, "shared", key.clone()).await.0["allowed"],
        true
    );
    assert_eq!(
        check(&app, &other, "shared", key.clone()).await.0["allowed"],
        true
    );
    assert_eq!(check(&app, &owner, "shared", key).await.0["allowed"], false);
}

async fn permissions_guard_policies_and_checks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"algorithm": "gcra", "limit": 5, "period_seconds": 60});
    create_policy(&app, "p", &body).await;
    let (_, viewer) = app.create_key("viewer", None).await;
    let (_, member) = app.create_key("member", None).await;
    assert_eq!(
        app.call_as(&viewer, Method::GET, "/v1/rate-limit-policies/p")
            .await
            .status(),
        200
    );
    let denied = app
        .request_as(&viewer, Method::POST, "/v1/rate-limit-policies/p/check")
        .json(&json!({"key": "k"}))
        .send()
        .await
        .expect("sent");
    problem(denied, 403, "forbidden").await;
    let write = app
        .request_as(&member, Method::PUT, "/v1/rate-limit-policies/q")
        .json(&body)
        .send()
        .await
        .expect("sent");
    problem(write, 403, "forbidden").await;
    assert_eq!(
        check(&app, &member, "p", json!({"key": "k"})).await.0["allowed"],
        true
    );
}

/// One check of the `global` policy through `node`: `Some(allowed)`, or `None` when the API's
/// own protection refused the request.
async fn global_check(node: &TestApp, api_key: &str, caller: &str) -> Option<bool> {
    let response = node
        .request_as(
            api_key,
            Method::POST,
            "/v1/rate-limit-policies/global/check",
        )
        .json(&json!({"key": caller}))
        .send()
        .await
        .expect("sent");
    match response.status().as_u16() {
        200 => Some(response.json::<Value>().await.expect("json")["allowed"] == json!(true)),
        429 => None,
        other => panic!("unexpected status {other}"),
    }
}

/// Three nodes on one database and one Redis admit, together, exactly the limit: for a policy
/// of the decision API and for the API's own protection, whichever node each request reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and Redis: set PIER_TEST_DATABASE_URL and PIER_TEST_REDIS_URL"]
async fn three_nodes_sharing_redis_admit_the_limit_in_total() {
    let shared = || Options {
        redis_url: Some(pier_testkit::redis_url()),
        settings: vec![("rate_limits.per_api_key", "gcra 12/3600s".to_owned())],
        ..Options::default()
    };
    let first = TestApp::spawn_with(Backend::postgres(), shared()).await;
    let (second, third) = (
        first.another_node_with(shared()).await,
        first.another_node_with(shared()).await,
    );
    let nodes = [&first, &second, &third];
    let body = json!({"algorithm": "gcra", "limit": 20, "period_seconds": 3600});
    create_policy(&first, "global", &body).await;
    let caller = format!("caller-{}", first.workspace_id);
    // One API key, 30 concurrent requests spread over the nodes: its protection lets 12 in.
    let (_, busy) = first.create_key("member", None).await;
    let outcomes =
        futures_util::future::join_all((0..30).map(|i| global_check(nodes[i % 3], &busy, &caller)))
            .await;
    assert_eq!(outcomes.iter().filter(|o| o.is_some()).count(), 12);
    // Fresh keys for 3 × 12 more checks: the policy admits 8 more, 20 in all.
    let mut admitted = outcomes.iter().filter(|o| **o == Some(true)).count();
    for _ in 0..3 {
        let (_, fresh) = first.create_key("member", None).await;
        for i in 0..12 {
            let allowed = global_check(nodes[i % 3], &fresh, &caller).await;
            admitted += usize::from(allowed.expect("within the key's protection"));
        }
    }
    assert_eq!(admitted, 20);
}
