//! How a workflow moves on as its jobs end, inside the transaction that ends them: a completed
//! step releases the steps that waited only for it; a step that fails for good stops the
//! workflow and starts its compensations, one at a time, latest completed step first.
//!
//! Every move first locks the workflow's row (`lock_workflow`), so on PostgreSQL two nodes
//! completing two dependencies of one step at once take turns: the second sees the first's
//! count of waiting dependencies and releases the step, exactly once. Plain jobs never come
//! here: the statements that end jobs return each job's workflow, and only a job that has one
//! costs anything more.

use pier_core::WorkspaceId;
use pier_db::{Tx, with_tx};

use super::counts::Moves;
use super::workflows::{name_list, parse_names, to_text};
use super::{JobStore, decode_error};
use crate::model::{JobState, StepOf};
use crate::spec::JobSpec;
use crate::workflow::{Inputs, WorkflowState};

/// A job of a workflow that ended, as the statement ending it returned it.
#[derive(Debug, Clone)]
pub(crate) struct StepEnded {
    pub(crate) workspace: String,
    pub(crate) job_id: String,
    pub(crate) workflow_id: String,
    pub(crate) step: String,
    /// `completed`, `discarded` or `cancelled`.
    pub(crate) state: JobState,
}

#[derive(sqlx::FromRow)]
struct StepRow {
    job_id: String,
    dependents: String,
    completed_seq: Option<i64>,
    compensation_job_id: Option<String>,
}

/// What the moves of one transaction change beyond the workflow rows: counters to write, and
/// queues to wake once it commits.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) moves: Moves,
    pub(crate) woken: Vec<(WorkspaceId, String)>,
}

/// Sets the workflow's `column` (Pier's own words, which may start with another assignment) to
/// `step`: the step that failed for good, or whose compensation did.
async fn name_step(
    tx: &mut Tx,
    ws: &str,
    wf: &str,
    column: &str,
    step: &str,
) -> Result<(), sqlx::Error> {
    let sql = format!("UPDATE workflows SET {column} = $1 WHERE workspace_id = $2 AND id = $3");
    with_tx!(tx, conn => {
        sqlx::query(&sql)
            .bind(step)
            .bind(ws)
            .bind(wf)
            .execute(conn)
            .await
            .map(drop)
    })
}

/// Runs `sql` about some steps of a workflow: `$1` is its workspace, `$2` its id and `$3` the
/// steps' `names` (read with `json_rows("$3")` and `value ->> 0`), unprepared, as a list of
/// names asks; returns its rows.
async fn of_steps<T>(
    tx: &mut Tx,
    sql: &str,
    ws: &str,
    wf: &str,
    names: &[String],
) -> Result<Vec<T>, sqlx::Error>
where
    T: Send + Unpin,
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let names = name_list(names)?;
    with_tx!(tx, conn => {
        sqlx::query_as(sql)
            .persistent(false)
            .bind(ws)
            .bind(wf)
            .bind(names.as_str())
            .fetch_all(conn)
            .await
    })
}

impl JobStore {
    /// Moves on the workflows of `ended` jobs, in workflow order (the order their locks are
    /// taken in, so two transactions never wait on each other in a cycle).
    pub(crate) async fn steps_ended(
        &self,
        tx: &mut Tx,
        mut ended: Vec<StepEnded>,
        now: i64,
        effects: &mut Effects,
    ) -> Result<(), sqlx::Error> {
        ended.sort_by(|a, b| (&a.workspace, &a.workflow_id).cmp(&(&b.workspace, &b.workflow_id)));
        for job in &ended {
            self.step_ended(tx, job, now, effects).await?;
        }
        Ok(())
    }

