//! Traces as a collector sees them (the OTLP/HTTP protobuf export, decoded with the official
//! definitions): a client's trace through the request, the job it enqueued and the webhook it
//! delivered; jobs enqueued over HTTP carrying the producer's trace to HTTP workers; a worker's
//! report linked back; the resource the standard variables describe; no secret anywhere. Each
//! node runs at the default log level: spans must not depend on it.

use serde_json::{Value, json};

use crate::operations::publish_to;
use crate::support::collector::{Collector, Span};
use crate::support::process::{Server, server};
use crate::support::receiver::Receiver;
use crate::support::{Backend, TestApp, on_both_backends};

on_both_backends!(
    a_trace_runs_from_request_through_job_into_the_webhook,
    http_workers_continue_the_producers_trace,
    in_process_runs_continue_the_producers_trace
);

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const WORKER_SPAN: &str = "b7ad6b7169203331";
const BATCH_WORKER_SPAN: &str = "53995c3f42cd8ad8";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// A node of `backend` exporting to `collector`, as described by the standard variables.
async fn traced_node(backend: &Backend, collector: &Collector) -> Server {
    let mut server = server(backend, &["--allow-private-webhook-targets", "true"]).await;
    server.env = collector.env();
    server.env.extend([
        ("PIER_LOG".into(), "info".into()),
        ("OTEL_SERVICE_NAME".into(), "pier-under-test".into()),
        (
            "OTEL_RESOURCE_ATTRIBUTES".into(),
            "deployment.environment.name=ci,service.namespace=edge".into(),
        ),
    ]);
    server
}

/// The messaging attributes of a span of the queue.
fn assert_messaging(span: &Span, operation: &str, queue: &str) {
    assert_eq!(span.attribute("messaging.system"), Some("pier"), "{span:?}");
    assert_eq!(
        span.attribute("messaging.operation.type"),
        Some(operation),
        "{span:?}"
    );
    assert_eq!(
        span.attribute("messaging.destination.name"),
        Some(queue),
        "{span:?}"
    );
}

/// No span attribute or resource attribute holds any of `secrets`.
fn assert_no_secret(collector: &Collector, secrets: &[&str]) {
    let spans = collector.spans();
    let values = spans
        .iter()
        .flat_map(|s| s.attributes.iter())
        .chain(collector.resources().iter().flatten())
        .map(|(_, v)| v.clone())
        .collect::<Vec<_>>();
    for secret in secrets {
        assert!(
            !values.iter().any(|v| v.contains(secret)),
            "a secret in an exported attribute"
        );
    }
}

/// The client's trace continues through the request, the publish of the delivery job, its run,
/// the webhook attempt, and into the `traceparent` the receiver gets: one trace, each span the
/// child of the one before.
async fn a_trace_runs_from_request_through_job_into_the_webhook(backend: Backend) {
    let collector = Collector::start().await;
    let receiver = Receiver::start().await;
    let server = traced_node(&backend, &collector).await;
    let _child = server.start().await;
    let signing_secret = publish_to(&server, &receiver, Some(&client_traceparent())).await;

    let delivered = receiver.wait_for(1).await;
    let traceparent = delivered[0].header("traceparent").to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(
        parts[1], CLIENT_TRACE,
        "the webhook continues the client's trace"
    );

    let request = collector
        .span("the publishing request", |s| {
            s.name == "request" && s.attribute("http.route") == Some("/v1/events")
        })
        .await;
    let publish = collector.span_in("job.enqueue", CLIENT_TRACE).await;
    let job = collector.span_in("job.run", CLIENT_TRACE).await;
    let attempt = collector.span_in("webhook.attempt", CLIENT_TRACE).await;
    assert_eq!(request.trace_id, CLIENT_TRACE);
    assert_eq!(request.parent_span_id, CLIENT_SPAN);
    assert!(publish.is_child_of(&request), "{publish:?}");
    assert!(
        job.is_child_of(&publish),
        "the job runs in its enqueue's trace"
    );
    assert!(attempt.is_child_of(&job), "the attempt is the job's child");
    assert_eq!(
        parts[2], attempt.span_id,
        "the receiver's parent is the attempt"
    );
    assert_messaging(&publish, "publish", "pier.webhooks");
    assert_messaging(&job, "process", "pier.webhooks");

    let resource = collector
        .resources()
        .into_iter()
        .next()
        .expect("a resource");
    let value = |key: &str| {
        resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(value("service.name"), Some("pier-under-test"));
    assert_eq!(value("deployment.environment.name"), Some("ci"));
    assert_eq!(value("service.namespace"), Some("edge"));
    assert_eq!(value("service.version"), Some(env!("CARGO_PKG_VERSION")));
    assert_no_secret(
        &collector,
        &[&server.key, &server.secret_key, &signing_secret],
    );
}

async fn post(server: &Server, path: &str, body: Value, traceparent: Option<&str>) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .bearer_auth(&server.key)
        .json(&body);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{path}: {status} {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("JSON")
    }
}

