//! Sending deliveries: the job handler that signs an event, sends it through the SSRF guard,
//! records the attempt and decides what comes next, all of it idempotent so that a job run twice
//! (at-least-once) does no harm.
//!
//! One attempt, in order: load the delivery (done already, or its endpoint gone or disabled:
//! nothing to send); pass the endpoint's throttle or give the job back until its turn; sign with every live secret; send; then,
//! in one transaction, record the attempt, update the delivery and the endpoint's failure window,
//! disable the endpoint on `410 Gone` or a failure window past its limit, and on an ordered
//! endpoint hand the turn to the next waiting delivery. A failure with attempts left becomes the
//! job's failure with the schedule's next time, so the job engine keeps the delivery durable
//! between attempts.
//!
//! What makes it fast on a busy node: the jobs of one claim load their deliveries and events
//! together ([`load`]), the endpoint and its keys come from a cache ([`crate::targets`]), and
//! the attempts that finish together are recorded in one transaction ([`record`]), so the
//! database sees a few statements per batch rather than several per delivery.

mod discarded;
mod excerpt;
mod load;
mod record;
mod turns;

pub(crate) use discarded::Discarded;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pier_core::Timestamp;
use pier_db::group::{self, Lane};
use pier_jobs::{JobContext, JobFailure, Worker};
use pier_ratelimit::{Algorithm, FailureMode, Limiter, Policy, PolicySpec};
use reqwest::header::{HeaderMap, HeaderValue};
use tracing::Instrument;

use crate::guard::SendError;
use crate::model::{DeliveryState, Endpoint, EndpointId, bounds};
use crate::publish::{DELIVER, DeliverJob};
use crate::store::{WebhookError, WebhookStore};
use crate::targets::Target;
use load::Pending;
use record::{Attempted, Concluded};
use turns::Turns;

/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("Pier-Webhooks/", env!("CARGO_PKG_VERSION"));

/// The job handler for [`crate::queue`].
#[derive(Debug, Clone)]
pub struct Deliverer {
    store: WebhookStore,
    client: reqwest::Client,
    limiter: Arc<Limiter>,
    loads: Lane<load::Key, Option<Pending>, WebhookError>,
    records: Lane<Attempted, Option<JobFailure>, WebhookError>,
    turns: Arc<Turns>,
}

impl Deliverer {
    /// Starts the tasks that load deliveries and record attempts, so it needs a Tokio runtime.
    pub fn new(store: WebhookStore, limiter: Arc<Limiter>) -> reqwest::Result<Self> {
        let settings = store.settings();
        let client =
            store
                .guard()
                .client(settings.connect_timeout, settings.timeout, USER_AGENT)?;
        let lanes = group::committers(store.db.backend());
        let loads = Lane::start(
            store.clone(),
            lanes,
            Arc::new(|store, keys| Box::pin(load::load_many(store, keys))),
        );
        let records = Lane::start(
            store.clone(),
            lanes,
            Arc::new(|store, attempts| Box::pin(record::record_many(store, attempts))),
        );
        Ok(Self {
            store,
            client,
            limiter,
            loads,
            records,
            turns: Arc::default(),
        })
    }
}

/// How one request went.
#[derive(Debug, Clone)]
struct Response {
    status: Option<u16>,
    body: Option<String>,
    error: Option<String>,
    retry_after: Option<Duration>,
    duration: Duration,
}

impl Response {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    fn status_class(&self) -> &'static str {
        match self.status {
            None => "none",
            Some(s) if s < 200 => "1xx",
            Some(s) if s < 300 => "2xx",
            Some(s) if s < 400 => "3xx",
            Some(s) if s < 500 => "4xx",
            Some(_) => "5xx",
        }
    }
}

impl Worker for Deliverer {
    const KIND: &'static str = DELIVER;
    type Payload = DeliverJob;