    async fn step_ended(
        &self,
        tx: &mut Tx,
        job: &StepEnded,
        now: i64,
        effects: &mut Effects,
    ) -> Result<(), sqlx::Error> {
        let (ws, wf) = (job.workspace.as_str(), job.workflow_id.as_str());
        let Some(flow) = self.lock_workflow(tx, ws, wf).await? else {
            return Ok(());
        };
        let step: Option<StepRow> = with_tx!(tx, conn => {
            sqlx::query_as(
                "SELECT job_id, dependents, completed_seq, compensation_job_id \
                 FROM workflow_steps WHERE workspace_id = $1 AND workflow_id = $2 AND name = $3",
            )
            .bind(ws)
            .bind(wf)
            .bind(&job.step)
            .fetch_optional(conn)
            .await
        })?;
        let Some(step) = step else {
            return Ok(());
        };
        let compensating = flow.state == WorkflowState::Compensating;
        if step.compensation_job_id.as_deref() == Some(job.job_id.as_str()) {
            if !compensating {
                return Ok(());
            }
            if job.state == JobState::Completed {
                return self.compensate_next(tx, ws, wf, now).await;
            }
            name_step(tx, ws, wf, "failed_compensation", &job.step).await?;
            return self.end(tx, ws, wf, WorkflowState::Failed, now).await;
        }
        // A step's own job; a completed step run again by hand counts once.
        if step.job_id != job.job_id || step.completed_seq.is_some() {
            return Ok(());
        }
        if job.state == JobState::Completed {
            let seq = flow.steps_completed + 1;
            with_tx!(tx, conn => {
                sqlx::query(
                    "UPDATE workflows SET steps_completed = $1 WHERE workspace_id = $2 AND id = $3",
                )
                .bind(seq)
                .bind(ws)
                .bind(wf)
                .execute(conn)
                .await
                .map(drop)
            })?;
            with_tx!(tx, conn => {
                sqlx::query(
                    "UPDATE workflow_steps SET completed_seq = $1 \
                     WHERE workspace_id = $2 AND workflow_id = $3 AND name = $4",
                )
                .bind(seq)
                .bind(ws)
                .bind(wf)
                .bind(&job.step)
                .execute(conn)
                .await
                .map(drop)
            })?;
            return match flow.state {
                WorkflowState::Running if seq == flow.steps_total => {
                    self.end(tx, ws, wf, WorkflowState::Completed, now).await
                }
                WorkflowState::Running => {
                    let dependents = parse_names(&step.dependents)?;
                    self.release_dependents(tx, ws, wf, &dependents, now, effects)
                        .await
                }
                // A step that was running when another failed completed: it is compensated
                // in its turn (it is now the latest to complete).
                WorkflowState::Compensating => self.compensate_next(tx, ws, wf, now).await,
                _ => Ok(()),
            };
        }
        match flow.state {
            WorkflowState::Running => {
                name_step(tx, ws, wf, "state = 'compensating', failed_step", &job.step).await?;
                self.cancel_waiting_steps(tx, ws, wf, now, &mut effects.moves)
                    .await?;
                self.compensate_next(tx, ws, wf, now).await
            }
            // Another step that ran while the workflow compensated ended: perhaps the last.
            WorkflowState::Compensating => self.compensate_next(tx, ws, wf, now).await,
            _ => Ok(()),
        }
    }

