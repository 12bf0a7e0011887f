//! Ending attempts: complete and fail (retry, dead-letter or acknowledge cancellation), one job or
//! a batch per statement, each fenced by its lease token; and releasing a lease at shutdown.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pier_core::{Timestamp, WorkspaceId};
use pier_db::{JsonList, OwnedKeys, Tx, with_tx};
use serde::Serialize;
use tracing::Instrument;

use super::counts::Moves;
use super::progress::{Effects, StepEnded};
use super::{JobStore, push_error, small};
use crate::metrics;
use crate::model::{AttemptError, JobError, JobId, JobState, RetryPolicy};
use crate::notify::wake_after_commit;

/// The largest result a worker may report, as JSON text.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// How much of an error message is kept.
pub const MAX_ERROR_CHARS: usize = 2000;

/// A job a worker holds, named with the lease token it was claimed under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    pub workspace: WorkspaceId,
    pub id: JobId,
    pub token: String,
}

impl Held {
    /// `(workspace, id)`, as [`JobStore::existing`] reports jobs.
    pub fn key(&self) -> (String, String) {
        key(self)
    }

    /// A job named by a worker, whose `token` must look like one a claim issued.
    /// `token` must be a [`LeaseToken`].
    pub fn new(workspace: WorkspaceId, id: JobId, token: &str) -> Result<Self, String> {
        if token.len() == LeaseToken::DIGITS && token.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self {
                workspace,
                id,
                token: token.to_owned(),
            })
        } else {
            Err("is not a lease token (32 hexadecimal digits from a claim)".to_owned())
        }
    }
}

/// A lease token as the OpenAPI document describes it: what [`Held::new`] accepts.
#[derive(Debug)]
pub struct LeaseToken;

impl LeaseToken {
    pub const DIGITS: usize = 32;
}

impl utoipa::PartialSchema for LeaseToken {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        pier_core::schema::string(Self::DIGITS, Self::DIGITS)
            .pattern(Some(format!("^[0-9A-Fa-f]{{{}}}$", Self::DIGITS)))
            .description(Some("The token a claim returned with the job"))
            .into()
    }
}

impl utoipa::ToSchema for LeaseToken {}

/// A successful attempt to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub job: Held,
    /// JSON text, at most [`MAX_RESULT_BYTES`]; see [`Completion::with_result`].
    result: Option<String>,
}

impl Completion {
    pub fn new(job: Held) -> Self {
        Self { job, result: None }
    }

    /// Attaches what the job produced, kept on the job until it is pruned.
    pub fn with_result(mut self, result: &serde_json::Value) -> Result<Self, String> {
        let text = result.to_string();
        if text.len() > MAX_RESULT_BYTES {
            return Err(format!("must be at most {MAX_RESULT_BYTES} bytes as JSON"));
        }
        self.result = Some(text);
        Ok(self)
    }
}

/// A failed attempt to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub job: Held,
    /// Kept on the job, cut to [`MAX_ERROR_CHARS`].
    pub error: String,
    /// Retry at this time instead of after the backoff.
    pub retry_at: Option<Timestamp>,
    /// The failure is permanent: no more attempts, the job is discarded at once.
    pub discard: bool,
}

/// The columns a failure needs to decide what happens next.
#[derive(sqlx::FromRow)]
pub(crate) struct FailRow {
    pub(crate) id: String,
    pub(crate) workspace_id: String,
    pub(crate) queue: String,
    kind: String,
    pub(crate) lease_token: Option<String>,
    attempt: i64,
    max_attempts: i64,
    backoff_base_ms: Option<i64>,
    backoff_max_ms: Option<i64>,
    errors: String,
    cancel_requested: bool,
    attempted_at: Option<i64>,
    trace_parent: Option<String>,
    workflow_id: Option<String>,
    workflow_step: Option<String>,
}

pub(crate) const FAIL_COLUMNS: &str = "id, workspace_id, queue, kind, lease_token, attempt, \
    max_attempts, backoff_base_ms, backoff_max_ms, errors, cancel_requested, attempted_at, \
    trace_parent, workflow_id, workflow_step";

impl FailRow {
    fn policy(&self) -> RetryPolicy {
        let default = RetryPolicy::default();
        let ms = |v: Option<i64>, d: Duration| {
            v.map_or(d, |ms| {
                Duration::from_millis(u64::try_from(ms).unwrap_or(0))
            })
        };
        RetryPolicy {
            max_attempts: small(self.max_attempts),
            backoff_base: ms(self.backoff_base_ms, default.backoff_base),
            backoff_max: ms(self.backoff_max_ms, default.backoff_max),
        }
    }
}

