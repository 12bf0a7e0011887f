//! Jobs and queues as the API shows them.

use std::collections::BTreeMap;

use pier_core::Timestamp;
use pier_jobs::{
    AttemptError, ClaimedJob, Compensation, Job, JobId, JobState, QueueInfo, Step, Workflow,
    WorkflowId, WorkflowState,
};
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
    /// The workflow this job is a step (or a compensation) of.
    workflow_id: Option<WorkflowId>,
    /// Its step's name in that workflow.
    step: Option<String>,
    /// A workflow step's dependencies' results by step name, once it was released (a
    /// compensation's: the result of the step it undoes).
    inputs: Option<serde_json::Value>,
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
            "finalized_at": null, "workflow_id": null, "step": null, "inputs": null})
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
            workflow_id: job.workflow.as_ref().map(|(id, _)| id.clone()),
            step: job.workflow.map(|(_, step)| step),
            inputs: job.inputs,
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
    /// A workflow step's dependencies' results by step name (a compensation's: the result of
    /// the step it undoes); absent for a job outside any workflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<serde_json::Value>,
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
            inputs: job.inputs,
        }
    }
}

/// A queue as `GET /v1/queues` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = QueueInfo, example = json!({"name": "emails", "paused": false, "concurrency_limit": 5,
                          "counts": {"pending": 0, "available": 12, "running": 3, "scheduled": 0,
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

/// A workflow as lists show it (without its steps).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WorkflowSummary, example = WorkflowSummaryView::example)]
pub struct WorkflowSummaryView {
    id: WorkflowId,
    name: String,
    state: WorkflowState,
    /// How many steps it has.
    steps_total: u32,
    /// How many of them completed.
    steps_completed: u32,
    /// The step whose failure for good stopped it, if one did.
    failed_step: Option<String>,
    /// The step whose compensation failed for good, if one did (the workflow is `failed`).
    failed_compensation: Option<String>,
    created_at: Timestamp,
    finished_at: Option<Timestamp>,
}

impl WorkflowSummaryView {
    pub fn example() -> serde_json::Value {
        serde_json::json!({"id": "wf_01m8pd9e61ya13bwk7fzzb9vzj", "name": "order-42",
            "state": "running", "steps_total": 3, "steps_completed": 1, "failed_step": null,
            "failed_compensation": null, "created_at": "2026-11-30T12:00:00.000000Z",
            "finished_at": null})
    }
}

impl From<Workflow> for WorkflowSummaryView {
    fn from(w: Workflow) -> Self {
        Self {
            id: w.id,
            name: w.name,
            state: w.state,
            steps_total: w.steps_total,
            steps_completed: w.steps_completed,
            failed_step: w.failed_step,
            failed_compensation: w.failed_compensation,
            created_at: w.created_at,
            finished_at: w.finished_at,
        }
    }
}

/// A workflow and each of its steps.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Workflow, example = WorkflowView::example)]
pub struct WorkflowView {
    #[serde(flatten)]
    summary: WorkflowSummaryView,
    /// Its steps, in the order they were given.
    steps: Vec<StepView>,
}

impl WorkflowView {
    pub fn example() -> serde_json::Value {
        let mut workflow = WorkflowSummaryView::example();
        workflow["steps"] = serde_json::json!([
            {"name": "charge_card", "depends_on": [], "job_id": "job_01m8pd9e61ya13bwk7fzzb9vzj",
             "state": "completed", "compensation": null},
            {"name": "reserve_stock", "depends_on": ["charge_card"],
             "job_id": "job_01m8pd9e4m7br6fm9ty0k66418", "state": "available",
             "compensation": null}]);
        workflow
    }
}

impl From<Workflow> for WorkflowView {
    fn from(mut w: Workflow) -> Self {
        let steps = std::mem::take(&mut w.steps);
        Self {
            summary: w.into(),
            steps: steps.into_iter().map(StepView::from).collect(),
        }
    }
}

/// A step of a workflow and where its job stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WorkflowStep)]
pub struct StepView {
    name: String,
    depends_on: Vec<String>,
    job_id: JobId,
    /// The state of the step's job; `null` once it was pruned.
    state: Option<JobState>,
    /// The step's compensation, once it was started.
    compensation: Option<CompensationView>,
}

impl From<Step> for StepView {
    fn from(s: Step) -> Self {
        Self {
            name: s.name,
            depends_on: s.depends_on,
            job_id: s.job_id,
            state: s.state,
            compensation: s.compensation.map(CompensationView::from),
        }
    }
}

/// A step's compensation job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WorkflowCompensation)]
pub struct CompensationView {
    job_id: JobId,
    /// The state of the compensation's job; `null` once it was pruned.
    state: Option<JobState>,
}

impl From<Compensation> for CompensationView {
    fn from(c: Compensation) -> Self {
        Self {
            job_id: c.job_id,
            state: c.state,
        }
    }
}
