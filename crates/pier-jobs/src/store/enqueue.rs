//! Enqueuing one or many jobs in a single statement, inside the caller's transaction when there
//! is one, with unique-key deduplication.

use std::collections::{BTreeSet, HashMap};

use pier_auth::WorkspaceId;
use pier_db::{Tx, TxConn, on_tx};
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
            if let TxConn::Postgres(conn) = &mut tx.conn {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&queue)
                    .execute(&mut **conn)
                    .await?;
            }
            let notifier = self.notifier.clone();
            tx.after_commit(move || notifier.wake(&queue));
        }
        Ok(out)
    }
}

async fn insert(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    now: i64,
    rows: &[InsertRow],
) -> Result<Vec<JobRow>, sqlx::Error> {
    let conflict = format!(
        "ON CONFLICT (workspace_id, unique_key) WHERE unique_key IS NOT NULL AND state IN {NON_FINAL} \
         DO NOTHING RETURNING {JOB_COLUMNS}"
    );
    let columns = "id, workspace_id, queue, kind, payload, state, priority, run_at, max_attempts, \
                   backoff_base_ms, backoff_max_ms, lease_ms, unique_key, created_at";
    match &mut tx.conn {
        // Column arrays through UNNEST: one round trip and one plan for any batch size.
        TxConn::Postgres(conn) => {
            let sql = format!(
                "INSERT INTO jobs ({columns}) \
                 SELECT u.id, $1, u.queue, u.kind, u.payload, u.state, u.priority, u.run_at, \
                 u.max_attempts, u.backoff_base_ms, u.backoff_max_ms, u.lease_ms, u.unique_key, $2 \
                 FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                 $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], \
                 $14::text[]) AS u(id, queue, kind, payload, state, priority, run_at, \
                 max_attempts, backoff_base_ms, backoff_max_ms, lease_ms, unique_key) {conflict}"
            );
            macro_rules! column {
                ($field:ident) => {
                    rows.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()
                };
            }
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(now)
                .bind(column!(id))
                .bind(column!(queue))
                .bind(column!(kind))
                .bind(column!(payload))
                .bind(rows.iter().map(|r| r.state).collect::<Vec<_>>())
                .bind(column!(priority))
                .bind(column!(run_at))
                .bind(column!(max_attempts))
                .bind(column!(backoff_base_ms))
                .bind(column!(backoff_max_ms))
                .bind(column!(lease_ms))
                .bind(column!(unique_key))
                .fetch_all(&mut **conn)
                .await
        }
        // SQLite has no arrays: the rows travel as one JSON array read by json_each.
        TxConn::Sqlite(conn) => {
            let sql = format!(
                "INSERT INTO jobs ({columns}) \
                 SELECT j.value ->> 'id', $1, j.value ->> 'queue', j.value ->> 'kind', \
                 j.value ->> 'payload', j.value ->> 'state', j.value ->> 'priority', \
                 j.value ->> 'run_at', j.value ->> 'max_attempts', j.value ->> 'backoff_base_ms', \
                 j.value ->> 'backoff_max_ms', j.value ->> 'lease_ms', j.value ->> 'unique_key', $2 \
                 FROM json_each($3) AS j WHERE true {conflict}"
            );
            let json = serde_json::to_string(rows).map_err(|e| sqlx::Error::Encode(e.into()))?;
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(now)
                .bind(json)
                .fetch_all(&mut **conn)
                .await
        }
    }
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
    let row: Option<JobRow> = on_tx!(tx, |conn| {
        sqlx::query_as(&sql)
            .bind(workspace.as_str())
            .bind(key)
            .fetch_optional(conn)
            .await
    })?;
    row.map(Job::try_from).transpose()
}
