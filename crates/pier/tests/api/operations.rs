//! What operators rely on: the metrics (every family the dashboards and alerts use, with the
//! right labels), readiness turning false while a node drains, the metrics kept from growing when nobody
//! scrapes them, and the `api` / `worker` roles.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::process::{Server, server};
use crate::support::proxy::Proxy;
use crate::support::receiver::Receiver;
use crate::support::{Backend, Options, TestApp, on_both_backends};

on_both_backends!(metrics_cover_every_family_the_dashboards_use);

/// The metric families `deploy/` (alerts and dashboard) refers to.
fn deployed_families() -> Vec<&'static str> {
    include_str!("../../../../deploy/metrics.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// `name{labels} value` lines of a scrape, keyed by name.
fn samples(text: &str) -> HashMap<String, Vec<(String, f64)>> {
    let mut by_name: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let value: f64 = value.parse().expect("a number");
        by_name
            .entry(name.to_owned())
            .or_default()
            .push((labels.trim_end_matches('}').to_owned(), value));
    }
    by_name
}

async fn scrape(app: &TestApp) -> String {
    let response = app
        .client
        .get(format!("{}/metrics", app.admin_base))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

async fn metrics_cover_every_family_the_dashboards_use(backend: Backend) {
    let options = Options {
        settings: vec![("allow_private_webhook_targets", "true".to_owned())],
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let receiver = Receiver::start().await;
    // Metrics are the process's, shared with the other tests: this test's queue is its own.
    let queue = format!("emails-{}", &app.workspace().as_str()[3..]);
    // Traffic for every capability: a job run to completion, a failed and a retried attempt,
    // a webhook delivered, a link followed.
    for _ in 0..3 {
        assert_eq!(app.get("/v1/workspace").await.status(), 200);
    }
    assert_eq!(app.get("/v1/no-such-thing").await.status(), 404);
    let (status, _) = app
        .post_value(
            "/v1/jobs",
            &json!({"queue": queue, "kind": "send", "max_attempts": 2,
                "backoff": {"base_seconds": 1, "max_seconds": 1}}),
        )
        .await;
    assert_eq!(status, 201);
    for (outcome, answered) in [("fail", 200), ("complete", 204)] {
        let (status, claimed) = app
            .post_value(&format!("/v1/queues/{queue}/claim"), &json!({}))
            .await;
        assert_eq!(status, 200, "{claimed}");
        let job = &claimed["jobs"][0];
        let path = format!("/v1/jobs/{}/{outcome}", job["id"].as_str().expect("id"));
        let mut body = json!({"lease_token": job["lease_token"]});
        if outcome == "fail" {
            body["error"] = json!("boom");
        }
        let (status, answer) = app.post_value(&path, &body).await;
        assert_eq!(status, answered, "{answer}");
        // The failed attempt's retry waits out its backoff.
        app.clock.advance(Duration::from_secs(2));
    }
    let (status, _) = app
        .post_value("/v1/webhook-endpoints", &json!({"url": receiver.url}))
        .await;
    assert_eq!(status, 201);
    let (status, _) = app
        .post_value(
            "/v1/events",
            &json!({"type": "order.paid", "payload": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 202);
    receiver.wait_for(1).await;
    let (status, link) = app
        .post_value("/v1/links", &json!({"url": "https://example.com/x"}))
        .await;
    assert_eq!(status, 201, "{link}");
    let slug = link["slug"].as_str().expect("slug");
    let followed = app
        .client
        .get(app.url(&format!("/{slug}")))
        .send()
        .await
        .expect("follow");
    assert_eq!(followed.status(), 302);
    // The delivery is recorded just after the receiver answered.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let text = scrape(&app).await;
    let all = samples(&text);
    let has = |family: &str| {
        [
            family,
            &format!("{family}_count"),
            &format!("{family}_total"),
        ]
        .iter()
        .any(|name| all.contains_key(*name))
    };
    // pier_redis_up exists only with Redis (`readiness_degrades_without_redis` checks it).
    let missing: Vec<&str> = deployed_families()
        .into_iter()
        .filter(|f| !has(f) && *f != "pier_redis_up")
        .collect();
    assert!(
        missing.is_empty(),
        "families missing from /metrics: {missing:?}\n{text}"
    );

    let value = |name: &str, labels: &[&str]| -> f64 {
        all.get(name)
            .into_iter()
            .flatten()
            .filter(|(l, _)| labels.iter().all(|want| l.contains(want)))
            .map(|(_, v)| v)
            .sum()
    };
    // Golden signals by route template and status class, never raw paths.
    let workspace = [
        r#"method="GET""#,
        r#"route="/v1/workspace""#,
        r#"status_class="2xx""#,
    ];
    assert!(
        value("pier_http_requests_total", &workspace) >= 3.0,
        "{text}"
    );
    assert!(
        value(
            "pier_http_requests_total",
            &[r#"route="<unmatched>""#, r#"status_class="4xx""#]
        ) >= 1.0
    );
    assert!(
        !text.contains("/v1/no-such-thing"),
        "raw paths are never labels"
    );
    assert!(!text.contains(slug), "slugs are never labels");
    // A redirect is answered before the router, and counted like any other request.
    let redirect = [r#"route="/{slug}""#, r#"status_class="3xx""#];
    assert!(
        value("pier_http_requests_total", &redirect) >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(
            "pier_http_requests_in_flight",
            &[r#"route="/v1/workspace""#]
        ),
        0.0,
        "finished requests leave the in-flight gauge"
    );
    // Jobs, by queue.
    let label = format!(r#"queue="{queue}""#);
    let emails = [label.as_str()];
    assert_eq!(value("pier_jobs_enqueued_total", &emails), 1.0);
    assert_eq!(value("pier_jobs_claimed_total", &emails), 2.0);
    assert_eq!(value("pier_jobs_failed_total", &emails), 1.0);
    assert_eq!(value("pier_jobs_completed_total", &emails), 1.0);
    assert_eq!(
        value("pier_jobs_pickup_latency_seconds_count", &emails),
        2.0
    );
    assert_eq!(
        value(
            "pier_jobs_run_duration_seconds_count",
            &[emails[0], r#"outcome="completed""#]
        ),
        1.0
    );
    assert_eq!(
        value("pier_jobs", &[emails[0], r#"state="completed""#]),
        1.0
    );
    assert_eq!(
        value("pier_jobs", &[emails[0], r#"state="available""#]),
        0.0
    );
    let webhooks = [r#"queue="pier.webhooks""#];
    assert!(value("pier_jobs_completed_total", &webhooks) >= 1.0);
    // Webhooks, the pool, the build.
    let delivered = [r#"outcome="succeeded""#, r#"status_class="2xx""#];
    assert!(value("pier_webhook_attempts_total", &delivered) >= 1.0);
    assert!(value("pier_webhook_delivery_latency_seconds_count", &[]) >= 1.0);
    assert!(value("pier_db_connections_max", &[]) >= 1.0);
    assert_eq!(
        value(
            "pier_build_info",
            &[&format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Histograms: cumulative buckets, ending in +Inf at the count.
    let buckets: Vec<(String, f64)> = all["pier_http_request_duration_seconds_bucket"]
        .iter()
        .filter(|(l, _)| workspace[..2].iter().all(|w| l.contains(w)))
        .cloned()
        .collect();
    assert_eq!(buckets.len(), 14, "13 bounds and +Inf: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    let inf = buckets
        .iter()
        .find(|(l, _)| l.contains(r#"le="+Inf""#))
        .expect("+Inf");
    assert_eq!(
        inf.1,
        value("pier_http_request_duration_seconds_count", &workspace[..2])
    );
}

/// Registers `receiver` as an endpoint of `server` and publishes one event to it, continuing
/// the client's trace `traceparent` when given; returns the endpoint's signing secret.
pub(crate) async fn publish_to(
    server: &Server,
    receiver: &Receiver,
    traceparent: Option<&str>,
) -> String {
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/v1/webhook-endpoints", server.base))
        .bearer_auth(&server.key)
        .json(&json!({"url": receiver.url}))
        .send()
        .await
        .expect("create endpoint");
    assert_eq!(created.status(), 201);
    let endpoint: Value = created.json().await.expect("endpoint");
    let mut publish = client
        .post(format!("{}/v1/events", server.base))
        .bearer_auth(&server.key)
        .json(&json!({"type": "order.paid", "payload": {}}));
    if let Some(traceparent) = traceparent {
        publish = publish.header("traceparent", traceparent);
    }
    let published = publish.send().await.expect("publish");
    assert_eq!(published.status(), 202);
    endpoint["secret"].as_str().expect("secret").to_owned()
}

/// Histogram samples wait in the recorder until its upkeep folds them into buckets; a node
/// that nobody scrapes must still run it, or it grows with every request.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_node_keeps_its_histograms_up_without_a_scrape() {
    let server = server(&Backend::Sqlite, &[]).await;
    let child = server.start().await;
    let pid = child.id().expect("pid");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the node's threads")
        .map(|task| {
            let comm = task.expect("a thread").path().join("comm");
            std::fs::read_to_string(comm)
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect();
    assert!(
        threads.iter().any(|name| name == "metrics-upkeep"),
        "no upkeep thread among {threads:?}"
    );
}

/// A node whose Redis went away keeps serving and stays ready: `/readyz` answers 200 with a
/// degraded body on both listeners, requests succeed, and `pier_redis_up` is 0.
async fn readiness_degrades_without_redis(backend: Backend) {
    let mut redis = reqwest::Url::parse(&pier_testkit::redis_url()).expect("a Redis URL");
    let target = format!(
        "{}:{}",
        redis.host_str().expect("host"),
        redis.port().unwrap_or(6379)
    );
    let target = tokio::net::lookup_host(target)
        .await
        .expect("Redis's address")
        .next()
        .expect("an address");
    let proxy = Proxy::start(target).await;
    redis.set_port(Some(proxy.addr.port())).expect("port");
    redis.set_host(Some("127.0.0.1")).expect("host");
    let options = Options {
        redis_url: Some(redis.to_string()),
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let readiness = |base: String| {
        let client = app.client.clone();
        async move {
            let response = client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .expect("readyz");
            let status = response.status();
            let body: Value = response.json().await.expect("JSON");
            (status, body)
        }
    };
    let (status, body) = readiness(app.base.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready", "{body}");

    proxy.stop().await;
    for base in [app.base.clone(), app.admin_base.clone()] {
        let (status, body) = readiness(base).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "degraded", "{body}");
        assert_eq!(
            body["checks"],
            json!([{"name": "database", "status": "ok"}, {"name": "redis", "status": "unavailable"}])
        );
    }
    for n in 0..20 {
        let (status, link) = app
            .post_value(
                "/v1/links",
                &json!({"url": format!("https://example.com/{n}")}),
            )
            .await;
        assert_eq!(status, 201, "{link}");
        assert_eq!(app.get("/v1/workspace").await.status(), 200);
    }
    let all = samples(&scrape(&app).await);
    assert_eq!(all["pier_redis_up"], vec![(String::new(), 0.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn readiness_degrades_without_redis_on_sqlite() {
    readiness_degrades_without_redis(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL and Redis: set PIER_TEST_DATABASE_URL and PIER_TEST_REDIS_URL"]
async fn readiness_degrades_without_redis_on_postgres() {
    readiness_degrades_without_redis(Backend::postgres()).await;
}

/// On SIGTERM a node first answers `/readyz` with 503 while still serving, for the drain
/// period, then stops.
#[tokio::test]
async fn readiness_turns_false_while_draining() {
    let server = server(&Backend::Sqlite, &["--shutdown-drain-secs", "3"]).await;
    let mut child = server.start().await;
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for base in [&server.base, &server.admin] {
        let draining = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("still serving");
        assert_eq!(draining.status(), 503);
        let problem: Value = draining.json().await.expect("problem");
        assert_eq!(problem["code"], "draining", "{problem}");
        let alive = client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("still serving");
        assert_eq!(alive.status(), 200, "liveness holds while draining");
    }
    let work = client
        .get(format!("{}/v1/workspace", server.base))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("still serving");
    assert_eq!(
        work.status(),
        200,
        "requests are still served while draining"
    );

    let exited = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stops after the drain")
        .expect("status");
    assert!(exited.success());
}

/// `--role api` serves the API and sends no webhook; `--role worker` sends them and serves no
/// API, only its admin listener. Roles split the nodes of a cluster: on SQLite one process
/// serves a file.
#[tokio::test]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn an_api_node_leaves_deliveries_to_a_worker_node() {
    let receiver = Receiver::start().await;
    let cluster = server(
        &Backend::postgres(),
        &["--allow-private-webhook-targets", "true"],
    )
    .await;
    let api = cluster.another_node(&["--role", "api"]);
    let _api_node = api.start().await;
    publish_to(&api, &receiver, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver.received().is_empty(),
        "an api node sends no webhook"
    );

    let worker = cluster.another_node(&["--role", "worker"]);
    let _worker_node = worker.start().await;
    receiver.wait_for(1).await;
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", worker.base))
        .send()
        .await;
    assert!(refused.is_err(), "a worker node serves no API");
}
