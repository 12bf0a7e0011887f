//! Sending deliveries: the job handler that signs an event, sends it through the SSRF guard,
//! records the attempt and decides what comes next, all of it idempotent so that a job run twice
//! (at-least-once) does no harm.
//!
//! One attempt, in order: load the delivery (done already, or its endpoint gone or disabled:
//! nothing to send); wait for the endpoint's throttle; sign with every live secret; send; then,
//! in one transaction, record the attempt, update the delivery and the endpoint's failure window,
//! disable the endpoint on `410 Gone` or a failure window past its limit, and on an ordered
//! endpoint hand the turn to the next waiting delivery. A failure with attempts left becomes the
//! job's failure with the schedule's next time, so the job engine keeps the delivery durable
//! between attempts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pier_core::{Timestamp, WorkspaceId};
use pier_db::{Tx, with_reader, with_tx};
use pier_jobs::{JobContext, JobFailure, Worker};
use pier_ratelimit::{Algorithm, FailureMode, Limiter, Policy, PolicySpec};
use reqwest::header::{HeaderMap, HeaderValue};
use tracing::Instrument;

use crate::guard::SendError;
use crate::model::{DeliveryState, DisabledReason, Endpoint, EndpointId, bounds};
use crate::publish::{DELIVER, DeliverJob};
use crate::store::{WebhookError, WebhookStore};

/// The longest a throttled delivery waits in its worker slot.
const MAX_THROTTLE_WAIT: Duration = Duration::from_millis(250);
/// The longest a throttled delivery is given back to the engine for.
const MAX_SNOOZE: Duration = Duration::from_secs(60);

/// The `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("Pier-Webhooks/", env!("CARGO_PKG_VERSION"));

/// The job handler for [`crate::queue`].
#[derive(Debug, Clone)]
pub struct Deliverer {
    store: WebhookStore,
    client: reqwest::Client,
    limiter: Arc<Limiter>,
}

impl Deliverer {
    pub fn new(store: WebhookStore, limiter: Arc<Limiter>) -> reqwest::Result<Self> {
        let settings = store.settings();
        let client =
            store
                .guard()
                .client(settings.connect_timeout, settings.timeout, USER_AGENT)?;
        Ok(Self {
            store,
            client,
            limiter,
        })
    }
}

/// What the delivery job needs.
struct Pending {
    event_id: String,
    event_type: String,
    payload: String,
    event_created_at: i64,
    endpoint_id: String,
    seq: Option<i64>,
    state: String,
    /// Requests sent so far: the schedule counts these, not the job's runs (which include
    /// throttled and rescued ones).
    sent: u32,
}

/// A delivery's final state and what led to it.
struct Concluded<'a> {
    state: DeliveryState,
    /// `None` when no request was sent.
    response: Option<&'a Response>,
    error: Option<&'a str>,
}

/// How one request went.
#[derive(Debug)]
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
        let Some(pending) = self.load(workspace, &job.delivery).await? else {
            return Ok(());
        };
        if pending.state != DeliveryState::Pending.as_str() {
            // Finished by an earlier run of this job.
            return Ok(());
        }
        let endpoint_id = EndpointId::from_trusted(pending.endpoint_id.clone());
        let endpoint = match self.store.endpoint(workspace, &endpoint_id).await? {
            Some(endpoint) if endpoint.enabled => endpoint,
            _ => {
                let mut tx = self.store.db.begin().await?;
                let outcome = Concluded {
                    state: DeliveryState::Failed,
                    response: None,
                    error: Some("the endpoint was disabled or deleted before this attempt"),
                };
                self.conclude(&mut tx, workspace, &job.delivery, &pending, outcome)
                    .await?;
                tx.commit().await?;
                return Ok(());
            }
        };
        self.throttle(&ctx, &endpoint, &pending).await?;
        let span = tracing::info_span!("webhook.attempt",
            otel.kind = "client", delivery_id = %job.delivery, endpoint_id = %endpoint.id,
            event_type = %pending.event_type, http.response.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
        pier_core::trace::start(&span, None);
        let response = self
            .send(workspace, &endpoint, &pending)
            .instrument(span.clone())
            .await?;
        if let Some(status) = response.status {
            span.record("http.response.status_code", i64::from(status));
        }
        self.record(&ctx, &job.delivery, &pending, &endpoint, response)
            .instrument(span)
            .await
    }
}