/// Jobs enqueued over HTTP, one (through the group commit) or a batch, keep the producer's
/// trace: a claim hands each job's `traceparent`, naming the enqueue's span in the client's
/// trace, and a worker's report with its own `traceparent` is linked to it.
async fn http_workers_continue_the_producers_trace(backend: Backend) {
    let collector = Collector::start().await;
    let server = traced_node(&backend, &collector).await;
    let _child = server.start().await;
    let tp = client_traceparent();
    let job = json!({"queue": "emails", "kind": "send", "payload": {"to": "a@example.com"}});
    post(&server, "/v1/jobs", job.clone(), Some(&tp)).await;
    post(&server, "/v1/jobs/batch", json!({"jobs": [job]}), Some(&tp)).await;

    let claimed = post(&server, "/v1/queues/emails/claim", json!({"max": 10}), None).await;
    let jobs = claimed["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 2, "{claimed}");
    let publishes: Vec<Span> = collector
        .spans()
        .into_iter()
        .filter(|s| s.name == "job.enqueue")
        .collect();
    for job in jobs {
        let traceparent = job["traceparent"].as_str().expect("a traceparent");
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts[1], CLIENT_TRACE, "{job}");
        let publish = collector
            .span("the job's enqueue", |s| {
                s.name == "job.enqueue" && s.span_id == parts[2]
            })
            .await;
        assert_eq!(publish.trace_id, CLIENT_TRACE);
        assert_messaging(&publish, "publish", "emails");
        let request = collector
            .span("the enqueuing request", |s| {
                s.name == "request" && publish.is_child_of(s)
            })
            .await;
        assert_eq!(request.parent_span_id, CLIENT_SPAN, "{publishes:?}");
    }
    let receive = collector
        .span("the claim", |s| s.name == "job.receive")
        .await;
    assert_messaging(&receive, "receive", "emails");
    assert_eq!(receive.links.len(), 2, "linked to each job's enqueue");

    // The worker reports with the trace context of its own span for the job.
    let worker = format!("00-{CLIENT_TRACE}-{WORKER_SPAN}-01");
    let first = &jobs[0];
    let path = format!("/v1/jobs/{}/complete", first["id"].as_str().expect("id"));
    let report = json!({"lease_token": first["lease_token"], "traceparent": worker});
    post(&server, &path, report, None).await;
    let completed = collector
        .span("the report", |s| {
            s.name == "request" && s.attribute("http.route") == Some("/v1/jobs/{id}/complete")
        })
        .await;
    assert_eq!(
        completed.links,
        vec![(CLIENT_TRACE.to_owned(), WORKER_SPAN.to_owned())]
    );

    // A malformed one is refused as any bad field is.
    let second = &jobs[1];
    let path = format!("/v1/jobs/{}/heartbeat", second["id"].as_str().expect("id"));
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .bearer_auth(&server.key)
        .json(&json!({"lease_token": second["lease_token"], "traceparent": "00-abc"}))
        .send()
        .await
        .expect("heartbeat");
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(problem["errors"][0]["field"], "traceparent", "{problem}");

    // A batch report links each job's worker span.
    let batch_worker = format!("00-{CLIENT_TRACE}-{BATCH_WORKER_SPAN}-01");
    let report = json!([{"id": second["id"], "lease_token": second["lease_token"],
                         "error": "bounced", "traceparent": batch_worker}]);
    post(&server, "/v1/jobs/fail", report, None).await;
    let failed = collector
        .span("the batch report", |s| {
            s.name == "request" && s.attribute("http.route") == Some("/v1/jobs/fail")
        })
        .await;
    assert_eq!(
        failed.links,
        vec![(CLIENT_TRACE.to_owned(), BATCH_WORKER_SPAN.to_owned())]
    );
    assert_no_secret(&collector, &[&server.key, &server.secret_key]);
}

