//! Workflows in the store: creating one (its jobs and its steps in one transaction), reading,
//! listing and cancelling it. How a workflow moves on as its jobs end is in `progress`.

use pier_core::{Timestamp, WorkspaceId};
use pier_db::{Bind, JsonList, Statement, Tx, with_reader, with_tx};

use super::counts::Moves;
use super::{JobStore, decode_error, small};
use crate::model::{JobError, JobId, NewJob, StepOf};
use crate::workflow::{Compensation, NewWorkflow, Step, Workflow, WorkflowId, WorkflowState};

const WORKFLOW_COLUMNS: &str = "id, name, state, steps_total, steps_completed, failed_step, \
    failed_compensation, created_at, finished_at";

/// How many finished workflows one pruning transaction deletes.
const PRUNE_BATCH: i64 = 500;

/// The states a step's job waits in before it runs, as SQL.
const NOT_STARTED: &str = "('pending', 'scheduled', 'available', 'retryable')";

#[derive(sqlx::FromRow)]
struct WorkflowRow {
    id: String,
    name: String,
    state: String,
    steps_total: i64,
    steps_completed: i64,
    failed_step: Option<String>,
    failed_compensation: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
}

impl TryFrom<WorkflowRow> for Workflow {
    type Error = sqlx::Error;
    fn try_from(row: WorkflowRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: WorkflowId::from_trusted(row.id),
            name: row.name,
            state: row.state.parse().map_err(|e| decode_error("state", e))?,
            steps_total: small(row.steps_total),
            steps_completed: small(row.steps_completed),
            failed_step: row.failed_step,
            failed_compensation: row.failed_compensation,
            created_at: Timestamp::from_micros(row.created_at),
            finished_at: row.finished_at.map(Timestamp::from_micros),
            steps: Vec::new(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct StepRow {
    name: String,
    depends_on: String,
    job_id: String,
    state: Option<String>,
    compensation_job_id: Option<String>,
    compensation_state: Option<String>,
}

fn job_state(state: Option<String>) -> Result<Option<crate::model::JobState>, sqlx::Error> {
    state
        .map(|s| s.parse().map_err(|e| decode_error("state", e)))
        .transpose()
}

impl TryFrom<StepRow> for Step {
    type Error = sqlx::Error;
    fn try_from(row: StepRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            name: row.name,
            depends_on: parse_names(&row.depends_on)?,
            job_id: JobId::from_trusted(row.job_id),
            state: job_state(row.state)?,
            compensation: row
                .compensation_job_id
                .map(|id| {
                    Ok::<_, sqlx::Error>(Compensation {
                        job_id: JobId::from_trusted(id),
                        state: job_state(row.compensation_state)?,
                    })
                })
                .transpose()?,
        })
    }
}

pub(crate) fn parse_names(text: &str) -> Result<Vec<String>, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| decode_error("step names", e))
}

/// Step names as a [`JsonList`] of one-element rows, read with `value ->> 0`.
pub(crate) fn name_list(names: &[String]) -> Result<JsonList, sqlx::Error> {
    JsonList::new(&names.iter().map(|n| [n.as_str()]).collect::<Vec<_>>())
}

pub(crate) fn to_text<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, sqlx::Error> {
    serde_json::to_string(value).map_err(|e| sqlx::Error::Encode(e.into()))
}