impl Deliverer {
    /// Two lookups by primary key rather than one join: PostgreSQL's generic plan for the
    /// join, cached while the tables were empty, walked the workspace's events through a
    /// secondary index and slowed every delivery as they grew (measured: 1 ms at 15,000
    /// deliveries against 0.04 ms).
    async fn load(
        &self,
        workspace: &WorkspaceId,
        delivery: &str,
    ) -> Result<Option<Pending>, sqlx::Error> {
        let found: Option<(String, String, Option<i64>, String, i64)> = with_reader!(&self.store.db, pool => {
            sqlx::query_as(
                "SELECT event_id, endpoint_id, seq, state, attempts FROM webhook_deliveries \
                 WHERE workspace_id = $1 AND id = $2",
            )
            .bind(workspace.as_str())
            .bind(delivery)
            .fetch_optional(pool)
            .await
        })?;
        let Some((event_id, endpoint_id, seq, state, sent)) = found else {
            return Ok(None);
        };
        let event: Option<(String, String, i64)> = with_reader!(&self.store.db, pool => {
            sqlx::query_as(
                "SELECT type, payload, created_at FROM webhook_events \
                 WHERE workspace_id = $1 AND id = $2",
            )
            .bind(workspace.as_str())
            .bind(&event_id)
            .fetch_optional(pool)
            .await
        })?;
        Ok(
            event.map(|(event_type, payload, event_created_at)| Pending {
                event_id,
                event_type,
                payload,
                event_created_at,
                endpoint_id,
                seq,
                state,
                sent: u32::try_from(sent).unwrap_or(u32::MAX),
            }),
        )
    }

    /// Lets the delivery through once the endpoint's rate limit allows it, without spending
    /// one of its attempts: a short wait happens here; a longer one gives the job back to the
    /// engine until then (backing off as it repeats), so a slow endpoint with a backlog does
    /// not hold the node's delivery slots.
    async fn throttle(
        &self,
        ctx: &JobContext,
        endpoint: &Endpoint,
        pending: &Pending,
    ) -> Result<(), JobFailure> {
        let Some(rate) = endpoint.rate_limit_per_second else {
            return Ok(());
        };
        let rate = u64::from(rate);
        let spec = PolicySpec::new(Algorithm::Gcra, rate, 1, Some(rate), FailureMode::Local)
            .map_err(|e| JobFailure::new(format!("the endpoint's rate limit: {e}")))?;
        let policy = Policy::workspace(&endpoint.workspace_id, "webhook-endpoint", spec);
        loop {
            let decision = self
                .limiter
                .check(&policy, endpoint.id.as_str(), 1)
                .await
                .map_err(|e| JobFailure::new(e.to_string()))?;
            if decision.allowed {
                return Ok(());
            }
            if decision.retry_after > MAX_THROTTLE_WAIT {
                // The job's runs beyond the requests sent are its earlier snoozes.
                let snoozed = ctx
                    .attempt
                    .saturating_sub(pending.sent.saturating_add(1))
                    .min(6);
                let wait = (decision.retry_after * 2u32.pow(snoozed)).min(MAX_SNOOZE);
                let at = self.store.now().saturating_add(wait);
                return Err(JobFailure::new("throttled by the endpoint's rate limit").retry_at(at));
            }
            tokio::select! {
                () = tokio::time::sleep(decision.retry_after) => {}
                () = ctx.cancelled() => return Err(JobFailure::new("cancelled while throttled")),
            }
        }
    }

