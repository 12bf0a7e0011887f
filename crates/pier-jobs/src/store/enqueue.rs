//! Enqueuing one or many jobs in a single statement, inside the caller's transaction when there
//! is one, with unique-key deduplication.

use std::collections::{BTreeSet, HashMap};

use pier_core::WorkspaceId;
use pier_db::{JsonList, Tx, with_tx};
use serde::Serialize;

use super::counts::Moves;
use super::{JOB_COLUMNS, JobRow, JobStore};
use crate::model::{Enqueued, Job, JobId, JobState, NewJob};
use crate::notify::CHANNEL;

const NON_FINAL: &str = "('scheduled', 'available', 'running', 'retryable')";

/// One row to insert, in the shape both backends' bulk statements read.
#[derive(Serialize)]
struct InsertRow {
    id: String,
    queue: String,
    kind: String,
    payload: String,
    state: &'static str,
    priority: i64,
    run_at: i64,
    max_attempts: i64,
    backoff_base_ms: Option<i64>,
    backoff_max_ms: Option<i64>,
    lease_ms: i64,
    unique_key: Option<String>,
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl JobStore {
    /// Enqueues `jobs` in one transaction. Returns one [`Enqueued`] per input, in order.
    pub async fn enqueue(
        &self,
        workspace: &WorkspaceId,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Enqueued>, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let enqueued = self.enqueue_in(&mut tx, workspace, jobs).await?;
        tx.commit().await?;
        Ok(enqueued)
    }

    /// Enqueues inside the caller's transaction: the jobs exist if and only if it commits, and
    /// workers are woken only then (invariant 2: no dual writes).
    pub async fn enqueue_in(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Enqueued>, sqlx::Error> {
        let now = self.clock.now();
        let rows: Vec<InsertRow> = jobs
            .iter()
            .map(|job| {
                let run_at = job.run_at.filter(|at| *at > now);
                InsertRow {
                    id: JobId::new(now).to_string(),
                    queue: job.queue.to_string(),
                    kind: job.kind.to_string(),
                    payload: job.payload.to_string(),
                    state: if run_at.is_some() {
                        "scheduled"
                    } else {
                        "available"
                    },
                    priority: i64::from(job.priority),
                    run_at: run_at.unwrap_or(now).as_micros(),
                    max_attempts: i64::from(job.retry.max_attempts),
                    backoff_base_ms: Some(millis(job.retry.backoff_base)),
                    backoff_max_ms: Some(millis(job.retry.backoff_max)),
                    lease_ms: millis(job.lease),
                    unique_key: job.unique_key.clone(),
                }
            })
            .collect();

        let inserted = insert(tx, workspace, now.as_micros(), &rows).await?;
        let mut by_id: HashMap<String, JobRow> = inserted
            .into_iter()
            .map(|row| (row.id.clone(), row))
            .collect();

        let mut out = Vec::with_capacity(rows.len());
        let mut woken = BTreeSet::new();
        let mut moves = Moves::new();
        for row in &rows {
            if let Some(created) = by_id.remove(&row.id) {
                let state = if row.state == "available" {
                    JobState::Available
                } else {
                    JobState::Scheduled
                };
                moves.moved(workspace.as_str(), &row.queue, None, Some(state));
                if state == JobState::Available {
                    woken.insert(row.queue.clone());
                }
                out.push(Enqueued {
                    job: Job::try_from(created)?,
                    existing: false,
                });
                continue;
            }
            // Not inserted: an unfinished job holds the unique key (perhaps one from this batch).
            let key = row.unique_key.as_deref().unwrap_or_default();
            let job = existing_by_key(tx, workspace, key).await?.ok_or_else(|| {
                sqlx::Error::Protocol(format!(
                    "unique key `{key}` conflicted but no holder was found"
                ))
            })?;
            out.push(Enqueued {
                job,
                existing: true,
            });
        }

        moves.apply(tx).await?;
        for queue in woken {
            tx.notify(CHANNEL, &queue).await?;
            let notifier = self.notifier.clone();
            tx.after_commit(move || notifier.wake(&queue));
        }
        Ok(out)
    }
}

/// Inserts every row in one statement: the rows travel as one JSON array, read as rows on
/// both backends, so any batch size is one round trip and one plan.
async fn insert(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    now: i64,
    rows: &[InsertRow],
) -> Result<Vec<JobRow>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO jobs (id, workspace_id, queue, kind, payload, state, priority, run_at, \
         max_attempts, backoff_base_ms, backoff_max_ms, lease_ms, unique_key, created_at) \
         SELECT value ->> 'id', $1, value ->> 'queue', value ->> 'kind', value ->> 'payload', \
         value ->> 'state', CAST(value ->> 'priority' AS BIGINT), \
         CAST(value ->> 'run_at' AS BIGINT), CAST(value ->> 'max_attempts' AS BIGINT), \
         CAST(value ->> 'backoff_base_ms' AS BIGINT), CAST(value ->> 'backoff_max_ms' AS BIGINT), \
         CAST(value ->> 'lease_ms' AS BIGINT), value ->> 'unique_key', $2 FROM {} WHERE true \
         ON CONFLICT (workspace_id, unique_key) WHERE unique_key IS NOT NULL \
         AND state IN {NON_FINAL} DO NOTHING RETURNING {JOB_COLUMNS}",
        tx.backend().json_rows("$3")
    );
    let rows = JsonList::new(rows)?;
    with_tx!(tx, conn => {
        sqlx::query_as(&sql)
            .bind(workspace.as_str())
            .bind(now)
            .bind(rows.as_str())
            .fetch_all(conn)
            .await
    })
}

async fn existing_by_key(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    key: &str,
) -> Result<Option<Job>, sqlx::Error> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE workspace_id = $1 AND unique_key = $2 \
         AND state IN {NON_FINAL}"
    );
    let row: Option<JobRow> = with_tx!(tx, conn => {
        sqlx::query_as(&sql)
            .bind(workspace.as_str())
            .bind(key)
            .fetch_optional(conn)
            .await
    })?;
    row.map(Job::try_from).transpose()
}
