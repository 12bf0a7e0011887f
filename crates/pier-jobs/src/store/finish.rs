//! Ending attempts: complete, fail (retry, dead-letter or acknowledge cancellation), and the
//! operator's cancel and retry.

use pier_core::Timestamp;
use pier_core::WorkspaceId;
use pier_db::{JsonList, Tx, is_unique_violation, with_tx};

use super::counts::Moves;
use super::{JOB_COLUMNS, JobRow, JobStore, push_error, small};
use crate::model::{AttemptError, Job, JobError, JobId, JobState, RetryPolicy};

/// The columns a failure needs to decide what happens next.
#[derive(sqlx::FromRow)]
pub(crate) struct FailRow {
    pub(crate) id: String,
    pub(crate) workspace_id: String,
    pub(crate) queue: String,
    pub(crate) lease_token: Option<String>,
    attempt: i64,
    max_attempts: i64,
    backoff_base_ms: Option<i64>,
    backoff_max_ms: Option<i64>,
    errors: String,
    cancel_requested: bool,
}

pub(crate) const FAIL_COLUMNS: &str = "id, workspace_id, queue, lease_token, attempt, \
    max_attempts, backoff_base_ms, backoff_max_ms, errors, cancel_requested";

impl FailRow {
    fn policy(&self) -> RetryPolicy {
        let default = RetryPolicy::default();
        let ms = |v: Option<i64>, d: std::time::Duration| {
            v.map_or(d, |ms| {
                std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
            })
        };
        RetryPolicy {
            max_attempts: small(self.max_attempts),
            backoff_base: ms(self.backoff_base_ms, default.backoff_base),
            backoff_max: ms(self.backoff_max_ms, default.backoff_max),
        }
    }
}