    async fn send(
        &self,
        workspace: &WorkspaceId,
        endpoint: &Endpoint,
        pending: &Pending,
    ) -> Result<Response, WebhookError> {
        let keys = self.store.secrets(workspace, &endpoint.id).await?;
        let created = Timestamp::from_micros(pending.event_created_at);
        let body = crate::payload::body(&pending.event_type, created, &pending.payload);
        let timestamp = self.store.now().as_micros().div_euclid(1_000_000);
        let signature = keys.signature_header(
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
        Ok(response)
    }

    /// Records the attempt and moves the delivery on; the job fails (to be retried at the
    /// schedule's time) only while the delivery has attempts left.
    async fn record(
        &self,
        ctx: &JobContext,
        delivery: &str,
        pending: &Pending,
        endpoint: &Endpoint,
        response: Response,
    ) -> Result<(), JobFailure> {
        let workspace = &ctx.workspace_id;
        let now = self.store.now();
        let succeeded = response.succeeded();
        metrics::counter!("pier_webhook_attempts_total",
            "outcome" => if succeeded { "succeeded" } else { "failed" },
            "status_class" => response.status_class())
        .increment(1);
        metrics::histogram!("pier_webhook_attempt_duration_seconds")
            .record(response.duration.as_secs_f64());
        if succeeded {
            let published = Timestamp::from_micros(pending.event_created_at);
            metrics::histogram!("pier_webhook_delivery_latency_seconds")
                .record(now.duration_since(published).as_secs_f64());
        }
        let error = response.error.clone().or_else(|| {
            (!succeeded).then(|| match response.status {
                Some(status) => format!("the endpoint answered {status}"),
                None => "no response".to_owned(),
            })
        });

        // Relaxed: if a crash loses this commit, it loses the job's completion after it too
        // (the log is written in order), so the job runs again and re-sends, which
        // at-least-once delivery already allows.
        let mut tx = self
            .store
            .db
            .begin_relaxed()
            .await
            .map_err(WebhookError::from)?;
        insert_attempt(&mut tx, workspace, delivery, pending, now, &response).await?;
        let failure = if succeeded {
            let outcome = Concluded {
                state: DeliveryState::Succeeded,
                response: Some(&response),
                error: None,
            };
            self.conclude(&mut tx, workspace, delivery, pending, outcome)
                .await?;
            clear_failing(&mut tx, workspace, &endpoint.id).await?;
            None
        } else {
            let error = error.unwrap_or_default();
            let disable = if response.status == Some(410) {
                Some(DisabledReason::Gone)
            } else {
                let since = mark_failing(&mut tx, workspace, &endpoint.id, now).await?;
                (now.duration_since(since) >= self.store.settings.disable_after)
                    .then_some(DisabledReason::Failing)
            };
            let next = match disable {
                Some(reason) => {
                    self.store
                        .disable(&mut tx, workspace, &endpoint.id, reason)
                        .await?;
                    None
                }
                None => self.store.settings.schedule.after_failure(
                    pending.sent.saturating_add(1),
                    response.retry_after,
                    self.store.settings.max_retry_after,
                ),
            };
            match next {
                Some(wait) => {
                    let at = now.saturating_add(wait);
                    self.retry_later(&mut tx, workspace, delivery, &response, &error, at)
                        .await?;
                    Some(JobFailure::new(error).retry_at(at))
                }
                None => {
                    let outcome = Concluded {
                        state: DeliveryState::Failed,
                        response: Some(&response),
                        error: Some(&error),
                    };
                    self.conclude(&mut tx, workspace, delivery, pending, outcome)
                        .await?;
                    None
                }
            }
        };
        tx.commit().await.map_err(WebhookError::from)?;
        failure.map_or(Ok(()), Err)
    }

    /// Gives a delivery its final state, and on an ordered endpoint the turn to the next in
    /// line.
    async fn conclude(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        delivery: &str,
        pending: &Pending,
        outcome: Concluded<'_>,
    ) -> Result<(), WebhookError> {
        let change = Change {
            state: outcome.state,
            status: outcome.response.and_then(|r| r.status),
            error: outcome.error,
            next_attempt_at: None,
            attempted: outcome.response.is_some(),
        };
        update_delivery(tx, workspace, delivery, self.store.now(), change).await?;
        self.pass_turn(tx, workspace, pending).await
    }

    async fn retry_later(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        delivery: &str,
        response: &Response,
        error: &str,
        at: Timestamp,
    ) -> Result<(), WebhookError> {
        let change = Change {
            state: DeliveryState::Pending,
            status: response.status,
            error: Some(error),
            next_attempt_at: Some(at),
            attempted: true,
        };
        update_delivery(tx, workspace, delivery, self.store.now(), change).await
    }

    /// On an ordered endpoint, hands the turn to the next waiting delivery.
    async fn pass_turn(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        pending: &Pending,
    ) -> Result<(), WebhookError> {
        if pending.seq.is_some() {
            let endpoint = EndpointId::from_trusted(pending.endpoint_id.clone());
            self.store.start_next(tx, workspace, &endpoint).await?;
        }
        Ok(())
    }
}

/// Reads the status, `Retry-After` and the first 4 KiB of the body, leaving the rest unread.
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
    let mut body = Vec::new();
    let mut error = None;
    while body.len() < bounds::RESPONSE_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(err) => {
                error = Some(format!("reading the response: {err}"));
                break;
            }
        }
    }
    body.truncate(bounds::RESPONSE_BODY_BYTES);
    Response {
        status: Some(status),
        body: Some(String::from_utf8_lossy(&body).into_owned()),
        error,
        retry_after,
        duration: Duration::ZERO,
    }
}