/// A job of the caller's own, run in-process by a pool that embeds Pier.
struct Traced {
    /// The `traceparent` of each run's span.
    runs: tokio::sync::mpsc::UnboundedSender<Option<String>>,
}

impl pier_jobs::Worker for Traced {
    const KIND: &'static str = "traced";
    type Payload = Value;

    async fn run(&self, _: pier_jobs::JobContext, _: Value) -> Result<(), pier_jobs::JobFailure> {
        let _ = self.runs.send(pier_core::trace::current_traceparent());
        Ok(())
    }
}

/// A job enqueued over HTTP and run by an in-process pool (a program embedding Pier, with its
/// own subscriber and Pier's trace layer) runs in a span of the producer's trace: a child of
/// the enqueue's span, with the messaging attributes of a process.
async fn in_process_runs_continue_the_producers_trace(backend: Backend) {
    let collector = Collector::start().await;
    let endpoint = format!("{}/v1/traces", collector.url);
    // The layer goes to one thread's subscriber, so the other tests of this process stay
    // untraced: the node and the pool run on a runtime of that thread alone.
    let run = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            use tracing_subscriber::layer::SubscriberExt;
            let (layer, telemetry) = pier::telemetry::export_to(&endpoint).expect("export");
            let subscriber = tracing_subscriber::Registry::default().with(layer);
            let _traced = tracing::subscriber::set_default(subscriber);
            let app = TestApp::spawn(backend).await;
            let job = json!({"queue": "traced", "kind": "traced", "payload": {}});
            let response = app
                .request(reqwest::Method::POST, "/v1/jobs")
                .header("traceparent", client_traceparent())
                .json(&job)
                .send()
                .await
                .expect("enqueue");
            assert_eq!(response.status(), 201);

            let (runs, mut ran) = tokio::sync::mpsc::unbounded_channel();
            let queue = pier_jobs::QueueName::parse("traced").expect("queue");
            let target = pier_jobs::ClaimTarget::workspace(app.workspace(), queue);
            let options = pier_jobs::PoolOptions {
                poll_interval: std::time::Duration::from_millis(50),
                ..pier_jobs::PoolOptions::default()
            };
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let pool = pier_jobs::WorkerPool::new(app.jobs.clone(), target, options)
                .register(Traced { runs })
                .spawn(stopped);
            let traceparent = ran.recv().await.expect("a run").expect("a traced run");
            let _ = stop.send(true);
            pool.await.expect("pool");
            app.stop().await.expect("stop");
            telemetry.shutdown().await;
            traceparent
        })
    });
    let traceparent = run.await.expect("the traced thread");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], CLIENT_TRACE, "{traceparent}");
    let process = collector
        .span("the in-process run", |s| {
            s.name == "job.run" && s.span_id == parts[2]
        })
        .await;
    assert_messaging(&process, "process", "traced");
    let publish = collector.span_in("job.enqueue", CLIENT_TRACE).await;
    assert!(process.is_child_of(&publish), "{process:?} {publish:?}");
}
