//! What an operator does to a job by hand: cancel it, or run it again.

use pier_core::WorkspaceId;
use pier_db::{Tx, is_unique_violation, with_tx};

use super::counts::Moves;
use super::progress::StepEnded;
use super::{JOB_COLUMNS, JobRow, JobStore, decode_error};
use crate::model::{Job, JobError, JobId, JobState};
use crate::notify::wake_after_commit;
use crate::workflow::WorkflowState;

impl JobStore {
    /// The state, queue and workflow step of a tenant's job, locked for the rest of `tx` (on
    /// SQLite the single writer already excludes others), with its workflow's state, locked
    /// too. Pier's own jobs are not found.
    async fn lock_state(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        id: &JobId,
    ) -> Result<Locked, JobError> {
        let sql = format!(
            "SELECT state, queue, workflow_id, workflow_step FROM jobs WHERE workspace_id = $1 \
             AND id = $2 AND queue NOT LIKE 'pier.%' {}",
            self.db.backend().for_update()
        );
        let row: Option<(String, String, Option<String>, Option<String>)> = with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(id.as_str())
                .fetch_optional(conn)
                .await
        })?;
        let (state, queue, workflow_id, step) = row.ok_or(JobError::NotFound)?;
        let state = state.parse().map_err(|e| decode_error("state", e))?;
        let step = workflow_id.zip(step);
        // The job's row, then its workflow's: the order completions take them in.
        let workflow = match &step {
            Some((workflow_id, _)) => self
                .lock_workflow(tx, workspace.as_str(), workflow_id)
                .await?
                .map(|flow| flow.state),
            None => None,
        };
        Ok(Locked {
            state,
            queue,
            step,
            workflow,
        })
    }

    /// Cancels a job: a waiting one at once; a running one is asked to stop (its worker sees
    /// `cancel_requested` on its next heartbeat and acknowledges by failing it).
    pub async fn cancel(&self, workspace: &WorkspaceId, id: &JobId) -> Result<Job, JobError> {
        self.operate(workspace, id, |job, now| match job.state {
            JobState::Pending | JobState::Scheduled | JobState::Available | JobState::Retryable => {
                Ok(Some(Change {
                    finalized_at: Some(now),
                    ..Change::to(JobState::Cancelled)
                }))
            }
            JobState::Running => Ok(Some(Change {
                cancel_requested: true,
                ..Change::to(JobState::Running)
            })),
            JobState::Cancelled => Ok(None),
            other => Err(JobError::WrongState(other)),
        })
        .await
    }

    /// Runs a job again now: a finished one (including dead letters) gets one more attempt if it
    /// had used them all; a waiting one is made due at once. A workflow step waiting for its
    /// dependencies cannot be, nor any job of a workflow that is compensating.
    pub async fn retry(&self, workspace: &WorkspaceId, id: &JobId) -> Result<Job, JobError> {
        self.operate(workspace, id, |job, now| match (job.state, job.workflow) {
            (_, Some(WorkflowState::Compensating)) => {
                Err(JobError::WorkflowState(WorkflowState::Compensating))
            }
            (JobState::Running | JobState::Pending, _) => Err(JobError::WrongState(job.state)),
            _ => Ok(Some(Change {
                run_at: Some(now),
                grant_attempt: true,
                ..Change::to(JobState::Available)
            })),
        })
        .await
    }

    /// Locks a tenant's job, asks `decide` what to do given its state and the time (`None`:
    /// nothing), applies that with its counter move, and wakes the queue if the job became
    /// available.
    async fn operate(
        &self,
        workspace: &WorkspaceId,
        id: &JobId,
        decide: impl FnOnce(&Locked, i64) -> Result<Option<Change>, JobError>,
    ) -> Result<Job, JobError> {
        let now = self.clock.now().as_micros();
        let mut tx = self.db.begin().await?;
        let job = self.lock_state(&mut tx, workspace, id).await?;
        let Some(change) = decide(&job, now)? else {
            drop(tx);
            return self.get(workspace, id).await?.ok_or(JobError::NotFound);
        };
        let sql = format!(
            "UPDATE jobs SET state = $1, cancel_requested = $2, finalized_at = $3, \
             run_at = COALESCE($4, run_at), max_attempts = CASE WHEN $5 AND attempt >= max_attempts \
             THEN attempt + 1 ELSE max_attempts END WHERE workspace_id = $6 AND id = $7 \
             RETURNING {JOB_COLUMNS}"
        );
        let updated: Result<JobRow, sqlx::Error> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .bind(change.to.as_str())
                .bind(change.cancel_requested)
                .bind(change.finalized_at)
                .bind(change.run_at)
                .bind(change.grant_attempt)
                .bind(workspace.as_str())
                .bind(id.as_str())
                .fetch_one(conn)
                .await
        });
        let row = match updated {
            // Retrying a finished job whose unique key another unfinished job now holds.
            Err(err) if is_unique_violation(&err) => return Err(JobError::UniqueConflict),
            other => other?,
        };
        let mut moves = Moves::new();
        moves.moved(
            workspace.as_str(),
            &job.queue,
            Some(job.state),
            Some(change.to),
        );
        // A step cancelled by hand fails its workflow as a discarded one would.
        let steps = match job.step {
            Some((workflow_id, step)) if change.to == JobState::Cancelled => vec![StepEnded {
                workspace: workspace.to_string(),
                job_id: id.to_string(),
                workflow_id,
                step,
                state: JobState::Cancelled,
            }],
            _ => Vec::new(),
        };
        self.settle(&mut tx, steps, now, moves).await?;
        if change.to == JobState::Available {
            wake_after_commit(&self.notifier, &mut tx, [(workspace.clone(), job.queue)]).await?;
        }
        tx.commit().await?;
        Ok(Job::try_from(row)?)
    }
}

/// A job as an operator's action finds it, locked.
#[derive(Debug)]
struct Locked {
    state: JobState,
    queue: String,
    /// Its workflow and step, if it has them.
    step: Option<(String, String)>,
    /// Its workflow's state, if it has one.
    workflow: Option<WorkflowState>,
}

/// What an operator's action does to one job.
#[derive(Debug)]
struct Change {
    to: JobState,
    cancel_requested: bool,
    finalized_at: Option<i64>,
    /// A new due time; `None` keeps the job's.
    run_at: Option<i64>,
    /// One more attempt for a job that used them all.
    grant_attempt: bool,
}

impl Change {
    /// Into `state`, clearing the cancellation flag and the finish time, keeping the rest.
    fn to(state: JobState) -> Self {
        Self {
            to: state,
            cancel_requested: false,
            finalized_at: None,
            run_at: None,
            grant_attempt: false,
        }
    }
}
