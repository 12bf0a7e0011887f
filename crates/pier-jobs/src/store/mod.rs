//! The job store: all SQL for jobs and queues, for both backends, next to each other. Most
//! statements are shared; the differences (`FOR UPDATE SKIP LOCKED`, arrays versus `json_each`,
//! `NOTIFY`) are spelled out where they occur.

mod claim;
mod counts;
mod enqueue;
mod finish;
mod listing;
mod maintenance;
mod operator;
mod progress;
mod queues;
mod workflows;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use pier_core::WorkspaceId;
use pier_core::{Clock, Timestamp};
use pier_db::{Db, JsonList, Outbox, Publishing, Tx, with_tx};

pub use claim::{ClaimLimits, ClaimTarget, Heartbeat};
pub use finish::{Completion, Failure, Held, LeaseToken, MAX_ERROR_CHARS, MAX_RESULT_BYTES};
pub use listing::list_statement;
pub use maintenance::Retention;
pub use queues::{CONCURRENCY_LIMIT, MAX_QUEUE_SETTINGS, QueueInfo, QueuePatch};

use crate::model::{AttemptError, DEFAULT_LEASE, Job, JobId, JobKind, JobState, QueueName};
use crate::notify::Notifier;
use crate::workflow::WorkflowId;

/// How many failures a job keeps.
const KEPT_ERRORS: usize = 10;

pub(crate) const JOB_COLUMNS: &str = "id, workspace_id, queue, kind, payload, state, priority, \
    run_at, attempt, max_attempts, unique_key, result, errors, cancel_requested, worker_id, \
    lease_expires_at, created_at, attempted_at, finalized_at, workflow_id, workflow_step, inputs";

// Held jobs. Heartbeat, complete, fail and release find a job by its primary key and its lease
// token. A token is only ever set on a running job (the `jobs_lease_only_while_running`
// constraint: every transition out of `running` clears it), so a matching token *is* a running
// job held under it, and the statements do not name the state as well: PostgreSQL, before it
// has statistics on a freshly filled table, would then walk the running-jobs index once per job
// of a batch (measured: 113 s instead of 30 ms for 2,000 completions among 200,000 running).

/// The states of a job that is still waiting to run, as SQL (a workflow step `pending` on its
/// dependencies is not: it is released first).
pub(crate) const WAITING: &str = "('available', 'scheduled', 'retryable')";
/// The states of an unfinished job, as SQL.
pub(crate) const UNFINISHED: &str = "('scheduled', 'available', 'running', 'retryable')";

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: String,
    #[allow(dead_code)]
    workspace_id: String,
    queue: String,
    kind: String,
    payload: String,
    state: String,
    priority: i64,
    run_at: i64,
    attempt: i64,
    max_attempts: i64,
    unique_key: Option<String>,
    result: Option<String>,
    errors: String,
    cancel_requested: bool,
    worker_id: Option<String>,
    lease_expires_at: Option<i64>,
    created_at: i64,
    attempted_at: Option<i64>,
    finalized_at: Option<i64>,
    workflow_id: Option<String>,
    workflow_step: Option<String>,
    inputs: Option<String>,
}

/// Runs `sql`, an update of held jobs whose `$1` is the time now and `$2` the jobs as a
/// [`JsonList`], unprepared as [`pier_db::Backend::json_rows`] asks, and returns its rows.
pub(crate) async fn update_listed<T>(
    tx: &mut Tx,
    sql: &str,
    now: i64,
    rows: &JsonList,
) -> Result<Vec<T>, sqlx::Error>
where
    T: Send + Unpin,
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    with_tx!(tx, conn => {
        sqlx::query_as(sql)
            .persistent(false)
            .bind(now)
            .bind(rows.as_str())
            .fetch_all(conn)
            .await
    })
}

pub(crate) fn decode_error(what: &str, err: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("job {what}: {err}").into())
}

pub(crate) fn small(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl TryFrom<JobRow> for Job {
    type Error = sqlx::Error;
    fn try_from(row: JobRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: JobId::from_trusted(row.id),
            queue: row.queue,
            kind: row.kind,
            payload: serde_json::from_str(&row.payload).map_err(|e| decode_error("payload", e))?,
            state: row.state.parse().map_err(|e| decode_error("state", e))?,
            priority: i32::try_from(row.priority).unwrap_or(0),
            run_at: Timestamp::from_micros(row.run_at),
            attempt: small(row.attempt),
            max_attempts: small(row.max_attempts),
            unique_key: row.unique_key,
            result: row
                .result
                .map(|r| serde_json::from_str(&r))
                .transpose()
                .map_err(|e| decode_error("result", e))?,
            errors: parse_errors(&row.errors)?,
            cancel_requested: row.cancel_requested,
            worker_id: row.worker_id,
            lease_expires_at: row.lease_expires_at.map(Timestamp::from_micros),
            created_at: Timestamp::from_micros(row.created_at),
            attempted_at: row.attempted_at.map(Timestamp::from_micros),
            finalized_at: row.finalized_at.map(Timestamp::from_micros),
            workflow: row
                .workflow_id
                .map(WorkflowId::from_trusted)
                .zip(row.workflow_step),
            inputs: parse_inputs(row.inputs.as_deref())?,
        })
    }
}

/// Reads a job's inputs (JSON text, when it has any).
pub(crate) fn parse_inputs(text: Option<&str>) -> Result<Option<serde_json::Value>, sqlx::Error> {
    text.map(serde_json::from_str)
        .transpose()
        .map_err(|e| decode_error("inputs", e))
}