/// Records a failed attempt of a running job locked by the caller and held under its current
/// lease token: it is cancelled if cancellation was requested, discarded when the failure is
/// permanent or the job is out of attempts, else retried at `retry_at` or after the backoff. Returns the new state; the counter change
/// goes into `moves`, which the caller applies once for all its rows (in one fixed order).
pub(crate) async fn record_failure(
    tx: &mut Tx,
    row: &FailRow,
    failure: (&str, Option<Timestamp>, bool),
    now: Timestamp,
    moves: &mut Moves,
) -> Result<JobState, sqlx::Error> {
    let (error, retry_at, discard) = failure;
    let attempt = small(row.attempt);
    let policy = row.policy();
    let state = if row.cancel_requested {
        JobState::Cancelled
    } else if discard || attempt >= policy.max_attempts {
        JobState::Discarded
    } else {
        JobState::Retryable
    };
    let run_at = match state {
        JobState::Retryable => retry_at
            .filter(|t| *t > now)
            .unwrap_or_else(|| now.saturating_add(policy.delay(attempt))),
        _ => now,
    };
    let errors = push_error(
        &row.errors,
        AttemptError {
            attempt,
            at: now,
            error: error.chars().take(MAX_ERROR_CHARS).collect(),
        },
    )?;
    let finalized_at = state.is_final().then_some(now.as_micros());
    with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE jobs SET state = $1, run_at = $2, errors = $3, finalized_at = $4, \
             lease_token = NULL, lease_expires_at = NULL \
             WHERE workspace_id = $7 AND id = $5 AND lease_token = $6",
        )
        .bind(state.as_str())
        .bind(run_at.as_micros())
        .bind(errors)
        .bind(finalized_at)
        .bind(&row.id)
        .bind(row.lease_token.as_deref())
        .bind(&row.workspace_id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    moves.moved(
        &row.workspace_id,
        &row.queue,
        Some(JobState::Running),
        Some(state),
    );
    if let Some(claimed) = row.attempted_at {
        metrics::ran(
            &row.queue,
            state,
            metrics::between(claimed, now.as_micros()),
        );
    }
    Ok(state)
}

impl JobStore {
    /// In the transaction that recorded a failed attempt ending in `state`: announces a
    /// discard, and notes a workflow's job that ended for good in `steps`, for the caller to
    /// move its workflow on once every row is recorded.
    pub(crate) async fn after_failure(
        &self,
        tx: &mut Tx,
        row: &FailRow,
        state: JobState,
        error: &str,
        steps: &mut Vec<StepEnded>,
    ) -> Result<(), sqlx::Error> {
        if state == JobState::Discarded {
            self.announce_discard(tx, row, error).await?;
        }
        if let (Some(workflow_id), Some(step)) = (&row.workflow_id, &row.workflow_step)
            && matches!(state, JobState::Discarded | JobState::Cancelled)
        {
            steps.push(StepEnded {
                workspace: row.workspace_id.clone(),
                job_id: row.id.clone(),
                workflow_id: workflow_id.clone(),
                step: step.clone(),
                state,
            });
        }
        Ok(())
    }

    /// Moves on the workflows of `steps` (see `progress`), then writes `moves` and wakes the
    /// queues of the jobs that became available, once `tx` commits.
    pub(crate) async fn settle(
        &self,
        tx: &mut Tx,
        steps: Vec<StepEnded>,
        now: i64,
        moves: Moves,
    ) -> Result<(), sqlx::Error> {
        let mut effects = Effects {
            moves,
            woken: Vec::new(),
        };
        if !steps.is_empty() {
            self.steps_ended(tx, steps, now, &mut effects).await?;
        }
        effects.moves.apply(tx).await?;
        if !effects.woken.is_empty() {
            wake_after_commit(&self.notifier, tx, effects.woken).await?;
        }
        Ok(())
    }

