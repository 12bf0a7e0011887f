//! Claiming jobs (many per statement) and extending their leases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pier_core::{Timestamp, WorkspaceId};
use pier_db::{JsonList, OwnedKeys, with_tx};
use rand::RngCore;
use tracing::Instrument;

use super::counts::Moves;
use super::finish::Held;
use super::{JobStore, WAITING, decode_error, small};
use crate::metrics;
use crate::model::{ClaimedJob, JobId, JobState, QueueName};

/// Which jobs a claim may take: a queue of one workspace (HTTP workers, workspace-bound pools;
/// pause and concurrency limits apply), or one of Pier's own queues across all workspaces
/// (Pier's in-process workers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimTarget {
    workspace: Option<WorkspaceId>,
    queue: QueueName,
}

impl ClaimTarget {
    /// A queue of one workspace.
    pub fn workspace(workspace: WorkspaceId, queue: QueueName) -> Self {
        Self {
            workspace: Some(workspace),
            queue,
        }
    }

    /// One of Pier's own queues, in every workspace; `None` for a tenant's queue, which is only
    /// ever served within its workspace.
    pub fn internal(queue: QueueName) -> Option<Self> {
        queue.is_internal().then_some(Self {
            workspace: None,
            queue,
        })
    }

    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    pub fn workspace_id(&self) -> Option<&WorkspaceId> {
        self.workspace.as_ref()
    }
}

/// How much a claim may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimits {
    /// At most this many jobs.
    pub max: u32,
    /// Stop adding jobs once their payloads reach this many bytes (the first job is always
    /// taken), so a claim's response stays bounded whatever the payloads are.
    pub budget_bytes: u64,
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
    trace_parent: Option<String>,
    inputs: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Picked {
    workspace_id: String,
    id: String,
    state: String,
    size: i64,
    run_at: i64,
}

#[derive(sqlx::FromRow)]
struct QueueSettings {
    paused: bool,
    concurrency_limit: Option<i64>,
}

pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// How many workspaces one claim of an internal queue serves at most.
const WORKSPACES_PER_CLAIM: usize = 16;

/// Where each internal queue's turns stand on this node: the last workspace a claim served.
/// One entry per internal queue (a handful), so it stays small.
#[derive(Debug, Clone, Default)]
pub(crate) struct Turns(Arc<Mutex<HashMap<String, String>>>);

impl Turns {
    fn last_served(&self, queue: &QueueName) -> String {
        let turns = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        turns.get(queue.as_str()).cloned().unwrap_or_default()
    }

    fn served(&self, queue: &QueueName, workspace: &str) {
        let mut turns = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        turns.insert(queue.as_str().to_owned(), workspace.to_owned());
    }
}

/// The picks of several workspaces dealt out in turns (each workspace's first, then each
/// one's second, …), at most `max`: the shares were rounded up, so together they may exceed
/// the free slots, and a job claimed beyond them would sit unrun until its lease expired.
fn in_turns(picked: Vec<Picked>, max: usize) -> Vec<Picked> {
    let mut rank: HashMap<String, usize> = HashMap::new();
    let mut ranked: Vec<(usize, Picked)> = picked
        .into_iter()
        .map(|p| {
            let turn = rank.entry(p.workspace_id.clone()).or_default();
            *turn += 1;
            (*turn, p)
        })
        .collect();
    // Stable: within a turn, claim order stays.
    ranked.sort_by_key(|(turn, _)| *turn);
    ranked.into_iter().take(max).map(|(_, p)| p).collect()
}

const PICKED_COLUMNS: &str =
    "workspace_id, id, state, CAST(OCTET_LENGTH(payload) AS BIGINT) AS size, run_at";

/// Marks the picked jobs running under one fresh lease token.
const MARK_RUNNING: &str = "UPDATE jobs SET state = 'running', attempt = attempt + 1, \
    lease_token = $1, lease_expires_at = $2 + COALESCE($3, lease_ms * 1000), attempted_at = $2, \
    worker_id = $4";
const CLAIMED_COLUMNS: &str =
    "id, workspace_id, queue, kind, payload, attempt, lease_expires_at, trace_parent, inputs";

