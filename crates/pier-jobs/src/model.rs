//! The job model: ids, validated names, states, retry policy and what the store returns.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use pier_core::{Timestamp, WorkspaceId, define_id};

use crate::workflow::{WorkflowId, WorkflowState};
use serde::{Deserialize, Serialize};

define_id!(
    /// A job id, `job_…`.
    JobId,
    "job"
);

pub(crate) fn valid_name(text: &str, max: usize) -> bool {
    (1..=max).contains(&text.len())
        && text.as_bytes()[0].is_ascii_alphanumeric()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

pub(crate) const NAME_RULE: &str =
    "letters, digits, `_`, `-`, `.` or `:`, starting with a letter or digit";
/// What `valid_name` accepts, as a pattern.
pub(crate) const NAME_PATTERN: &str = "[A-Za-z0-9][A-Za-z0-9_.:-]*$";

/// The prefix of Pier's own queues (e.g. `pier.webhooks`): tenants can neither enqueue into,
/// claim from, pause nor list them, and only they may be served across workspaces.
pub const RESERVED_PREFIX: &str = "pier.";

/// A queue name, e.g. `default`, `emails`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(String);

impl QueueName {
    pub const MAX_LEN: usize = 64;

    /// A tenant's queue: 1 to 64 name characters, outside the reserved `pier.` namespace.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !valid_name(text, Self::MAX_LEN) {
            return Err(format!(
                "must be 1 to {} {NAME_RULE} (got `{}`)",
                Self::MAX_LEN,
                pier_core::id::Truncated(text)
            ));
        }
        if is_reserved(text) {
            return Err(format!(
                "names starting with `{RESERVED_PREFIX}` are reserved for Pier's own queues"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// One of Pier's own queues, `pier.<name>`. Only Pier's code calls this, with a literal.
    pub fn internal(name: &str) -> Self {
        let full = format!("{RESERVED_PREFIX}{name}");
        debug_assert!(
            valid_name(&full, Self::MAX_LEN),
            "bad internal queue {full}"
        );
        Self(full)
    }

    pub fn default_queue() -> Self {
        Self("default".to_owned())
    }

    pub fn is_internal(&self) -> bool {
        is_reserved(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Case-insensitive, so `PIER.x` cannot pass for a tenant's queue beside `pier.x` either.
fn is_reserved(name: &str) -> bool {
    name.get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
}

impl utoipa::PartialSchema for QueueName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let tenant = format!(
            "^(?!{}){NAME_PATTERN}",
            pier_core::schema::any_case(RESERVED_PREFIX)
        );
        pier_core::schema::string(1, Self::MAX_LEN)
            .pattern(Some(tenant))
            .into()
    }
}

impl utoipa::ToSchema for QueueName {}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a job does, e.g. `send_email`; workers dispatch on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKind(String);

impl JobKind {
    pub const MAX_LEN: usize = 128;

    pub fn parse(text: &str) -> Result<Self, String> {
        if valid_name(text, Self::MAX_LEN) {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "must be 1 to {} {NAME_RULE} (got `{}`)",
                Self::MAX_LEN,
                pier_core::id::Truncated(text)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl utoipa::PartialSchema for JobKind {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        pier_core::schema::string(1, Self::MAX_LEN)
            .pattern(Some(format!("^{NAME_PATTERN}")))
            .into()
    }
}

impl utoipa::ToSchema for JobKind {}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life. `completed`, `discarded` (the dead-letter state) and `cancelled`
/// are final.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// A workflow step waiting for the steps it depends on to complete.
    Pending,
    /// Waiting for its `run_at`.
    Scheduled,
    /// Ready to be claimed.
    Available,
    /// Claimed by a worker holding a lease.
    Running,
    /// Failed, waiting for its next attempt at `run_at`.
    Retryable,
    Completed,
    /// Out of attempts (or failed for good); retry it by hand.
    Discarded,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        Self::Pending,
        Self::Scheduled,
        Self::Available,
        Self::Running,
        Self::Retryable,
        Self::Completed,
        Self::Discarded,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Available => "available",
            Self::Running => "running",
            Self::Retryable => "retryable",
            Self::Completed => "completed",
            Self::Discarded => "discarded",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Discarded | Self::Cancelled)
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{}` is not a job state; expected one of pending, scheduled, available, \
                 running, retryable, completed, discarded, cancelled",
                    pier_core::id::Truncated(s)
                )
            })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a failed job is retried.
///
/// The delay before attempt `n + 1` after failed attempt `n` is
/// `d = min(base · 2^(n−1), max)`, jittered uniformly into `[d/2, d]` so that jobs failing
/// together do not retry together. Defaults: 20 attempts, base 1 s, max 1 h, so a job that
/// always fails reaches the dead-letter state 4.6 to 9 hours after its first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 20,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// The un-jittered delay after failed attempt `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(40);
        self.backoff_base
            .saturating_mul(1 << doublings.min(31))
            .min(self.backoff_max)
    }

    /// The jittered delay: uniform in `[ceiling/2, ceiling]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(rand::random_range(0..=spread))
    }
}

/// The default lease a claim holds before it must be extended by a heartbeat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A validated request to enqueue a job; made by [`JobSpec::build`](crate::JobSpec::build), which
/// applies the same rules to every caller.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub(crate) queue: QueueName,
    pub(crate) kind: JobKind,
    pub(crate) payload: String,
    /// Not before; `None` means now.
    pub(crate) run_at: Option<Timestamp>,
    /// Smaller runs first.
    pub(crate) priority: i32,
    pub(crate) retry: RetryPolicy,
    /// While a job with this key is unfinished, enqueuing another returns it instead.
    pub(crate) unique_key: Option<String>,
    /// `None`: the store's default lease.
    pub(crate) lease: Option<Duration>,
    /// The trace context to store, when the enqueue happens away from the span it continues
    /// (a group commit's committer); `None`: the current span's.
    pub(crate) trace_parent: Option<String>,
    /// The workflow step this job runs (or compensates), if any.
    pub(crate) step: Option<StepOf>,
}

/// What a job of a workflow knows of it: the workflow, the step, whether it waits for its
/// dependencies (`pending`), and the inputs it starts with (a compensation's).
#[derive(Debug, Clone)]
pub(crate) struct StepOf {
    pub(crate) workflow_id: String,
    pub(crate) name: String,
    pub(crate) held: bool,
    pub(crate) inputs: Option<String>,
}

impl NewJob {
    /// Continues the trace `traceparent` (a [`enqueue_span`](crate::enqueue_span)'s, made in
    /// the caller's span) when the enqueue happens away from that span, in a group commit.
    #[must_use]
    pub fn continuing(mut self, traceparent: Option<String>) -> Self {
        self.trace_parent = traceparent;
        self
    }

    /// Moves the job to `queue`, which may be one of Pier's own ([`QueueName::internal`]).
    #[must_use]
    pub fn on_queue(mut self, queue: QueueName) -> Self {
        self.queue = queue;
        self
    }

    pub fn queue(&self) -> &QueueName {
        &self.queue
    }
}

/// One failed attempt, kept on the job (the most recent ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub at: Timestamp,
    pub error: String,
}