    /// In the transaction that discards a job that ran out of attempts: tells its kind's
    /// owner (see [`super::OnDiscard`]), and publishes `job.discarded` for a tenant's job when
    /// an outbox is set (Pier's own jobs are not announced).
    pub(crate) async fn announce_discard(
        &self,
        tx: &mut Tx,
        row: &FailRow,
        error: &str,
    ) -> Result<(), sqlx::Error> {
        if let Some(hook) = self.discard_hook(&row.kind) {
            let payload: String = with_tx!(tx, conn => {
                sqlx::query_scalar("SELECT payload FROM jobs WHERE workspace_id = $1 AND id = $2")
                    .bind(&row.workspace_id)
                    .bind(&row.id)
                    .fetch_one(conn)
                    .await
            })?;
            let payload =
                serde_json::from_str(&payload).map_err(|e| super::decode_error("payload", e))?;
            let workspace = WorkspaceId::from_trusted(row.workspace_id.clone());
            hook.discarded(self, tx, &workspace, payload, error).await?;
        }
        let Some(outbox) = self.outbox() else {
            return Ok(());
        };
        if row.queue.starts_with(crate::model::RESERVED_PREFIX) {
            return Ok(());
        }
        let payload = serde_json::json!({
            "id": row.id,
            "queue": row.queue,
            "kind": row.kind,
            "attempts": row.attempt,
            "error": error.chars().take(MAX_ERROR_CHARS).collect::<String>(),
        });
        // The announcement (and so its deliveries) continues the trace of the job's enqueue.
        let span = crate::trace::discarded(row.trace_parent.as_deref(), &row.queue);
        outbox
            .publish(tx, &row.workspace_id, "job.discarded", payload)
            .instrument(span)
            .await
    }
}

/// A completed job as the completing statement returns it: id, workspace, queue, when it was
/// claimed, and its workflow and step if it has them.
type Done = (
    String,
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// `(workspace, id)` of a held job, as the statements return them.
pub(crate) fn key(job: &Held) -> (String, String) {
    (job.workspace.to_string(), job.id.to_string())
}

/// `(workspace, id, token)` of each held job, as one JSON list.
fn held_list<'a>(jobs: impl Iterator<Item = &'a Held>) -> Result<JsonList, sqlx::Error> {
    let rows: Vec<[&str; 3]> = jobs
        .map(|h| [h.workspace.as_str(), h.id.as_str(), h.token.as_str()])
        .collect();
    JsonList::new(&rows)
}

impl JobStore {
    /// Marks the jobs completed, in one statement for the whole batch. A job counts only if it
    /// is still running under the token given with it; returns, per input, whether it did.
    pub async fn complete_many(&self, items: &[Completion]) -> Result<Vec<bool>, sqlx::Error> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.db.begin_relaxed().await?;
        let done = self.complete_rows(&mut tx, items).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Completes a job inside the caller's transaction, fenced by its lease token: the
    /// handler's own writes and the completion (with what it releases in its workflow) commit
    /// together or not at all. A transaction that rolls back leaves the job running, to be
    /// rescued and run again when its lease expires.
    pub async fn complete_in(&self, tx: &mut Tx, completion: Completion) -> Result<(), JobError> {
        let job = completion.job.clone();
        match self.complete_rows(tx, &[completion]).await?.first() {
            Some(true) => Ok(()),
            _ => Err(self.why_not_held(&job.workspace, &job.id).await),
        }
    }

    async fn complete_rows(
        &self,
        tx: &mut Tx,
        items: &[Completion],
    ) -> Result<Vec<bool>, sqlx::Error> {
        let now = self.clock.now().as_micros();
        // The statement reports which jobs it completed, not under which token (it clears it),
        // so a job named twice (a stale worker and the current one, gathered into one group
        // commit) is settled first: only the item holding its current token goes on.
        let current = self.current_tokens(tx, items).await?;
        let eligible: Vec<bool> = items
            .iter()
            .map(|c| current.get(&key(&c.job)).is_none_or(|t| *t == c.job.token))
            .collect();
        let rows: Vec<(&str, &str, &str, Option<&str>)> = items
            .iter()
            .zip(&eligible)
            .filter(|(_, eligible)| **eligible)
            .map(|(c, _)| {
                let h = &c.job;
                let result = c.result.as_deref();
                (
                    h.workspace.as_str(),
                    h.id.as_str(),
                    h.token.as_str(),
                    result,
                )
            })
            .collect();
        let rows = JsonList::new(&rows)?;
        // Joined on the primary key; the token is checked on the row found (see "Held jobs" in
        // the store module). A job's workflow comes back with it, so a plain job costs nothing
        // more.
        let sql = format!(
            "UPDATE jobs SET state = 'completed', finalized_at = $1, lease_token = NULL, \
             lease_expires_at = NULL, result = k.result \
             FROM (SELECT value ->> 0 AS ws, value ->> 1 AS id, value ->> 2 AS token, \
             value ->> 3 AS result FROM {}) AS k \
             WHERE jobs.workspace_id = k.ws AND jobs.id = k.id AND jobs.lease_token = k.token \
             RETURNING jobs.id, jobs.workspace_id, jobs.queue, jobs.attempted_at, \
             jobs.workflow_id, jobs.workflow_step",
            self.db.backend().json_rows("$2")
        );
        let done: Vec<Done> = super::update_listed(tx, &sql, now, &rows).await?;
        let mut moves = Moves::new();
        let mut steps = Vec::new();
        for (id, workspace, queue, claimed, workflow_id, step) in &done {
            moves.moved(
                workspace,
                queue,
                Some(JobState::Running),
                Some(JobState::Completed),
            );
            if let Some(claimed) = claimed {
                metrics::ran(queue, JobState::Completed, metrics::between(*claimed, now));
            }
            if let (Some(workflow_id), Some(step)) = (workflow_id, step) {
                steps.push(StepEnded {
                    workspace: workspace.clone(),
                    job_id: id.clone(),
                    workflow_id: workflow_id.clone(),
                    step: step.clone(),
                    state: JobState::Completed,
                });
            }
        }
        self.settle(tx, steps, now, moves).await?;
        let done: HashSet<(String, String)> = done
            .into_iter()
            .map(|(id, ws, _, _, _, _)| (ws, id))
            .collect();
        Ok(items
            .iter()
            .zip(eligible)
            .map(|(c, eligible)| eligible && done.contains(&key(&c.job)))
            .collect())
    }

