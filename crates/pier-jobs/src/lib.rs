//! Jobs: a durable queue that any language can use over HTTP and that Pier's own capabilities use
//! in-process.
//!
//! Delivery is **at least once**. A claim hands a worker a job with a fresh lease token and a lease
//! deadline; heartbeats extend the deadline; complete and fail must present the token. When a
//! lease expires (the worker crashed, hung or lost its network), maintenance rescues the job within
//! seconds: the attempt counts as failed and the job is retried or discarded. The old worker's
//! token is then stale and changes nothing (fencing). A job can therefore run more than once — a
//! worker can finish its work and crash before reporting it — so handlers must be idempotent:
//! make the effect keyed by the job id (an upsert, a unique constraint, an idempotency key on the
//! API you call) so a second run does no harm.
//!
//! States: `scheduled → available → running → completed`; a failed attempt goes to `retryable`
//! (and back to `available` when due) until `max_attempts`, then `discarded` (the dead-letter
//! state, retried by hand); `cancelled` ends waiting jobs at once and running ones when their
//! handler acknowledges the signal. A workflow step with dependencies starts `pending` and is
//! released (to `available`) by the completion of its last dependency; a worker can fail a job
//! for good (discarded at once). See [`WorkflowSpec`] and `docs/workflows.md`.

mod group;
mod metrics;
mod model;
mod notify;
mod spec;
mod store;
mod trace;
mod worker;
mod workflow;

pub use group::GroupCommit;
pub use metrics::MAX_QUEUE_LABELS;
pub use model::{
    AttemptError, ClaimedJob, DEFAULT_LEASE, Enqueued, Job, JobError, JobId, JobKind, JobState,
    NewJob, QueueName, RESERVED_PREFIX, RetryPolicy,
};
pub use notify::{Notifier, Subscription, WaitRefused, WaitSlot, WaiterLimits};
pub use spec::{
    BackoffSpec, JobSpec, LEASE_SECONDS_RANGE, MAX_ATTEMPTS_RANGE, MAX_PAYLOAD_BYTES,
    PRIORITY_RANGE, lease_seconds,
};
pub use store::{
    CONCURRENCY_LIMIT, ClaimLimits, ClaimTarget, Completion, Failure, Heartbeat, Held, JobFilter,
    JobStore, LeaseToken, MAX_ERROR_CHARS, MAX_QUEUE_SETTINGS, MAX_RESULT_BYTES, OnDiscard,
    QueueInfo, QueuePatch, Retention, list_statement,
};
pub use worker::{JobContext, JobFailure, PoolOptions, Worker, WorkerPool};
pub use workflow::{
    Compensation, DEFAULT_MAX_WORKFLOW_STEPS, Inputs, NewWorkflow, STEP_NAME_MAX_LEN, Step,
    StepSpec, WORKFLOW_NAME_MAX_CHARS, Workflow, WorkflowId, WorkflowSpec, WorkflowState,
};

/// The span of an enqueue into `queue` of jobs written away from the caller's span (by a
/// group commit's committer): made in the caller's span, its trace context goes on the jobs
/// ([`NewJob::continuing`]) and the write is instrumented with it.
pub fn enqueue_span(queue: &QueueName) -> tracing::Span {
    trace::publish(Some(queue.as_str()), 1)
}

/// The tables this crate owns (`jobs`, `queues`, `job_counts`, `workflows`, `workflow_steps`),
/// for [`pier_db::Db::migrate`].
pub const MIGRATIONS: &[pier_db::Migration] = pier_db::migrations!(
    2 => "0002_jobs",
    3 => "0003_jobs_by_workspace",
    5 => "0005_lease_only_while_running",
    10 => "0010_job_trace_context",
    15 => "0015_fair_internal_claims",
    21 => "0021_jobs_listed_by_filter",
    24 => "0024_jobs_listed_tenants_only",
    26 => "0026_workflows",
);