async fn insert_attempt(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    delivery: &str,
    pending: &Pending,
    now: Timestamp,
    response: &Response,
) -> Result<(), WebhookError> {
    let error = response
        .error
        .as_ref()
        .map(|e| e.chars().take(bounds::ERROR_CHARS).collect::<String>());
    // Text columns cannot hold NUL on PostgreSQL; a receiver's body may.
    let body = response.body.as_ref().map(|b| b.replace('\0', "\u{fffd}"));
    with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO webhook_attempts (workspace_id, id, delivery_id, event_id, endpoint_id, \
             attempted_at, duration_ms, status_code, response_body, error, succeeded) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(workspace.as_str())
        .bind(crate::model::AttemptId::new(now).as_str())
        .bind(delivery)
        .bind(&pending.event_id)
        .bind(&pending.endpoint_id)
        .bind(now.as_micros())
        .bind(i64::try_from(response.duration.as_millis()).unwrap_or(i64::MAX))
        .bind(response.status.map(i64::from))
        .bind(body)
        .bind(error)
        .bind(response.succeeded())
        .execute(conn)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// A delivery's new state after an attempt (or after finding it cannot be sent).
struct Change<'a> {
    state: DeliveryState,
    status: Option<u16>,
    error: Option<&'a str>,
    next_attempt_at: Option<Timestamp>,
    /// Whether a request was sent, which counts as an attempt.
    attempted: bool,
}

async fn update_delivery(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    delivery: &str,
    now: Timestamp,
    change: Change<'_>,
) -> Result<(), WebhookError> {
    let error = change
        .error
        .map(|e| e.chars().take(bounds::ERROR_CHARS).collect::<String>());
    with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, last_status = COALESCE($2, last_status), \
             last_error = $3, next_attempt_at = $4, attempts = attempts + $5, updated_at = $6 \
             WHERE workspace_id = $7 AND id = $8",
        )
        .bind(change.state.as_str())
        .bind(change.status.map(i64::from))
        .bind(error)
        .bind(change.next_attempt_at.map(Timestamp::as_micros))
        .bind(i64::from(change.attempted))
        .bind(now.as_micros())
        .bind(workspace.as_str())
        .bind(delivery)
        .execute(conn)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// Starts the endpoint's failure window if it is not running; returns when it started.
async fn mark_failing(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
    now: Timestamp,
) -> Result<Timestamp, WebhookError> {
    let since: Option<(i64,)> = with_tx!(tx, conn => {
        sqlx::query_as(
            "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $1) \
             WHERE workspace_id = $2 AND id = $3 RETURNING failing_since",
        )
        .bind(now.as_micros())
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .fetch_optional(conn)
        .await
    })?;
    Ok(since.map_or(now, |(s,)| Timestamp::from_micros(s)))
}

async fn clear_failing(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
) -> Result<(), WebhookError> {
    with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE webhook_endpoints SET failing_since = NULL WHERE workspace_id = $1 \
             AND id = $2 AND failing_since IS NOT NULL",
        )
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .execute(conn)
        .await
        .map(drop)
    })?;
    Ok(())
}