    /// The current lease tokens of the jobs `items` name more than once, locked for `tx`.
    async fn current_tokens(
        &self,
        tx: &mut Tx,
        items: &[Completion],
    ) -> Result<HashMap<(String, String), String>, sqlx::Error> {
        let mut named: HashMap<(String, String), usize> = HashMap::new();
        for c in items {
            *named.entry(key(&c.job)).or_default() += 1;
        }
        let repeated: Vec<(&str, &str)> = named
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|((ws, id), _)| (ws.as_str(), id.as_str()))
            .collect();
        if repeated.is_empty() {
            return Ok(HashMap::new());
        }
        let repeated = OwnedKeys::new(repeated)?;
        let sql = format!(
            "SELECT workspace_id, id, lease_token FROM jobs WHERE {} AND lease_token IS NOT NULL \
             ORDER BY workspace_id, id {}",
            self.db.backend().owned_keys_in("$1"),
            self.db.backend().for_update()
        );
        let rows: Vec<(String, String, String)> = with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .persistent(false)
                .bind(repeated.as_str())
                .fetch_all(conn)
                .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(ws, id, token)| ((ws, id), token))
            .collect())
    }

    /// Completes one job, fenced by its lease token.
    pub async fn complete(&self, completion: Completion) -> Result<(), JobError> {
        let job = completion.job.clone();
        match self.complete_many(&[completion]).await?.first() {
            Some(true) => Ok(()),
            _ => Err(self.why_not_held(&job.workspace, &job.id).await),
        }
    }

    /// Tells a missing job (`404`) from a stale lease (`409`).
    pub async fn why_not_held(&self, workspace: &WorkspaceId, id: &JobId) -> JobError {
        match self.get(workspace, id).await {
            Ok(Some(_)) => JobError::StaleLease,
            Ok(None) => JobError::NotFound,
            Err(err) => err.into(),
        }
    }

    /// Of jobs a worker named but could not report, which exist (their lease went stale) and
    /// which do not: one query for a whole batch. Like [`get`](Self::get), it sees a tenant's
    /// jobs only, not Pier's own.
    pub async fn existing(&self, jobs: &[&Held]) -> Result<HashSet<(String, String)>, sqlx::Error> {
        if jobs.is_empty() {
            return Ok(HashSet::new());
        }
        let keys: Vec<(&str, &str)> = jobs
            .iter()
            .map(|h| (h.workspace.as_str(), h.id.as_str()))
            .collect();
        let keys = OwnedKeys::new(keys)?;
        let sql = format!(
            "SELECT workspace_id, id FROM jobs WHERE {} AND queue NOT LIKE 'pier.%'",
            self.db.backend().owned_keys_in("$1")
        );
        let rows: Vec<(String, String)> = pier_db::with_reader!(&self.db, pool => {
            sqlx::query_as(&sql)
                .persistent(false)
                .bind(keys.as_str())
                .fetch_all(pool)
                .await
        })?;
        Ok(rows.into_iter().collect())
    }

    /// Records failed attempts in one transaction. A failure counts only if its job is still
    /// running under the token given with it; returns, per input, the job's new state if it did.
    pub async fn fail_many(
        &self,
        failures: &[Failure],
    ) -> Result<Vec<Option<JobState>>, sqlx::Error> {
        if failures.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let held = held_list(failures.iter().map(|f| &f.job))?;
        let sql = format!(
            "SELECT {FAIL_COLUMNS} FROM jobs WHERE (workspace_id, id, lease_token) IN \
             (SELECT value ->> 0, value ->> 1, value ->> 2 FROM {}) \
             ORDER BY workspace_id, id {}",
            self.db.backend().json_rows("$1"),
            self.db.backend().for_update()
        );
        let mut tx = self.db.begin().await?;
        let rows: Vec<FailRow> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .persistent(false)
                .bind(held.as_str())
                .fetch_all(conn)
                .await
        })?;
        // Keyed by token too: of two reports naming one job, only the current token's counts.
        let mut rows: HashMap<(String, String, String), FailRow> = rows
            .into_iter()
            .map(|r| {
                let token = r.lease_token.clone().unwrap_or_default();
                ((r.workspace_id.clone(), r.id.clone(), token), r)
            })
            .collect();
        let mut states = Vec::with_capacity(failures.len());
        let mut moves = Moves::new();
        let mut steps = Vec::new();
        for failure in failures {
            let (workspace, id) = key(&failure.job);
            let state = match rows.remove(&(workspace, id, failure.job.token.clone())) {
                Some(row) => {
                    let reported = (failure.error.as_str(), failure.retry_at, failure.discard);
                    let state = record_failure(&mut tx, &row, reported, now, &mut moves).await?;
                    self.after_failure(&mut tx, &row, state, &failure.error, &mut steps)
                        .await?;
                    Some(state)
                }
                None => None,
            };
            states.push(state);
        }
        self.settle(&mut tx, steps, now.as_micros(), moves).await?;
        tx.commit().await?;
        Ok(states)
    }

    /// Records a failed attempt reported by the worker holding the job.
    pub async fn fail(&self, failure: Failure) -> Result<JobState, JobError> {
        let job = failure.job.clone();
        match self.fail_many(&[failure]).await?.first() {
            Some(Some(state)) => Ok(*state),
            _ => Err(self.why_not_held(&job.workspace, &job.id).await),
        }
    }

    /// Gives a running job back without counting the attempt (its worker is shutting down), so
    /// another worker can take it at once instead of waiting for the lease to expire.
    pub async fn release(&self, job: &Held) -> Result<bool, sqlx::Error> {
        let now = self.clock.now();
        Ok(self.give_back(&[(job.clone(), now)]).await?.first() == Some(&true))
    }

    /// Gives running jobs back without counting their attempts or recording an error: each
    /// runs again at its time (a snooze, e.g. a webhook delivery waiting for its endpoint's
    /// rate limit), or at once when that time has come. Fenced like every outcome; returns, per
    /// input, whether its job was still held under its token.
    pub async fn give_back(&self, jobs: &[(Held, Timestamp)]) -> Result<Vec<bool>, sqlx::Error> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now().as_micros();
        let rows: Vec<(&str, &str, &str, i64)> = jobs
            .iter()
            .map(|(h, at)| {
                let at = at.as_micros().max(now);
                (h.workspace.as_str(), h.id.as_str(), h.token.as_str(), at)
            })
            .collect();
        let rows = JsonList::new(&rows)?;
        let sql = format!(
            "UPDATE jobs SET state = CASE WHEN k.at <= $1 THEN 'available' ELSE 'scheduled' END, \
             attempt = attempt - 1, run_at = k.at, lease_token = NULL, lease_expires_at = NULL, \
             worker_id = NULL \
             FROM (SELECT value ->> 0 AS ws, value ->> 1 AS id, value ->> 2 AS token, \
             CAST(value ->> 3 AS BIGINT) AS at FROM {}) AS k \
             WHERE jobs.workspace_id = k.ws AND jobs.id = k.id AND jobs.lease_token = k.token \
             RETURNING jobs.workspace_id, jobs.id, jobs.queue, jobs.state",
            self.db.backend().json_rows("$2")
        );
        let mut tx = self.begin_lax().await?;
        let given: Vec<(String, String, String, String)> =
            super::update_listed(&mut tx, &sql, now, &rows).await?;
        let mut moves = Moves::new();
        let mut woken = Vec::new();
        for (workspace, _, queue, state) in &given {
            let to = state
                .parse::<JobState>()
                .map_err(|e| super::decode_error("state", e))?;
            moves.moved(workspace, queue, Some(JobState::Running), Some(to));
            if to == JobState::Available {
                woken.push((WorkspaceId::from_trusted(workspace.clone()), queue.clone()));
            }
        }
        moves.apply(&mut tx).await?;
        if !woken.is_empty() {
            wake_after_commit(&self.notifier, &mut tx, woken).await?;
        }
        tx.commit().await?;
        let given: HashSet<(String, String)> =
            given.into_iter().map(|(ws, id, _, _)| (ws, id)).collect();
        Ok(jobs.iter().map(|(h, _)| given.contains(&key(h))).collect())
    }
}