/// A job as the store reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub state: JobState,
    pub priority: i32,
    /// When it becomes (or became) available, or its next attempt.
    pub run_at: Timestamp,
    /// Attempts started so far.
    pub attempt: u32,
    pub max_attempts: u32,
    pub unique_key: Option<String>,
    /// What the worker reported on completion, if anything.
    pub result: Option<serde_json::Value>,
    /// The most recent failures, oldest first.
    pub errors: Vec<AttemptError>,
    /// Cancellation was asked for while the job was running.
    pub cancel_requested: bool,
    pub worker_id: Option<String>,
    pub lease_expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub attempted_at: Option<Timestamp>,
    pub finalized_at: Option<Timestamp>,
    /// The workflow and step this job runs (or compensates), if any.
    pub workflow: Option<(WorkflowId, String)>,
    /// A workflow step's dependencies' results by step name, once released (a compensation's:
    /// the result of the step it undoes).
    pub inputs: Option<serde_json::Value>,
}

/// A job handed to a worker, with the lease it must present to heartbeat, complete or fail it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub id: JobId,
    pub workspace_id: WorkspaceId,
    pub queue: String,
    pub kind: String,
    pub payload: serde_json::Value,
    /// 1 on the first run.
    pub attempt: u32,
    pub lease_token: String,
    pub lease_expires_at: Timestamp,
    /// The W3C trace context of the enqueue (a span of the request or job that enqueued this
    /// one), when Pier traces: a worker makes its span for the job a child of it, so the
    /// producer's trace continues into the worker (`tracestate` is not kept).
    pub traceparent: Option<String>,
    /// A workflow step's dependencies' results by step name (see [`Job::inputs`]).
    pub inputs: Option<serde_json::Value>,
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    pub job: Job,
    /// True when an unfinished job with the same unique key was returned instead.
    pub existing: bool,
}

/// Why a job operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no such job")]
    NotFound,
    /// The lease expired and the job was rescued (or finished) since this token was issued.
    #[error("the lease token is stale: the job was rescued, finished or re-claimed")]
    StaleLease,
    #[error("the job is {0}, which does not allow this")]
    WrongState(JobState),
    #[error("another unfinished job holds this job's unique key")]
    UniqueConflict,
    #[error("the workspace already has settings for {0} queues; reset some to the defaults")]
    TooManyQueues(i64),
    #[error("no such workflow")]
    WorkflowNotFound,
    #[error("the workflow is {0}, which does not allow this")]
    WorkflowState(WorkflowState),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(QueueName::parse("emails.high-priority:v2").is_ok());
        assert!(QueueName::parse("").is_err());
        assert!(QueueName::parse("-leading").is_err());
        assert!(QueueName::parse("spa ce").is_err());
        assert!(QueueName::parse(&"q".repeat(65)).is_err());
        for reserved in ["pier.webhooks", "PIER.x", "Pier.y"] {
            assert!(QueueName::parse(reserved).is_err(), "{reserved}");
        }
        assert!(QueueName::parse("pierre").is_ok());
        assert!(QueueName::internal("webhooks").is_internal());
        assert!(!QueueName::default_queue().is_internal());
        assert!(JobKind::parse(&"k".repeat(128)).is_ok());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let policy = RetryPolicy::default();
        let ceilings: Vec<u64> = (1..=14).map(|n| policy.ceiling(n).as_secs()).collect();
        assert_eq!(
            ceilings,
            [
                1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600
            ]
        );
        assert_eq!(policy.ceiling(1000), Duration::from_secs(3600));
        for attempt in 1..=20 {
            let d = policy.delay(attempt);
            let c = policy.ceiling(attempt);
            assert!(
                d >= c / 2 && d <= c,
                "attempt {attempt}: {d:?} within [{:?}, {c:?}]",
                c / 2
            );
        }
    }
}
