//! Jobs and queues as the API shows them.

use std::collections::BTreeMap;

use pier_core::Timestamp;
use pier_jobs::{AttemptError, ClaimedJob, Job, JobId, JobState, QueueInfo};
use serde::Serialize;

/// One failed attempt, kept on the job (the most recent ones).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AttemptError)]
pub struct AttemptErrorView {
    attempt: u32,
    at: Timestamp,
    error: String,
}

impl From<AttemptError> for AttemptErrorView {
    fn from(e: AttemptError) -> Self {
        Self {
            attempt: e.attempt,
            at: e.at,
            error: e.error,
        }
    }
}

/// A job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Job, example = JobView::example)]
pub struct JobView {
    id: JobId,
    queue: String,
    kind: String,
    payload: serde_json::Value,
    state: JobState,
    priority: i32,
    /// When it becomes (or became) available, or its next attempt.
    run_at: Timestamp,
    /// Attempts started so far.
    attempt: u32,
    max_attempts: u32,
    unique_key: Option<String>,
    /// What the worker reported on completion, if anything.
    result: Option<serde_json::Value>,
    /// The most recent failures, oldest first.
    errors: Vec<AttemptErrorView>,
    /// Cancellation was asked for while the job was running.
    cancel_requested: bool,
    worker_id: Option<String>,
    lease_expires_at: Option<Timestamp>,
    created_at: Timestamp,
    attempted_at: Option<Timestamp>,
    finalized_at: Option<Timestamp>,
}

impl JobView {
    /// What the OpenAPI document shows of a job.
    pub fn example() -> serde_json::Value {
        serde_json::json!({"id": "job_01m8pd9e61ya13bwk7fzzb9vzj", "queue": "emails", "kind": "send_welcome",
            "payload": {"user": 42}, "state": "available", "priority": 0,
            "run_at": "2026-11-30T12:00:00.000000Z", "attempt": 0, "max_attempts": 5,
            "unique_key": "welcome-42", "result": null, "errors": [],
            "cancel_requested": false, "worker_id": null, "lease_expires_at": null,
            "created_at": "2026-11-30T12:00:00.000000Z", "attempted_at": null,
            "finalized_at": null})
    }
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        Self {
            id: job.id,
            queue: job.queue,
            kind: job.kind,
            payload: job.payload,
            state: job.state,
            priority: job.priority,
            run_at: job.run_at,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            unique_key: job.unique_key,
            result: job.result,
            errors: job.errors.into_iter().map(AttemptErrorView::from).collect(),
            cancel_requested: job.cancel_requested,
            worker_id: job.worker_id,
            lease_expires_at: job.lease_expires_at,
            created_at: job.created_at,
            attempted_at: job.attempted_at,
            finalized_at: job.finalized_at,
        }
    }
}

/// A job handed to a worker, with the lease it must present to heartbeat, complete or fail it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ClaimedJob, example = ClaimedJobView::example)]
pub struct ClaimedJobView {
    id: JobId,
    queue: String,
    kind: String,
    payload: serde_json::Value,
    /// 1 on the first run.
    attempt: u32,
    lease_token: String,
    lease_expires_at: Timestamp,
    /// The W3C trace context of the enqueue (a span of the request or job that enqueued this
    /// one), when Pier traces: a worker makes its span for the job a child of it, so the
    /// producer's trace continues into the worker (`tracestate` is not kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    traceparent: Option<String>,
}

impl ClaimedJobView {
    /// What the OpenAPI document shows of a claimed job.
    pub fn example() -> serde_json::Value {
        serde_json::json!({"id": "job_01m8pd9e61ya13bwk7fzzb9vzj", "queue": "emails",
            "kind": "send_welcome", "payload": {"user": 42}, "attempt": 1,
            "lease_token": "3f9c2a7d51e84b6fa0c9d2e1b7a45f10",
            "lease_expires_at": "2026-11-30T12:00:30.000000Z",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    }
}

impl From<ClaimedJob> for ClaimedJobView {
    fn from(job: ClaimedJob) -> Self {
        Self {
            id: job.id,
            queue: job.queue,
            kind: job.kind,
            payload: job.payload,
            attempt: job.attempt,
            lease_token: job.lease_token,
            lease_expires_at: job.lease_expires_at,
            traceparent: job.traceparent,
        }
    }
}

/// A queue as `GET /v1/queues` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = QueueInfo, example = json!({"name": "emails", "paused": false, "concurrency_limit": 5,
                          "counts": {"available": 12, "running": 3, "scheduled": 0,
                                     "retryable": 1, "completed": 940, "discarded": 2,
                                     "cancelled": 0},
                          "oldest_available_age_secs": 0.8}))]
pub struct QueueView {
    name: String,
    paused: bool,
    /// The most jobs of this queue that may run at once, across all nodes.
    concurrency_limit: Option<u32>,
    /// Jobs per state, from counters every state change keeps current: reading them never
    /// counts rows, however long the queue.
    #[schema(value_type = BTreeMap<String, u64>)]
    counts: BTreeMap<&'static str, u64>,
    /// Seconds the job at the head of the queue (the next to be claimed) has been due; 0 when
    /// none is due.
    oldest_available_age_secs: f64,
}

impl From<QueueInfo> for QueueView {
    fn from(q: QueueInfo) -> Self {
        Self {
            name: q.name,
            paused: q.paused,
            concurrency_limit: q.concurrency_limit,
            counts: q.counts,
            oldest_available_age_secs: q.oldest_available_age_secs,
        }
    }
}