impl JobStore {
    /// Creates a workflow: its steps' jobs (those with dependencies `pending`), its row and
    /// its steps, in one transaction.
    pub async fn create_workflow(
        &self,
        workspace: &WorkspaceId,
        workflow: NewWorkflow,
    ) -> Result<Workflow, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let created = self
            .create_workflow_in(&mut tx, workspace, workflow)
            .await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Creates a workflow inside the caller's transaction: it exists, and its first steps run,
    /// if and only if that transaction commits.
    pub async fn create_workflow_in(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        workflow: NewWorkflow,
    ) -> Result<Workflow, sqlx::Error> {
        let now = self.clock.now();
        let id = WorkflowId::new(now);
        let jobs: Vec<NewJob> = workflow
            .steps
            .iter()
            .map(|step| {
                let mut job = step.job.clone();
                job.step = Some(StepOf {
                    workflow_id: id.to_string(),
                    name: step.name.clone(),
                    held: !step.depends_on.is_empty(),
                    inputs: None,
                });
                job
            })
            .collect();
        let enqueued = self.enqueue_in(tx, workspace, &jobs).await?;
        let total = i64::try_from(workflow.steps.len()).unwrap_or(i64::MAX);
        with_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO workflows (workspace_id, id, name, state, steps_total, created_at) \
                 VALUES ($1, $2, $3, 'running', $4, $5)",
            )
            .bind(workspace.as_str())
            .bind(id.as_str())
            .bind(&workflow.name)
            .bind(total)
            .bind(now.as_micros())
            .execute(conn)
            .await
            .map(drop)
        })?;
        let mut rows = Vec::with_capacity(workflow.steps.len());
        let mut steps = Vec::with_capacity(workflow.steps.len());
        for (position, (step, job)) in workflow.steps.iter().zip(&enqueued).enumerate() {
            let dependents: Vec<&str> = workflow
                .steps
                .iter()
                .filter(|s| s.depends_on.contains(&step.name))
                .map(|s| s.name.as_str())
                .collect();
            let compensate = step.compensate.as_ref().map(to_text).transpose()?;
            rows.push(serde_json::json!({
                "name": step.name,
                "position": position,
                "job_id": job.job.id.as_str(),
                "depends_on": to_text(&step.depends_on)?,
                "dependents": to_text(&dependents)?,
                "waiting_on": step.depends_on.len(),
                "compensate": compensate,
            }));
            steps.push(Step {
                name: step.name.clone(),
                depends_on: step.depends_on.clone(),
                job_id: job.job.id.clone(),
                state: Some(job.job.state),
                compensation: None,
            });
        }
        let sql = format!(
            "INSERT INTO workflow_steps (workspace_id, workflow_id, name, position, job_id, \
             depends_on, dependents, waiting_on, compensate) \
             SELECT $1, $2, value ->> 'name', CAST(value ->> 'position' AS BIGINT), \
             value ->> 'job_id', value ->> 'depends_on', value ->> 'dependents', \
             CAST(value ->> 'waiting_on' AS BIGINT), value ->> 'compensate' FROM {} WHERE true",
            tx.backend().json_rows("$3")
        );
        let rows = JsonList::new(&rows)?;
        with_tx!(tx, conn => {
            sqlx::query(&sql)
                .bind(workspace.as_str())
                .bind(id.as_str())
                .bind(rows.as_str())
                .execute(conn)
                .await
                .map(drop)
        })?;
        Ok(Workflow {
            id,
            name: workflow.name,
            state: WorkflowState::Running,
            steps_total: small(total),
            steps_completed: 0,
            failed_step: None,
            failed_compensation: None,
            created_at: now,
            finished_at: None,
            steps,
        })
    }

    /// A workflow of the workspace, with its steps in the order they were given.
    pub async fn workflow(
        &self,
        workspace: &WorkspaceId,
        id: &WorkflowId,
    ) -> Result<Option<Workflow>, sqlx::Error> {
        let row: Option<WorkflowRow> = self
            .db
            .find_owned(
                "workflows",
                WORKFLOW_COLUMNS,
                workspace.as_str(),
                "id",
                id.as_str(),
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut workflow = Workflow::try_from(row)?;
        let steps: Vec<StepRow> = with_reader!(&self.db, pool => {
            sqlx::query_as(
                "SELECT s.name, s.depends_on, s.job_id, j.state, s.compensation_job_id, \
                 c.state AS compensation_state FROM workflow_steps s \
                 LEFT JOIN jobs j ON j.workspace_id = s.workspace_id AND j.id = s.job_id \
                 LEFT JOIN jobs c ON c.workspace_id = s.workspace_id \
                 AND c.id = s.compensation_job_id \
                 WHERE s.workspace_id = $1 AND s.workflow_id = $2 ORDER BY s.position",
            )
            .bind(workspace.as_str())
            .bind(id.as_str())
            .fetch_all(pool)
            .await
        })?;
        workflow.steps = steps
            .into_iter()
            .map(Step::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Some(workflow))
    }

    /// A page of the workspace's workflows, newest first, after the one with id `before`
    /// (without their steps).
    pub async fn workflows(
        &self,
        workspace: &WorkspaceId,
        before: Option<String>,
        limit: u32,
    ) -> Result<Vec<Workflow>, sqlx::Error> {
        let statement = Statement::keyset_page(
            &format!("SELECT {WORKFLOW_COLUMNS} FROM workflows"),
            workspace.as_str(),
            Vec::new(),
            (&["id"], true),
            before.map(|id| vec![Bind::Text(id)]),
            limit,
        );
        let rows: Vec<WorkflowRow> = statement.fetch_all(&self.db).await?;
        rows.into_iter().map(Workflow::try_from).collect()
    }

    /// Cancels a running workflow: its steps that wait are cancelled, its running ones are
    /// asked to stop, and nothing runs after them. A compensating workflow finishes its
    /// compensations (`409`).
    pub async fn cancel_workflow(
        &self,
        workspace: &WorkspaceId,
        id: &WorkflowId,
    ) -> Result<Workflow, JobError> {
        let now = self.clock.now().as_micros();
        let mut tx = self.db.begin().await?;
        // Running steps first, before the workflow's lock: a completion holds its job's row
        // and then waits for the workflow's, so the other order could deadlock.
        with_tx!(&mut tx, conn => {
            sqlx::query(
                "UPDATE jobs SET cancel_requested = TRUE WHERE workspace_id = $1 \
                 AND state = 'running' AND id IN (SELECT job_id FROM workflow_steps \
                 WHERE workspace_id = $1 AND workflow_id = $2)",
            )
            .bind(workspace.as_str())
            .bind(id.as_str())
            .execute(conn)
            .await
            .map(drop)
        })?;
        let flow = self
            .lock_workflow(&mut tx, workspace.as_str(), id.as_str())
            .await?
            .ok_or(JobError::WorkflowNotFound)?;
        match flow.state {
            WorkflowState::Running => {
                let mut moves = Moves::new();
                self.cancel_waiting_steps(
                    &mut tx,
                    workspace.as_str(),
                    id.as_str(),
                    now,
                    &mut moves,
                )
                .await?;
                self.finish_workflow(
                    &mut tx,
                    workspace.as_str(),
                    id.as_str(),
                    WorkflowState::Cancelled,
                    now,
                )
                .await?;
                moves.apply(&mut tx).await?;
                tx.commit().await?;
            }
            WorkflowState::Cancelled => drop(tx),
            other => return Err(JobError::WorkflowState(other)),
        }
        self.workflow(workspace, id)
            .await?
            .ok_or(JobError::WorkflowNotFound)
    }

    /// Deletes workflows (with their steps) that finished before `cutoff`, in bounded batches;
    /// returns how many. A finished workflow changes no more: a step that completes late finds
    /// no workflow and moves nothing.
    pub(crate) async fn prune_workflows(&self, cutoff: i64) -> Result<u64, sqlx::Error> {
        let mut pruned = 0;
        loop {
            let mut tx = self.db.begin().await?;
            let gone: Vec<(String, String)> = with_tx!(&mut tx, conn => {
                sqlx::query_as(
                    "DELETE FROM workflows WHERE (workspace_id, id) IN (SELECT workspace_id, id \
                     FROM workflows WHERE finished_at < $1 LIMIT $2) RETURNING workspace_id, id",
                )
                .bind(cutoff)
                .bind(PRUNE_BATCH)
                .fetch_all(conn)
                .await
            })?;
            if !gone.is_empty() {
                let keys = JsonList::new(&gone)?;
                let sql = format!(
                    "DELETE FROM workflow_steps WHERE (workspace_id, workflow_id) IN \
                     (SELECT value ->> 0, value ->> 1 FROM {})",
                    self.db.backend().json_rows("$1")
                );
                with_tx!(&mut tx, conn => {
                    sqlx::query(&sql)
                        .persistent(false)
                        .bind(keys.as_str())
                        .execute(conn)
                        .await
                        .map(drop)
                })?;
            }
            tx.commit().await?;
            pruned += gone.len() as u64;
            if (gone.len() as i64) < PRUNE_BATCH {
                return Ok(pruned);
            }
        }
    }

    /// The workflow's state and step counts, its row locked for the rest of `tx`: every change
    /// of a workflow takes this lock first, so two nodes finishing two of its steps at once
    /// move it on one after the other (on SQLite the single writer already does).
    pub(crate) async fn lock_workflow(
        &self,
        tx: &mut Tx,
        workspace: &str,
        id: &str,
    ) -> Result<Option<Locked>, sqlx::Error> {
        let sql = format!(
            "SELECT state, steps_total, steps_completed FROM workflows \
             WHERE workspace_id = $1 AND id = $2 {}",
            self.db.backend().for_update()
        );
        let row: Option<(String, i64, i64)> = with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .bind(workspace)
                .bind(id)
                .fetch_optional(conn)
                .await
        })?;
        row.map(|(state, total, completed)| {
            Ok(Locked {
                state: state.parse().map_err(|e| decode_error("state", e))?,
                steps_total: total,
                steps_completed: completed,
            })
        })
        .transpose()
    }

    /// Cancels the workflow's steps that have not started; the caller holds its lock.
    pub(crate) async fn cancel_waiting_steps(
        &self,
        tx: &mut Tx,
        workspace: &str,
        id: &str,
        now: i64,
        moves: &mut Moves,
    ) -> Result<(), sqlx::Error> {
        // Locked and checked again under READ COMMITTED: a step a claim took meanwhile runs.
        let sql = format!(
            "SELECT id, queue, state FROM jobs WHERE workspace_id = $1 AND id IN \
             (SELECT job_id FROM workflow_steps WHERE workspace_id = $1 AND workflow_id = $2) \
             AND state IN {NOT_STARTED} ORDER BY id {}",
            self.db.backend().for_update()
        );
        let waiting: Vec<(String, String, String)> = with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .bind(workspace)
                .bind(id)
                .fetch_all(conn)
                .await
        })?;
        if waiting.is_empty() {
            return Ok(());
        }
        let ids = name_list(
            &waiting
                .iter()
                .map(|(id, _, _)| id.clone())
                .collect::<Vec<_>>(),
        )?;
        let sql = format!(
            "UPDATE jobs SET state = 'cancelled', finalized_at = $1 WHERE workspace_id = $2 \
             AND id IN (SELECT value ->> 0 FROM {})",
            self.db.backend().json_rows("$3")
        );
        with_tx!(tx, conn => {
            sqlx::query(&sql)
                .persistent(false)
                .bind(now)
                .bind(workspace)
                .bind(ids.as_str())
                .execute(conn)
                .await
                .map(drop)
        })?;
        for (_, queue, state) in &waiting {
            let from = state.parse().map_err(|e| decode_error("state", e))?;
            moves.moved(
                workspace,
                queue,
                Some(from),
                Some(crate::model::JobState::Cancelled),
            );
        }
        Ok(())
    }

    /// Ends the workflow in `state` (final); returns what its announcement says of it.
    pub(crate) async fn finish_workflow(
        &self,
        tx: &mut Tx,
        workspace: &str,
        id: &str,
        state: WorkflowState,
        now: i64,
    ) -> Result<serde_json::Value, sqlx::Error> {
        let (name, failed_step, failed_compensation): (String, Option<String>, Option<String>) = with_tx!(tx, conn => {
            sqlx::query_as(
                "UPDATE workflows SET state = $1, finished_at = $2 \
                 WHERE workspace_id = $3 AND id = $4 \
                 RETURNING name, failed_step, failed_compensation",
            )
            .bind(state.as_str())
            .bind(now)
            .bind(workspace)
            .bind(id)
            .fetch_one(conn)
            .await
        })?;
        Ok(serde_json::json!({
            "id": id,
            "name": name,
            "state": state,
            "failed_step": failed_step,
            "failed_compensation": failed_compensation,
        }))
    }
}

/// A workflow's row as its lock read it.
#[derive(Debug)]
pub(crate) struct Locked {
    pub(crate) state: WorkflowState,
    pub(crate) steps_total: i64,
    pub(crate) steps_completed: i64,
}