/// Reads a job's failure history. A corrupt one is an error, never read as empty: the next
/// failure would otherwise overwrite the history with only itself.
pub(crate) fn parse_errors(text: &str) -> Result<Vec<AttemptError>, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| decode_error("error history", e))
}

/// Appends a failure, keeping the most recent [`KEPT_ERRORS`].
pub(crate) fn push_error(text: &str, error: AttemptError) -> Result<String, sqlx::Error> {
    let mut errors = parse_errors(text)?;
    errors.push(error);
    let excess = errors.len().saturating_sub(KEPT_ERRORS);
    errors.drain(..excess);
    serde_json::to_string(&errors).map_err(|e| sqlx::Error::Encode(e.into()))
}

pub(crate) fn to_jobs(rows: Vec<JobRow>) -> Result<Vec<Job>, sqlx::Error> {
    rows.into_iter().map(Job::try_from).collect()
}

/// Filters for listing jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub queue: Option<QueueName>,
    pub state: Option<JobState>,
    pub kind: Option<JobKind>,
}

/// Jobs on the configured database.
#[derive(Debug, Clone)]
pub struct JobStore {
    db: Db,
    clock: Arc<dyn Clock>,
    notifier: Notifier,
    default_lease: Duration,
    /// Where discarded jobs are announced, once set (shared by every clone). Held weakly: the
    /// outbox (webhooks) holds this store to enqueue its deliveries.
    outbox: Arc<OnceLock<Weak<dyn Outbox>>>,
    /// Where the turns of Pier's own queues stand on this node (see `claim`).
    turns: claim::Turns,
    /// What the owners of job kinds do when one of their jobs is discarded (shared by every
    /// clone; one entry per kind registered, a handful).
    on_discard: Arc<RwLock<HashMap<&'static str, Arc<dyn OnDiscard>>>>,
}

/// The owner of a job kind whose jobs stand for records of its own (a webhook delivery, say):
/// told in the transaction that discards such a job, so that the record ends with it and never
/// waits for a job that will not run again.
pub trait OnDiscard: Send + Sync + std::fmt::Debug {
    /// `payload` is the discarded job's; `error` its last failure.
    fn discarded<'a>(
        &'a self,
        jobs: &'a JobStore,
        tx: &'a mut Tx,
        workspace: &'a WorkspaceId,
        payload: serde_json::Value,
        error: &'a str,
    ) -> Publishing<'a>;
}

impl JobStore {
    pub fn new(db: Db, clock: Arc<dyn Clock>, notifier: Notifier) -> Self {
        Self {
            db,
            clock,
            notifier,
            default_lease: DEFAULT_LEASE,
            outbox: Arc::default(),
            turns: claim::Turns::default(),
            on_discard: Arc::default(),
        }
    }

    /// Calls `hook` whenever a job of `kind` is discarded (see [`OnDiscard`]). The hook is
    /// handed this store when called, so it need not hold one.
    pub fn on_discard(&self, kind: &'static str, hook: Arc<dyn OnDiscard>) {
        let mut hooks = self
            .on_discard
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        hooks.insert(kind, hook);
    }

    pub(crate) fn discard_hook(&self, kind: &str) -> Option<Arc<dyn OnDiscard>> {
        let hooks = self
            .on_discard
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        hooks.get(kind).cloned()
    }

    /// Announces every tenant job that runs out of attempts as `job.discarded` through
    /// `outbox`, in the transaction that discards it. Set once, for this store and its clones.
    pub fn announce_discards(&self, outbox: &Arc<dyn Outbox>) {
        let _ = self.outbox.set(Arc::downgrade(outbox));
    }

    pub(crate) fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        self.outbox.get().and_then(Weak::upgrade)
    }

    /// Sets the lease of jobs that do not choose their own.
    #[must_use]
    pub fn with_default_lease(mut self, lease: Duration) -> Self {
        self.default_lease = lease;
        self
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A transaction that does not wait for its commit to reach disk on PostgreSQL. Only for
    /// records whose loss in a crash at-least-once delivery already absorbs: a lost claim or
    /// completion means the job runs again, never that it is lost. Enqueues, cancellations and
    /// settings always commit durably.
    pub(crate) async fn begin_lax(&self) -> Result<Tx, sqlx::Error> {
        self.db.begin_relaxed().await
    }

    /// A tenant's job; Pier's own jobs (in `pier.` queues) are not found.
    pub async fn get(
        &self,
        workspace: &WorkspaceId,
        id: &JobId,
    ) -> Result<Option<Job>, sqlx::Error> {
        let row: Option<JobRow> = self
            .db
            .find_owned("jobs", JOB_COLUMNS, workspace.as_str(), "id", id.as_str())
            .await?;
        let job = row.map(Job::try_from).transpose()?;
        Ok(job.filter(|job| !job.queue.starts_with(crate::model::RESERVED_PREFIX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_history_is_an_error() {
        assert!(parse_errors("not json").is_err());
        let error = AttemptError {
            attempt: 1,
            at: Timestamp::from_micros(0),
            error: "boom".into(),
        };
        assert!(push_error("{\"truncated\": ", error).is_err());
    }

    #[test]
    fn keeps_the_latest_errors() {
        let mut text = "[]".to_owned();
        for attempt in 1..=15 {
            let error = AttemptError {
                attempt,
                at: Timestamp::from_micros(0),
                error: "boom".into(),
            };
            text = push_error(&text, error).expect("valid history");
        }
        let kept = parse_errors(&text).expect("valid history");
        assert_eq!(kept.len(), KEPT_ERRORS);
        assert_eq!(kept.first().map(|e| e.attempt), Some(6));
        assert_eq!(kept.last().map(|e| e.attempt), Some(15));
    }
}
