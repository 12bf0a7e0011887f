//! Claiming jobs (many per statement) and extending their leases.

use std::collections::HashMap;
use std::time::Duration;

use pier_core::Timestamp;
use pier_core::WorkspaceId;
use pier_db::{Backend, JsonList, with_tx, with_writer};
use rand::RngCore;

use super::counts::Moves;
use super::{JobStore, small};
use crate::model::{ClaimedJob, JobId, JobState, QueueName};

/// Which jobs a claim may take: a queue of one workspace (HTTP workers, workspace-bound pools,
/// where pause and concurrency limits apply), or a queue across all workspaces (Pier's own
/// in-process workers for internal queues).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimTarget {
    pub workspace: Option<WorkspaceId>,
    pub queue: QueueName,
}

/// The state of a lease after a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub lease_expires_at: Timestamp,
    /// The job was asked to stop; the handler should wind down and report failure.
    pub cancel_requested: bool,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: String,
    workspace_id: String,
    queue: String,
    kind: String,
    payload: String,
    attempt: i64,
    lease_expires_at: i64,
}

#[derive(sqlx::FromRow)]
struct QueueSettings {
    paused: bool,
    concurrency_limit: Option<i64>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Picks up to `$4` waiting jobs in claim order (priority, then due time, then age). On
/// PostgreSQL, `SKIP LOCKED` lets many claimers work the same queue without waiting on each
/// other; SQLite has a single writer.
fn pick_sql(backend: Backend) -> String {
    let lock = backend.for_update_skip_locked();
    format!(
        "SELECT workspace_id, id, state FROM jobs WHERE queue = $1 \
         AND ($2 IS NULL OR workspace_id = $2) AND state IN ('available', 'scheduled', 'retryable') \
         AND run_at <= $3 ORDER BY priority, run_at, id LIMIT $4 {lock}"
    )
}

/// Marks the picked jobs running under one fresh lease token.
const MARK_RUNNING: &str = "UPDATE jobs SET state = 'running', attempt = attempt + 1, \
    lease_token = $1, lease_expires_at = $2 + COALESCE($3, lease_ms * 1000), attempted_at = $2, \
    worker_id = $4";
const CLAIMED_COLUMNS: &str = "id, workspace_id, queue, kind, payload, attempt, lease_expires_at";

impl JobStore {
    /// Claims up to `max` jobs. `lease` overrides each job's own lease length.
    pub async fn claim(
        &self,
        target: &ClaimTarget,
        max: u32,
        lease: Option<Duration>,
        worker_id: Option<&str>,
    ) -> Result<Vec<ClaimedJob>, sqlx::Error> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = self.clock.now().as_micros();
        let token = new_token();
        let workspace = target.workspace.as_ref().map(WorkspaceId::as_str);
        let mut tx = self.begin_lax().await?;
        let mut limit = i64::from(max);
        if let Some(ws) = &target.workspace {
            // Pause and the concurrency limit are read under a lock on the queue's row, so
            // claimers on every node see each other's claims and the limit holds globally.
            let lock = self.db.backend().for_update();
            let settings_sql = format!(
                "SELECT paused, concurrency_limit FROM queues \
                 WHERE workspace_id = $1 AND name = $2 {lock}"
            );
            let settings: Option<QueueSettings> = with_tx!(&mut tx, conn => {
                sqlx::query_as(&settings_sql)
                    .bind(ws.as_str())
                    .bind(target.queue.as_str())
                    .fetch_optional(conn)
                    .await
            })?;
            if let Some(settings) = settings {
                if settings.paused {
                    return Ok(Vec::new());
                }
                if let Some(cap) = settings.concurrency_limit {
                    let running: i64 = with_tx!(&mut tx, conn => {
                        sqlx::query_scalar(
                            "SELECT COUNT(*) FROM jobs WHERE workspace_id = $1 AND queue = $2 \
                             AND state = 'running'",
                        )
                        .bind(ws.as_str())
                        .bind(target.queue.as_str())
                        .fetch_one(conn)
                        .await
                    })?;
                    limit = limit.min(cap - running);
                }
            }
        }
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let pick = pick_sql(self.db.backend());
        let picked: Vec<(String, String, String)> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&pick)
                .bind(target.queue.as_str())
                .bind(workspace)
                .bind(now)
                .bind(limit)
                .fetch_all(conn)
                .await
        })?;
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let lease = lease.map(micros);
        let pairs: Vec<[&str; 2]> = picked
            .iter()
            .map(|(ws, id, _)| [ws.as_str(), id.as_str()])
            .collect();
        let pairs = JsonList::new(&pairs)?;
        let mark = format!(
            "{MARK_RUNNING} WHERE (workspace_id, id) IN (SELECT value ->> 0, value ->> 1 FROM {}) \
             RETURNING {CLAIMED_COLUMNS}",
            self.db.backend().json_rows("$5")
        );
        let rows: Vec<ClaimedRow> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&mark)
                .bind(&token)
                .bind(now)
                .bind(lease)
                .bind(worker_id)
                .bind(pairs.as_str())
                .fetch_all(conn)
                .await
        })?;
        let mut moves = Moves::new();
        for (ws, _, state) in &picked {
            let from = state
                .parse::<JobState>()
                .map_err(|e| sqlx::Error::Decode(e.into()))?;
            moves.moved(
                ws,
                target.queue.as_str(),
                Some(from),
                Some(JobState::Running),
            );
        }
        moves.apply(&mut tx).await?;
        tx.commit().await?;
        // RETURNING has no order; hand the jobs out in the order they were picked (claim order).
        let mut by_id: HashMap<String, ClaimedRow> =
            rows.into_iter().map(|r| (r.id.clone(), r)).collect();
        picked
            .iter()
            .filter_map(|(_, id, _)| by_id.remove(id))
            .map(|row| {
                Ok(ClaimedJob {
                    id: JobId::from_trusted(row.id),
                    workspace_id: WorkspaceId::from_trusted(row.workspace_id),
                    queue: row.queue,
                    kind: row.kind,
                    payload: serde_json::from_str(&row.payload)
                        .map_err(|e| sqlx::Error::Decode(e.into()))?,
                    attempt: small(row.attempt),
                    lease_token: token.clone(),
                    lease_expires_at: Timestamp::from_micros(row.lease_expires_at),
                })
            })
            .collect()
    }

    /// Extends the lease of a running job held under `token`. `None` when the token is stale.
    pub async fn heartbeat(
        &self,
        workspace: &WorkspaceId,
        id: &JobId,
        token: &str,
        lease: Option<Duration>,
    ) -> Result<Option<Heartbeat>, sqlx::Error> {
        let now = self.clock.now().as_micros();
        let row: Option<(i64, bool)> = with_writer!(&self.db, pool => {
            sqlx::query_as(
                "UPDATE jobs SET lease_expires_at = $1 + COALESCE($2, lease_ms * 1000) \
                 WHERE workspace_id = $5 AND id = $3 AND lease_token = $4 AND state = 'running' \
                 RETURNING lease_expires_at, cancel_requested",
            )
            .bind(now)
            .bind(lease.map(micros))
            .bind(id.as_str())
            .bind(token)
            .bind(workspace.as_str())
            .fetch_optional(pool)
            .await
        })?;
        Ok(row.map(|(at, cancel_requested)| Heartbeat {
            lease_expires_at: Timestamp::from_micros(at),
            cancel_requested,
        }))
    }
}
