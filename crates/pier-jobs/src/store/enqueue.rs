//! Enqueuing one or many jobs in a single statement, inside the caller's transaction when there
//! is one, with unique-key deduplication.

use std::collections::{BTreeSet, HashMap};

use pier_core::WorkspaceId;
use pier_db::{JsonList, Tx, with_tx};
use serde::Serialize;
use tracing::Instrument;

use super::counts::Moves;
use super::{JOB_COLUMNS, JobRow, JobStore, UNFINISHED};
use crate::model::{Enqueued, Job, JobId, JobState, NewJob};
use crate::notify::wake_after_commit;

/// One row to insert, in the shape the bulk statement reads.
#[derive(Serialize)]
struct InsertRow<'a> {
    workspace_id: &'a str,
    id: String,
    queue: &'a str,
    kind: &'a str,
    payload: &'a str,
    state: &'static str,
    priority: i64,
    run_at: i64,
    max_attempts: i64,
    backoff_base_ms: i64,
    backoff_max_ms: i64,
    lease_ms: i64,
    unique_key: Option<&'a str>,
    trace_parent: Option<&'a str>,
    // Left out of a plain job's row rather than sent as nulls (read as NULL all the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_step: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<&'a str>,
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How many times a unique key may change hands between our insert and our lookup of its
/// holder before we give up; each round means its holder finished within that window.
const KEY_ROUNDS: usize = 3;

impl JobStore {
    /// Enqueues `jobs` in one transaction. Returns one [`Enqueued`] per input, in order.
    pub async fn enqueue(
        &self,
        workspace: &WorkspaceId,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Enqueued>, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let enqueued = self.enqueue_in(&mut tx, workspace, &jobs).await?;
        tx.commit().await?;
        Ok(enqueued)
    }

    /// Enqueues inside the caller's transaction: the jobs exist if and only if it commits, and
    /// workers are woken only then (no dual writes; see `docs/architecture.md`).
    pub async fn enqueue_in(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        jobs: &[NewJob],
    ) -> Result<Vec<Enqueued>, sqlx::Error> {
        let queue = jobs.first().map(|j| j.queue.as_str());
        let one_queue = queue.filter(|q| jobs.iter().all(|j| j.queue.as_str() == *q));
        let span = crate::trace::publish(one_queue, jobs.len());
        let jobs: Vec<(&WorkspaceId, &NewJob)> = jobs.iter().map(|j| (workspace, j)).collect();
        self.enqueue_rows(tx, &jobs).instrument(span).await
    }

    /// Enqueues jobs of any workspaces in one statement (plus one lookup per unique key already
    /// held), with one counter update for all of them.
    pub(crate) async fn enqueue_rows(
        &self,
        tx: &mut Tx,
        jobs: &[(&WorkspaceId, &NewJob)],
    ) -> Result<Vec<Enqueued>, sqlx::Error> {
        let now = self.clock.now();
        // The jobs continue the trace of the span enqueuing them (see `crate::trace`), or the
        // one they bring from a caller away from here.
        let current = pier_core::trace::current_traceparent();
        let rows: Vec<InsertRow> = jobs
            .iter()
            .map(|(workspace, job)| {
                let run_at = job.run_at.filter(|at| *at > now);
                let step = job.step.as_ref();
                InsertRow {
                    workspace_id: workspace.as_str(),
                    id: JobId::new(now).to_string(),
                    queue: job.queue.as_str(),
                    kind: job.kind.as_str(),
                    payload: &job.payload,
                    state: if step.is_some_and(|s| s.held) {
                        "pending"
                    } else if run_at.is_some() {
                        "scheduled"
                    } else {
                        "available"
                    },
                    priority: i64::from(job.priority),
                    run_at: run_at.unwrap_or(now).as_micros(),
                    max_attempts: i64::from(job.retry.max_attempts),
                    backoff_base_ms: millis(job.retry.backoff_base),
                    backoff_max_ms: millis(job.retry.backoff_max),
                    lease_ms: millis(job.lease.unwrap_or(self.default_lease)),
                    unique_key: job.unique_key.as_deref(),
                    trace_parent: job.trace_parent.as_deref().or(current.as_deref()),
                    workflow_id: step.map(|s| s.workflow_id.as_str()),
                    workflow_step: step.map(|s| s.name.as_str()),
                    inputs: step.and_then(|s| s.inputs.as_deref()),
                }
            })
            .collect();

        let mut outcomes: Vec<Option<Enqueued>> = rows.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..rows.len()).collect();
        let mut moves = Moves::new();
        let mut woken = BTreeSet::new();
        for _ in 0..KEY_ROUNDS {
            let batch: Vec<&InsertRow> = pending.iter().map(|&i| &rows[i]).collect();
            let mut inserted: HashMap<String, JobRow> = insert(tx, now, &batch)
                .await?
                .into_iter()
                .map(|row| (row.id.clone(), row))
                .collect();
            let mut retry = Vec::new();
            for i in pending {
                let row = &rows[i];
                if let Some(created) = inserted.remove(&row.id) {
                    let job = Job::try_from(created)?;
                    moves.moved(row.workspace_id, row.queue, None, Some(job.state));
                    if job.state == JobState::Available {
                        woken.insert((jobs[i].0, row.queue));
                    }
                    outcomes[i] = Some(Enqueued {
                        job,
                        existing: false,
                    });
                    continue;
                }
                // Not inserted: an unfinished job holds the unique key (perhaps one from this
                // batch). If it finished since the insert looked, the key is free: try again.
                let key = row.unique_key.unwrap_or_default();
                match existing_by_key(tx, row.workspace_id, key).await? {
                    Some(job) => {
                        outcomes[i] = Some(Enqueued {
                            job,
                            existing: true,
                        });
                    }
                    None => retry.push(i),
                }
            }
            pending = retry;
            if pending.is_empty() {
                break;
            }
        }
        if !pending.is_empty() {
            return Err(sqlx::Error::Protocol(format!(
                "{} unique keys kept changing hands during the enqueue",
                pending.len()
            )));
        }

