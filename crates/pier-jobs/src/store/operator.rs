//! What an operator does to a job by hand: cancel it, or run it again.

use pier_core::WorkspaceId;
use pier_db::{Tx, is_unique_violation, with_tx};

use super::counts::Moves;
use super::{JOB_COLUMNS, JobRow, JobStore, decode_error};
use crate::model::{Job, JobError, JobId, JobState};
use crate::notify::wake_after_commit;

impl JobStore {
    /// The state and queue of a tenant's job, locked for the rest of `tx` (on SQLite the single
    /// writer already excludes others). Pier's own jobs are not found.
    async fn lock_state(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        id: &JobId,
    ) -> Result<(JobState, String), JobError> {
        let sql = format!(
            "SELECT state, queue FROM jobs WHERE workspace_id = $1 AND id = $2 \
             AND queue NOT LIKE 'pier.%' {}",
            self.db.backend().for_update()
        );
        let row: Option<(String, String)> = with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(id.as_str())
                .fetch_optional(conn)
                .await
        })?;
        let (state, queue) = row.ok_or(JobError::NotFound)?;
        let state = state.parse().map_err(|e| decode_error("state", e))?;
        Ok((state, queue))
    }

    /// Cancels a job: a waiting one at once; a running one is asked to stop (its worker sees
    /// `cancel_requested` on its next heartbeat and acknowledges by failing it).
    pub async fn cancel(&self, workspace: &WorkspaceId, id: &JobId) -> Result<Job, JobError> {
        let now = self.clock.now().as_micros();
        let mut tx = self.db.begin().await?;
        let (state, queue) = self.lock_state(&mut tx, workspace, id).await?;
        // A waiting job ends now; a running one is flagged for its worker.
        let (new_state, cancel_requested, finalized_at) = match state {
            JobState::Scheduled | JobState::Available | JobState::Retryable => {
                (JobState::Cancelled, false, Some(now))
            }
            JobState::Running => (JobState::Running, true, None),
            JobState::Cancelled => {
                drop(tx);
                return self.get(workspace, id).await?.ok_or(JobError::NotFound);
            }
            other => return Err(JobError::WrongState(other)),
        };
        let sql = format!(
            "UPDATE jobs SET state = $1, cancel_requested = $2, finalized_at = $3 \
             WHERE workspace_id = $4 AND id = $5 RETURNING {JOB_COLUMNS}"
        );
        let row: JobRow = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .bind(new_state.as_str())
                .bind(cancel_requested)
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
             cancel_requested = FALSE, max_attempts = CASE WHEN attempt >= max_attempts \
             THEN attempt + 1 ELSE max_attempts END WHERE workspace_id = $2 AND id = $3 \
             RETURNING {JOB_COLUMNS}"
        );
        let updated: Result<JobRow, sqlx::Error> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .bind(now)
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
        wake_after_commit(&self.notifier, &mut tx, workspace, &queue).await?;
        tx.commit().await?;
        Ok(Job::try_from(row)?)
    }
}