    async fn run(&self, ctx: JobContext, job: DeliverJob) -> Result<(), JobFailure> {
        let workspace = &ctx.workspace_id;
        let key = (workspace.clone(), job.delivery.clone());
        let Some(pending) = self.loads.call(key).await? else {
            return Ok(());
        };
        if pending.state != DeliveryState::Pending.as_str() {
            // Finished by an earlier run of this job.
            return Ok(());
        }
        let endpoint_id = EndpointId::from_trusted(pending.endpoint_id.clone());
        let target = match self.store.target(workspace, &endpoint_id).await? {
            Some(target) if target.endpoint.enabled => target,
            _ => {
                let mut tx = self.store.db.begin().await?;
                let outcome = Concluded {
                    state: DeliveryState::Failed,
                    response: None,
                    error: Some("the endpoint was disabled or deleted before this attempt"),
                };
                record::conclude(
                    &self.store,
                    &mut tx,
                    workspace,
                    &job.delivery,
                    &pending,
                    outcome,
                )
                .await?;
                tx.commit().await?;
                return Ok(());
            }
        };
        self.throttle(&target.endpoint).await?;
        let span = tracing::info_span!("webhook.attempt",
            otel.kind = "client", delivery_id = %job.delivery, endpoint_id = %endpoint_id,
            event_type = %pending.event_type, http.response.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
        pier_core::trace::start(&span, None);
        let response = self.send(&target, &pending).instrument(span.clone()).await;
        if let Some(status) = response.status {
            span.record("http.response.status_code", i64::from(status));
        }
        record::observe(&response, &pending, self.store.now());
        let attempted = Attempted {
            workspace: workspace.clone(),
            delivery: job.delivery,
            pending: Arc::new(pending),
            endpoint: endpoint_id,
            response,
        };
        match self.records.call(attempted).instrument(span).await? {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

impl Deliverer {
    /// Lets the delivery through if the endpoint's rate limit allows it now; otherwise gives
    /// the job back to the engine until the next free turn at that rate (no attempt spent, no
    /// error recorded), so a throttled endpoint holds a delivery slot only for the decision and
    /// a backlog waits in the queue, spread over its turns, rather than in the node's slots.
    async fn throttle(&self, endpoint: &Endpoint) -> Result<(), JobFailure> {
        let Some(rate) = endpoint.rate_limit_per_second else {
            return Ok(());
        };
        let rate = u64::from(rate);
        let spec = PolicySpec::new(Algorithm::Gcra, rate, 1, Some(rate), FailureMode::Local)
            .map_err(|e| JobFailure::new(format!("the endpoint's rate limit: {e}")))?;
        let policy = Policy::workspace(&endpoint.workspace_id, "webhook-endpoint", spec);
        // The turn counts from the moment of the decision, not from after it: a clock read
        // later (a preempted task, a test moving its clock) would push it too far.
        let decided_at = self.store.now();
        let decision = self
            .limiter
            .check(&policy, endpoint.id.as_str(), 1)
            .await
            .map_err(|e| JobFailure::new(e.to_string()))?;
        if decision.allowed {
            return Ok(());
        }
        let turn = self.turns.reserve(
            (endpoint.workspace_id.as_str(), endpoint.id.as_str()),
            decided_at.saturating_add(decision.retry_after),
            Duration::from_secs(1) / u32::try_from(rate).unwrap_or(u32::MAX),
            decided_at,
        );
        Err(JobFailure::snooze(turn))
    }

    async fn send(&self, target: &Target, pending: &Pending) -> Response {
        let endpoint = &target.endpoint;
        let created = Timestamp::from_micros(pending.event_created_at);
        let body = crate::payload::body(&pending.event_type, created, &pending.payload);
        let timestamp = self.store.now().as_micros().div_euclid(1_000_000);
        let signature = target.keys.signature_header(
            endpoint.ed25519,
            &pending.event_id,
            timestamp,
            body.as_bytes(),
        );
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        set("webhook-id", &pending.event_id);
        set("webhook-timestamp", &timestamp.to_string());
        set("webhook-signature", &signature);
        set("content-type", "application/json");
        // The receiver can continue the trace of the attempt (and so of the publishing request).
        if let Some(traceparent) = pier_core::trace::current_traceparent() {
            set("traceparent", &traceparent);
        }
        let request = self
            .client
            .post(&endpoint.url)
            .headers(headers)
            .body(body)
            .build();
        let started = Instant::now();
        let outcome = match request {
            Ok(request) => self.store.guard().send(&self.client, request).await,
            Err(err) => Err(SendError::from(err)),
        };
        let mut response = match outcome {
            Ok(response) => read(response).await,
            Err(err) => Response {
                status: None,
                body: None,
                error: Some(err.to_string()),
                retry_after: None,
                duration: Duration::ZERO,
            },
        };
        response.duration = started.elapsed();
        response
    }
}

/// Reads the status, `Retry-After` and, of an answer that keeps one ([`excerpt::kept`]), the
/// start of the body, leaving the rest unread.
async fn read(mut response: reqwest::Response) -> Response {
    let status = response.status().as_u16();
    let retry_after = if status == 429 || status == 503 {
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    } else {
        None
    };
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut error = None;
    let mut body = None;
    if excerpt::kept(status, content_type) {
        let mut read = Vec::new();
        while read.len() < bounds::RESPONSE_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(err) => {
                    error = Some(format!("reading the response: {err}"));
                    break;
                }
            }
        }
        body = Some(excerpt::excerpt(&read));
    }
    Response {
        status: Some(status),
        body,
        error,
        retry_after,
        duration: Duration::ZERO,
    }
}