        moves.apply(tx).await?;
        let woken = woken.into_iter().map(|(w, q)| (w.clone(), q.to_owned()));
        wake_after_commit(&self.notifier, tx, woken).await?;
        Ok(outcomes.into_iter().flatten().collect())
    }
}

/// Inserts every row in one statement: the rows travel as one JSON array, read as rows on
/// both backends, so any batch size is one round trip and one plan.
async fn insert(
    tx: &mut Tx,
    now: pier_core::Timestamp,
    rows: &[&InsertRow<'_>],
) -> Result<Vec<JobRow>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO jobs (workspace_id, id, queue, kind, payload, state, priority, run_at, \
         max_attempts, backoff_base_ms, backoff_max_ms, lease_ms, unique_key, trace_parent, \
         workflow_id, workflow_step, inputs, created_at) \
         SELECT value ->> 'workspace_id', value ->> 'id', value ->> 'queue', value ->> 'kind', \
         value ->> 'payload', value ->> 'state', CAST(value ->> 'priority' AS BIGINT), \
         CAST(value ->> 'run_at' AS BIGINT), CAST(value ->> 'max_attempts' AS BIGINT), \
         CAST(value ->> 'backoff_base_ms' AS BIGINT), CAST(value ->> 'backoff_max_ms' AS BIGINT), \
         CAST(value ->> 'lease_ms' AS BIGINT), value ->> 'unique_key', value ->> 'trace_parent', \
         value ->> 'workflow_id', value ->> 'workflow_step', value ->> 'inputs', \
         $1 FROM {} WHERE true \
         ON CONFLICT (workspace_id, unique_key) WHERE unique_key IS NOT NULL \
         AND state IN {UNFINISHED} DO NOTHING RETURNING {JOB_COLUMNS}",
        tx.backend().json_rows("$2")
    );
    let rows = JsonList::new(rows)?;
    with_tx!(tx, conn => {
        sqlx::query_as(&sql)
            .bind(now.as_micros())
            .bind(rows.as_str())
            .fetch_all(conn)
            .await
    })
}

async fn existing_by_key(
    tx: &mut Tx,
    workspace: &str,
    key: &str,
) -> Result<Option<Job>, sqlx::Error> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE workspace_id = $1 AND unique_key = $2 \
         AND state IN {UNFINISHED}"
    );
    let row: Option<JobRow> = with_tx!(tx, conn => {
        sqlx::query_as(&sql)
            .bind(workspace)
            .bind(key)
            .fetch_optional(conn)
            .await
    })?;
    row.map(Job::try_from).transpose()
}