    /// Counts one completed dependency off each of `dependents`, and releases those that wait
    /// on no more, with their dependencies' results as inputs.
    async fn release_dependents(
        &self,
        tx: &mut Tx,
        ws: &str,
        wf: &str,
        dependents: &[String],
        now: i64,
        effects: &mut Effects,
    ) -> Result<(), sqlx::Error> {
        if dependents.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE workflow_steps SET waiting_on = waiting_on - 1 WHERE workspace_id = $1 \
             AND workflow_id = $2 AND name IN (SELECT value ->> 0 FROM {}) \
             RETURNING job_id, waiting_on, depends_on",
            self.db.backend().json_rows("$3")
        );
        let counted: Vec<(String, i64, String)> = of_steps(tx, &sql, ws, wf, dependents).await?;
        for (job_id, waiting_on, depends_on) in counted {
            if waiting_on > 0 {
                continue;
            }
            let inputs = self
                .results_of(tx, ws, wf, &parse_names(&depends_on)?)
                .await?;
            let inputs = to_text(&inputs)?;
            let released: Option<(String, String)> = with_tx!(tx, conn => {
                sqlx::query_as(
                    "UPDATE jobs SET state = CASE WHEN run_at <= $1 THEN 'available' \
                     ELSE 'scheduled' END, inputs = $2 \
                     WHERE workspace_id = $3 AND id = $4 AND state = 'pending' \
                     RETURNING queue, state",
                )
                .bind(now)
                .bind(&inputs)
                .bind(ws)
                .bind(&job_id)
                .fetch_optional(conn)
                .await
            })?;
            if let Some((queue, state)) = released {
                let to: JobState = state.parse().map_err(|e| decode_error("state", e))?;
                effects
                    .moves
                    .moved(ws, &queue, Some(JobState::Pending), Some(to));
                if to == JobState::Available {
                    effects
                        .woken
                        .push((WorkspaceId::from_trusted(ws.to_owned()), queue));
                }
            }
        }
        Ok(())
    }

    /// The results of the workflow's steps `names`, by name (`null` where a step reported
    /// none).
    async fn results_of(
        &self,
        tx: &mut Tx,
        ws: &str,
        wf: &str,
        names: &[String],
    ) -> Result<Inputs, sqlx::Error> {
        let sql = format!(
            "SELECT s.name, j.result FROM workflow_steps s \
             JOIN jobs j ON j.workspace_id = s.workspace_id AND j.id = s.job_id \
             WHERE s.workspace_id = $1 AND s.workflow_id = $2 \
             AND s.name IN (SELECT value ->> 0 FROM {})",
            self.db.backend().json_rows("$3")
        );
        let rows: Vec<(String, Option<String>)> = of_steps(tx, &sql, ws, wf, names).await?;
        rows.into_iter()
            .map(|(name, result)| {
                let value = result
                    .map(|r| serde_json::from_str(&r))
                    .transpose()
                    .map_err(|e| decode_error("result", e))?
                    .unwrap_or(serde_json::Value::Null);
                Ok((name, value))
            })
            .collect()
    }

    /// Starts the next compensation of a compensating workflow: none while one runs; else
    /// that of the completed step latest to complete that has one and has not been
    /// compensated; else, once no step of it is still running, the workflow ends.
    async fn compensate_next(
        &self,
        tx: &mut Tx,
        ws: &str,
        wf: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        if self.unfinished(tx, ws, wf, "compensation_job_id").await? {
            return Ok(());
        }
        let next: Option<(String, String)> = with_tx!(tx, conn => {
            sqlx::query_as(
                "SELECT name, compensate FROM workflow_steps WHERE workspace_id = $1 \
                 AND workflow_id = $2 AND completed_seq IS NOT NULL AND compensate IS NOT NULL \
                 AND compensation_job_id IS NULL ORDER BY completed_seq DESC LIMIT 1",
            )
            .bind(ws)
            .bind(wf)
            .fetch_optional(conn)
            .await
        })?;
        let Some((name, compensate)) = next else {
            if self.unfinished(tx, ws, wf, "job_id").await? {
                return Ok(());
            }
            let compensated: i64 = with_tx!(tx, conn => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM workflow_steps WHERE workspace_id = $1 \
                     AND workflow_id = $2 AND compensation_job_id IS NOT NULL",
                )
                .bind(ws)
                .bind(wf)
                .fetch_one(conn)
                .await
            })?;
            let state = if compensated > 0 {
                WorkflowState::Compensated
            } else {
                WorkflowState::Failed
            };
            return self.end(tx, ws, wf, state, now).await;
        };
        let spec: JobSpec =
            serde_json::from_str(&compensate).map_err(|e| decode_error("compensation", e))?;
        let mut job = spec
            .build()
            .map_err(|e| decode_error("compensation", format!("{e:?}")))?;
        let inputs = self
            .results_of(tx, ws, wf, std::slice::from_ref(&name))
            .await?;
        job.step = Some(StepOf {
            workflow_id: wf.to_owned(),
            name: name.clone(),
            held: false,
            inputs: Some(to_text(&inputs)?),
        });
        let workspace = WorkspaceId::from_trusted(ws.to_owned());
        let enqueued = self.enqueue_in(tx, &workspace, &[job]).await?;
        let Some(compensation) = enqueued.first() else {
            return Ok(());
        };
        with_tx!(tx, conn => {
            sqlx::query(
                "UPDATE workflow_steps SET compensation_job_id = $1 \
                 WHERE workspace_id = $2 AND workflow_id = $3 AND name = $4",
            )
            .bind(compensation.job.id.as_str())
            .bind(ws)
            .bind(wf)
            .bind(&name)
            .execute(conn)
            .await
            .map(drop)
        })
    }

    /// Whether a job the workflow's steps name in `column` (`job_id` or
    /// `compensation_job_id`) has not finished.
    async fn unfinished(
        &self,
        tx: &mut Tx,
        ws: &str,
        wf: &str,
        column: &str,
    ) -> Result<bool, sqlx::Error> {
        let sql = format!(
            "SELECT COUNT(*) FROM jobs WHERE workspace_id = $1 AND id IN \
             (SELECT {column} FROM workflow_steps WHERE workspace_id = $1 AND workflow_id = $2 \
             AND {column} IS NOT NULL) AND state NOT IN ('completed', 'discarded', 'cancelled')"
        );
        let n: i64 = with_tx!(tx, conn => {
            sqlx::query_scalar(&sql).bind(ws).bind(wf).fetch_one(conn).await
        })?;
        Ok(n > 0)
    }

    /// Ends the workflow in `state` and announces it (`workflow.completed`, `.failed` or
    /// `.compensated`) when an outbox is set.
    async fn end(
        &self,
        tx: &mut Tx,
        ws: &str,
        wf: &str,
        state: WorkflowState,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let payload = self.finish_workflow(tx, ws, wf, state, now).await?;
        let event = match state {
            WorkflowState::Completed => "workflow.completed",
            WorkflowState::Failed => "workflow.failed",
            WorkflowState::Compensated => "workflow.compensated",
            _ => return Ok(()),
        };
        match self.outbox() {
            Some(outbox) => outbox.publish(tx, ws, event, payload).await,
            None => Ok(()),
        }
    }
}