/// Records a failed attempt of a running job held under its current lease token: it is
/// cancelled if cancellation was requested, discarded when out of attempts, else retried at
/// `retry_at` or after the backoff. Returns the new state.
pub(crate) async fn record_failure(
    tx: &mut Tx,
    row: &FailRow,
    now: Timestamp,
    error: &str,
    retry_at: Option<Timestamp>,
) -> Result<JobState, sqlx::Error> {
    let attempt = small(row.attempt);
    let policy = row.policy();
    let state = if row.cancel_requested {
        JobState::Cancelled
    } else if attempt >= policy.max_attempts {
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
    let message: String = error.chars().take(2000).collect();
    let errors = push_error(
        &row.errors,
        AttemptError {
            attempt,
            at: now,
            error: message,
        },
    );
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
    let mut moves = Moves::new();
    moves.moved(
        &row.workspace_id,
        &row.queue,
        Some(JobState::Running),
        Some(state),
    );
    moves.apply(tx).await?;
    Ok(state)
}

impl JobStore {
    /// Marks jobs held under `token` completed, in one statement for the whole batch. Returns
    /// the ones that were (the others' leases were stale).
    pub async fn complete_many(
        &self,
        token: &str,
        jobs: &[(WorkspaceId, JobId)],
    ) -> Result<Vec<JobId>, sqlx::Error> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now().as_micros();
        let set =
            "lease_token = NULL, lease_expires_at = NULL, state = 'completed', finalized_at = $1";
        let mut tx = self.begin_lax().await?;
        let pairs: Vec<[&str; 2]> = jobs
            .iter()
            .map(|(ws, id)| [ws.as_str(), id.as_str()])
            .collect();
        let pairs = JsonList::new(&pairs)?;
        let sql = format!(
            "UPDATE jobs SET {set} WHERE lease_token = $2 AND (workspace_id, id) IN \
             (SELECT value ->> 0, value ->> 1 FROM {}) RETURNING id, workspace_id, queue",
            self.db.backend().json_rows("$3")
        );
        let done: Vec<(String, String, String)> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .bind(now)
                .bind(token)
                .bind(pairs.as_str())
                .fetch_all(conn)
                .await
        })?;
        let mut moves = Moves::new();
        for (_, workspace, queue) in &done {
            moves.moved(
                workspace,
                queue,
                Some(JobState::Running),
                Some(JobState::Completed),
            );
        }
        moves.apply(&mut tx).await?;
        tx.commit().await?;
        Ok(done
            .into_iter()
            .map(|(id, _, _)| JobId::from_trusted(id))
            .collect())
    }

    /// Completes one job of `workspace`, fenced by its lease token.
    pub async fn complete(
        &self,
        workspace: &WorkspaceId,
        id: &JobId,
        token: &str,
    ) -> Result<(), JobError> {
        let done = self
            .complete_many(token, &[(workspace.clone(), id.clone())])
            .await?;
        if done.is_empty() {
            return Err(self.why_not_held(workspace, id).await);
        }
        Ok(())
    }

    /// Tells a missing job (`404`) from a stale lease (`409`).
    async fn why_not_held(&self, workspace: &WorkspaceId, id: &JobId) -> JobError {
        match self.get(workspace, id).await {
            Ok(Some(_)) => JobError::StaleLease,
            Ok(None) => JobError::NotFound,
            Err(err) => err.into(),
        }
    }

    /// Records a failed attempt reported by the worker holding `token`.
    pub async fn fail(
        &self,
        workspace: &WorkspaceId,
        id: &JobId,
        token: &str,
        error: &str,
        retry_at: Option<Timestamp>,
    ) -> Result<JobState, JobError> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let lock = self.db.backend().for_update();
        let sql = format!(
            "SELECT {FAIL_COLUMNS} FROM jobs WHERE workspace_id = $3 AND id = $1 \
             AND lease_token = $2 AND state = 'running' {lock}"
        );
        let row: Option<FailRow> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .bind(id.as_str())
                .bind(token)
                .bind(workspace.as_str())
                .fetch_optional(conn)
                .await
        })?;
        let Some(row) = row else {
            drop(tx);
            return Err(self.why_not_held(workspace, id).await);
        };
        let state = record_failure(&mut tx, &row, now, error, retry_at).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// The state and queue of a job, locked for the rest of `tx` on PostgreSQL (SQLite's
    /// single writer already excludes others).
    async fn lock_state(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        id: &JobId,
    ) -> Result<(JobState, String), JobError> {
        let lock = self.db.backend().for_update();
        let sql =
            format!("SELECT state, queue FROM jobs WHERE workspace_id = $1 AND id = $2 {lock}");
        let row: Option<(String, String)> = with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(id.as_str())
                .fetch_optional(conn)
                .await
        })?;
        let (state, queue) = row.ok_or(JobError::NotFound)?;
        let state = state
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
        Ok((state, queue))
    }

    /// Cancels a job: a waiting one at once; a running one is asked to stop (its worker sees
    /// `cancel_requested` on its next heartbeat and acknowledges by failing it).
    pub async fn cancel(&self, workspace: &WorkspaceId, id: &JobId) -> Result<Job, JobError> {
        let now = self.clock.now().as_micros();
        let mut tx = self.db.begin().await?;
        let (state, queue) = self.lock_state(&mut tx, workspace, id).await?;
        // A waiting job ends now; a running one is flagged for its worker.
        let (set, finalized_at) = match state {
            JobState::Scheduled | JobState::Available | JobState::Retryable => {
                ("state = 'cancelled', finalized_at = $1", Some(now))
            }
            JobState::Running => ("cancel_requested = TRUE, finalized_at = $1", None),
            JobState::Cancelled => {
                drop(tx);
                return self.get(workspace, id).await?.ok_or(JobError::NotFound);
            }
            other => return Err(JobError::WrongState(other)),
        };
        let sql = format!(
            "UPDATE jobs SET {set} WHERE workspace_id = $2 AND id = $3 RETURNING {JOB_COLUMNS}"
        );
        let row: JobRow = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .bind(finalized_at)
                .bind(workspace.as_str())
                .bind(id.as_str())
                .fetch_one(conn)
                .await
        })?;
        if state != JobState::Running {
            let mut moves = Moves::new();
            moves.moved(
                workspace.as_str(),
                &queue,
                Some(state),
                Some(JobState::Cancelled),
            );
            moves.apply(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(Job::try_from(row)?)
    }

    /// Runs a job again now: a finished one (including dead letters) gets one more attempt if it
    /// had used them all; a waiting one is made due at once.
    pub async fn retry(&self, workspace: &WorkspaceId, id: &JobId) -> Result<Job, JobError> {
        let now = self.clock.now().as_micros();
        let mut tx = self.db.begin().await?;
        let (state, queue) = self.lock_state(&mut tx, workspace, id).await?;
        if state == JobState::Running {
            return Err(JobError::WrongState(state));
        }
        let sql = format!(
            "UPDATE jobs SET state = 'available', run_at = $1, finalized_at = NULL, \
             cancel_requested = $2, max_attempts = CASE WHEN attempt >= max_attempts \
             THEN attempt + 1 ELSE max_attempts END WHERE workspace_id = $3 AND id = $4 \
             RETURNING {JOB_COLUMNS}"
        );
        let updated: Result<JobRow, sqlx::Error> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .bind(now)
                .bind(false)
                .bind(workspace.as_str())
                .bind(id.as_str())
                .fetch_one(conn)
                .await
        });
        let row = match updated {
            Err(err) if is_unique_violation(&err) => return Err(JobError::UniqueConflict),
            other => other?,
        };
        let mut moves = Moves::new();
        moves.moved(
            workspace.as_str(),
            &queue,
            Some(state),
            Some(JobState::Available),
        );
        moves.apply(&mut tx).await?;
        let notifier = self.notifier.clone();
        tx.after_commit(move || notifier.wake(&queue));
        tx.commit().await?;
        Ok(Job::try_from(row)?)
    }
}

impl JobStore {
    /// Gives a running job back without counting the attempt (its worker is shutting down), so
    /// another worker can take it at once instead of waiting for the lease to expire.
    pub async fn release(
        &self,
        workspace: &WorkspaceId,
        id: &JobId,
        token: &str,
    ) -> Result<bool, sqlx::Error> {
        let now = self.clock.now().as_micros();
        let mut tx = self.begin_lax().await?;
        let queue: Option<(String,)> = with_tx!(&mut tx, conn => {
            sqlx::query_as(
                "UPDATE jobs SET state = 'available', attempt = attempt - 1, run_at = $1, \
                 lease_token = NULL, lease_expires_at = NULL, worker_id = NULL \
                 WHERE workspace_id = $4 AND id = $2 AND lease_token = $3 AND state = 'running' \
                 RETURNING queue",
            )
            .bind(now)
            .bind(id.as_str())
            .bind(token)
            .bind(workspace.as_str())
            .fetch_optional(conn)
            .await
        })?;
        if let Some((queue,)) = &queue {
            let mut moves = Moves::new();
            moves.moved(
                workspace.as_str(),
                queue,
                Some(JobState::Running),
                Some(JobState::Available),
            );
            moves.apply(&mut tx).await?;
            let notifier = self.notifier.clone();
            let queue = queue.clone();
            tx.after_commit(move || notifier.wake(&queue));
        }
        tx.commit().await?;
        Ok(queue.is_some())
    }
}