impl JobStore {
    /// Claims jobs in claim order (priority, then due time, then age). `lease` overrides each
    /// job's own lease length.
    pub async fn claim(
        &self,
        target: &ClaimTarget,
        limits: ClaimLimits,
        lease: Option<Duration>,
        worker_id: Option<&str>,
    ) -> Result<Vec<ClaimedJob>, sqlx::Error> {
        let span = crate::trace::receive(target.queue.as_str());
        let jobs = async {
            if limits.max == 0 {
                return Ok(Vec::new());
            }
            let now = self.clock.now().as_micros();
            let mut tx = self.db.begin_relaxed().await?;
            let mut max = i64::from(limits.max);
            if let Some(ws) = &target.workspace {
                // Pause and the concurrency limit are read under a lock on the queue's row, so
                // claimers on every node see each other's claims and the limit holds globally.
                let settings_sql = format!(
                    "SELECT paused, concurrency_limit FROM queues \
                     WHERE workspace_id = $1 AND name = $2 {}",
                    self.db.backend().for_update()
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
                        max = max.min(cap - running);
                    }
                }
            }
            if max <= 0 {
                return Ok(Vec::new());
            }
            let mut picked = self.pick(&mut tx, target, now, max).await?;
            let mut taken = 0u64;
            let within_budget = picked
                .iter()
                .position(|p| {
                    taken += u64::try_from(p.size).unwrap_or(0);
                    taken > limits.budget_bytes
                })
                .unwrap_or(picked.len())
                .max(1);
            picked.truncate(within_budget);
            if picked.is_empty() {
                return Ok(Vec::new());
            }

            let token = new_token();
            let pairs = OwnedKeys::new(
                picked
                    .iter()
                    .map(|p| (p.workspace_id.as_str(), p.id.as_str())),
            )?;
            let mark = format!(
                "{MARK_RUNNING} WHERE {} RETURNING {CLAIMED_COLUMNS}",
                self.db.backend().owned_keys_in("$5")
            );
            let rows: Vec<ClaimedRow> = with_tx!(&mut tx, conn => {
                sqlx::query_as(&mark)
                    .persistent(false)
                    .bind(&token)
                    .bind(now)
                    .bind(lease.map(micros))
                    .bind(worker_id)
                    .bind(pairs.as_str())
                    .fetch_all(conn)
                    .await
            })?;
            let mut moves = Moves::new();
            for p in &picked {
                let from = p
                    .state
                    .parse::<JobState>()
                    .map_err(|e| decode_error("state", e))?;
                moves.moved(
                    &p.workspace_id,
                    target.queue.as_str(),
                    Some(from),
                    Some(JobState::Running),
                );
            }
            moves.apply(&mut tx).await?;
            tx.commit().await?;
            let pickup = metrics::pickup_latency(target.queue.as_str());
            for p in &picked {
                pickup.record(metrics::between(p.run_at, now).as_secs_f64());
            }
            // RETURNING has no order; hand the jobs out in the order they were picked (claim order).
            let mut by_id: HashMap<String, ClaimedRow> =
                rows.into_iter().map(|r| (r.id.clone(), r)).collect();
            picked
                .iter()
                .filter_map(|p| by_id.remove(&p.id))
                .map(|row| {
                    Ok(ClaimedJob {
                        id: JobId::from_trusted(row.id),
                        workspace_id: WorkspaceId::from_trusted(row.workspace_id),
                        queue: row.queue,
                        kind: row.kind,
                        payload: serde_json::from_str(&row.payload)
                            .map_err(|e| decode_error("payload", e))?,
                        attempt: small(row.attempt),
                        lease_token: token.clone(),
                        lease_expires_at: Timestamp::from_micros(row.lease_expires_at),
                        traceparent: row.trace_parent,
                        inputs: super::parse_inputs(row.inputs.as_deref())?,
                    })
                })
                .collect::<Result<Vec<ClaimedJob>, sqlx::Error>>()
        }
        .instrument(span.clone())
        .await?;
        crate::trace::received(&span, &jobs);
        Ok(jobs)
    }

    /// Picks up to `max` due waiting jobs, locking them: a workspace's queue in claim order,
    /// read from the index that leads with the workspace, so another tenant's backlog in a
    /// queue of the same name is never scanned; one of Pier's own queues in turns across
    /// workspaces ([`JobStore::pick_in_turns`]). On PostgreSQL, `SKIP LOCKED` lets many
    /// claimers work one queue without waiting on each other; SQLite has a single writer.
    async fn pick(
        &self,
        tx: &mut pier_db::Tx,
        target: &ClaimTarget,
        now: i64,
        max: i64,
    ) -> Result<Vec<Picked>, sqlx::Error> {
        let Some(workspace) = &target.workspace else {
            return self.pick_in_turns(tx, &target.queue, now, max).await;
        };
        let sql = format!(
            "SELECT {PICKED_COLUMNS} FROM jobs WHERE workspace_id = $1 AND queue = $2 \
             AND state IN {WAITING} AND run_at <= $3 ORDER BY priority, run_at, id LIMIT $4 {}",
            self.db.backend().for_update_skip_locked()
        );
        with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(target.queue.as_str())
                .bind(now)
                .bind(max)
                .fetch_all(conn)
                .await
        })
    }

    /// Fair claims on Pier's own queues, which serve every workspace: one tenant's backlog
    /// must not delay another's first delivery. Each claim serves the next
    /// [`WORKSPACES_PER_CLAIM`] workspaces that have a due job, in workspace-id order after
    /// the last one this node served (wrapping around), and takes at most an equal share of
    /// `max` from each, in claim order within the workspace. Priorities order jobs within a
    /// workspace, not across workspaces.
    async fn pick_in_turns(
        &self,
        tx: &mut pier_db::Tx,
        queue: &QueueName,
        now: i64,
        max: i64,
    ) -> Result<Vec<Picked>, sqlx::Error> {
        let after = self.turns.last_served(queue);
        let mut turn = self.workspaces_due(tx, queue, now, &after).await?;
        if turn.len() < WORKSPACES_PER_CLAIM && !after.is_empty() {
            for workspace in self.workspaces_due(tx, queue, now, "").await? {
                if turn.len() < WORKSPACES_PER_CLAIM && !turn.contains(&workspace) {
                    turn.push(workspace);
                }
            }
        }
        let Some(last) = turn.last() else {
            return Ok(Vec::new());
        };
        self.turns.served(queue, last);
        let n = i64::try_from(turn.len()).unwrap_or(1);
        let share = (max + n - 1) / n;
        // Each workspace's share is locked in its own scan, skipping rows another claimer holds
        // (so claimers on several nodes working one workspace's backlog do not starve each
        // other) and checking again, under READ COMMITTED, that a locked row still waits.
        let lock = self.db.backend().for_update_skip_locked();
        let sql = (0..turn.len())
            .map(|i| {
                format!(
                    "SELECT * FROM (SELECT {PICKED_COLUMNS} FROM jobs WHERE workspace_id = ${} \
                     AND queue = $1 AND state IN {WAITING} AND run_at <= $2 \
                     ORDER BY priority, run_at, id LIMIT $3 {lock}) AS turn{i}",
                    i + 4
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let picked: Vec<Picked> = with_tx!(tx, conn => {
            let mut query = sqlx::query_as(&sql)
                .persistent(false)
                .bind(queue.as_str())
                .bind(now)
                .bind(share);
            for workspace in &turn {
                query = query.bind(workspace.as_str());
            }
            query.fetch_all(conn).await
        })?;
        Ok(in_turns(picked, usize::try_from(max).unwrap_or(usize::MAX)))
    }

    /// Up to [`WORKSPACES_PER_CLAIM`] workspaces after `after` with a due job in `queue`, in
    /// id order: one probe of `jobs_waiting_internal_by_workspace` each.
    async fn workspaces_due(
        &self,
        tx: &mut pier_db::Tx,
        queue: &QueueName,
        now: i64,
        after: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        let next = |from: &str| {
            format!(
                "(SELECT workspace_id FROM jobs WHERE queue = $1 AND queue LIKE 'pier.%' \
                 AND state IN {WAITING} AND run_at <= $2 AND workspace_id > {from} \
                 ORDER BY workspace_id LIMIT 1)"
            )
        };
        let sql = format!(
            "WITH RECURSIVE turn (workspace_id, n) AS (SELECT {}, 1 UNION ALL \
             SELECT {}, n + 1 FROM turn WHERE workspace_id IS NOT NULL AND n < $4) \
             SELECT workspace_id FROM turn WHERE workspace_id IS NOT NULL",
            next("$3"),
            next("turn.workspace_id")
        );
        with_tx!(tx, conn => {
            sqlx::query_scalar(&sql)
                .bind(queue.as_str())
                .bind(now)
                .bind(after)
                .bind(i64::try_from(WORKSPACES_PER_CLAIM).unwrap_or(1))
                .fetch_all(conn)
                .await
        })
    }

    /// Extends the lease of a running job held under its token. `None` when the token is stale.
    pub async fn heartbeat(
        &self,
        job: &Held,
        lease: Option<Duration>,
    ) -> Result<Option<Heartbeat>, sqlx::Error> {
        let beats = self.heartbeat_many(&[(job.clone(), lease)]).await?;
        Ok(beats.into_iter().next().flatten())
    }

    /// Extends many leases in one statement: each from now by its own `lease`, or by its job's
    /// lease length. Returns, per input, the new lease, or `None` when the token is stale.
    pub async fn heartbeat_many(
        &self,
        beats: &[(Held, Option<Duration>)],
    ) -> Result<Vec<Option<Heartbeat>>, sqlx::Error> {
        if beats.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now().as_micros();
        let rows: Vec<(&str, &str, &str, Option<i64>)> = beats
            .iter()
            .map(|(h, lease)| {
                let lease = lease.map(micros);
                (h.workspace.as_str(), h.id.as_str(), h.token.as_str(), lease)
            })
            .collect();
        let rows = JsonList::new(&rows)?;
        let sql = format!(
            "UPDATE jobs SET lease_expires_at = $1 + COALESCE(k.lease, jobs.lease_ms * 1000) \
             FROM (SELECT value ->> 0 AS ws, value ->> 1 AS id, value ->> 2 AS token, \
             CAST(value ->> 3 AS BIGINT) AS lease FROM {}) AS k \
             WHERE jobs.workspace_id = k.ws AND jobs.id = k.id AND jobs.lease_token = k.token \
             RETURNING jobs.workspace_id, jobs.id, jobs.lease_token, jobs.lease_expires_at, \
             jobs.cancel_requested",
            self.db.backend().json_rows("$2")
        );
        let mut tx = self.db.begin_relaxed().await?;
        let renewed: Vec<(String, String, String, i64, bool)> =
            super::update_listed(&mut tx, &sql, now, &rows).await?;
        tx.commit().await?;
        // Keyed by token too: of two beats naming one job, only the current token's counts.
        let renewed: HashMap<(String, String, String), Heartbeat> = renewed
            .into_iter()
            .map(|(ws, id, token, at, cancel_requested)| {
                let beat = Heartbeat {
                    lease_expires_at: Timestamp::from_micros(at),
                    cancel_requested,
                };
                ((ws, id, token), beat)
            })
            .collect();
        Ok(beats
            .iter()
            .map(|(h, _)| {
                let key = (h.workspace.to_string(), h.id.to_string(), h.token.clone());
                renewed.get(&key).copied()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picked(workspace: &str, id: &str) -> Picked {
        Picked {
            workspace_id: workspace.to_owned(),
            id: id.to_owned(),
            state: "available".to_owned(),
            size: 2,
            run_at: 0,
        }
    }

    #[test]
    fn shares_are_dealt_in_turns_and_never_exceed_the_free_slots() {
        // Three free slots, two workspaces: shares of two each, rounded up, make four picks.
        let all = vec![
            picked("ws_a", "1"),
            picked("ws_b", "2"),
            picked("ws_a", "3"),
            picked("ws_b", "4"),
        ];
        let dealt: Vec<String> = in_turns(all, 3).into_iter().map(|p| p.id).collect();
        assert_eq!(dealt, ["1", "2", "3"]);
    }
}
