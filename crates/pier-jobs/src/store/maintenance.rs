//! Background upkeep, safe to run on every node at once: rescuing expired leases, promoting due
//! jobs, and pruning finished ones.

use std::collections::BTreeSet;
use std::time::Duration;

use pier_core::WorkspaceId;
use pier_db::{with_reader, with_tx};

use super::JobStore;
use super::counts::{self, Moves};
use super::finish::{FAIL_COLUMNS, FailRow, record_failure};
use crate::model::{JobId, JobState};
use crate::notify::until_true;

/// How long finished jobs are kept before pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub completed: Duration,
    pub cancelled: Duration,
    pub discarded: Duration,
}

impl Default for Retention {
    /// Completed jobs 1 day; cancelled and discarded (dead letters, worth inspecting) 7 days.
    fn default() -> Self {
        Self {
            completed: Duration::from_secs(24 * 3600),
            cancelled: Duration::from_secs(7 * 24 * 3600),
            discarded: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

const BATCH: i64 = 500;

impl JobStore {
    /// Ends the attempts of running jobs whose lease expired (their worker died, hung or lost
    /// the database): each counts as a failed attempt and is retried, discarded, or cancelled.
    /// Returns how many were rescued.
    pub async fn rescue_expired(&self) -> Result<u64, sqlx::Error> {
        let now = self.clock.now();
        let lock = self.db.backend().for_update_skip_locked();
        let sql = format!(
            "SELECT {FAIL_COLUMNS} FROM jobs WHERE state = 'running' AND lease_expires_at <= $1 \
             ORDER BY lease_expires_at LIMIT $2 {lock}"
        );
        let mut rescued = 0;
        loop {
            let mut tx = self.begin_lax().await?;
            let rows: Vec<FailRow> = with_tx!(&mut tx, conn => {
                sqlx::query_as(&sql)
                    .bind(now.as_micros())
                    .bind(BATCH)
                    .fetch_all(conn)
                    .await
            })?;
            let n = rows.len();
            let mut woken = Vec::new();
            let mut moves = Moves::new();
            let mut steps = Vec::new();
            for row in &rows {
                let error = "the lease expired: the worker stopped heartbeating before finishing";
                let state =
                    record_failure(&mut tx, row, (error, None, false), now, &mut moves).await?;
                self.after_failure(&mut tx, row, state, error, &mut steps)
                    .await?;
                if state == JobState::Retryable {
                    woken.push((row.workspace_id.clone(), row.queue.clone()));
                }
            }
            self.settle(&mut tx, steps, now.as_micros(), moves).await?;
            tx.commit().await?;
            for row in &rows {
                crate::metrics::count(&row.queue, crate::metrics::Event::Rescued, 1);
            }
            for (workspace, queue) in woken {
                self.notifier
                    .wake(&WorkspaceId::from_trusted(workspace), &queue);
            }
            rescued += n as u64;
            if (n as i64) < BATCH {
                return Ok(rescued);
            }
        }
    }

    /// Moves scheduled and retryable jobs whose time has come to `available`, so states read
    /// true. (Claims take due jobs in those states directly, so this never delays a job.)
    ///
    /// The pick locks its rows and skips those another transaction holds (a claim or a cancel
    /// in progress), and the update checks the state again: under READ COMMITTED a row that a
    /// claim moved to `running` after the pick looked must not be put back to `available`.
    pub async fn promote_due(&self) -> Result<u64, sqlx::Error> {
        let now = self.clock.now().as_micros();
        // `state IN (…)` is the `jobs_due` index's own predicate, written out so that both
        // engines see the index applies (with the state as a parameter SQLite scanned the whole
        // table: 28 ms a second at 200,000 jobs, holding the writer).
        let sql = format!(
            "UPDATE jobs SET state = 'available' WHERE (workspace_id, id) IN \
             (SELECT workspace_id, id FROM jobs WHERE state IN ('scheduled', 'retryable') \
             AND state = $1 AND run_at <= $2 LIMIT 5000 {}) \
             AND state = $1 RETURNING workspace_id, queue",
            self.db.backend().for_update_skip_locked()
        );
        let mut tx = self.db.begin().await?;
        let mut moves = Moves::new();
        let mut queues = BTreeSet::new();
        for from in [JobState::Scheduled, JobState::Retryable] {
            let promoted: Vec<(String, String)> = with_tx!(&mut tx, conn => {
                sqlx::query_as(&sql)
                    .bind(from.as_str())
                    .bind(now)
                    .fetch_all(conn)
                    .await
            })?;
            for (workspace, queue) in promoted {
                moves.moved(&workspace, &queue, Some(from), Some(JobState::Available));
                queues.insert((workspace, queue));
            }
        }
        moves.apply(&mut tx).await?;
        tx.commit().await?;
        for (workspace, queue) in &queues {
            self.notifier
                .wake(&WorkspaceId::from_trusted(workspace.clone()), queue);
        }
        Ok(queues.len() as u64)
    }

    /// Deletes finished jobs older than `retention`, in bounded batches, one workspace at a time
    /// (each walks its primary-key range of ids older than the cutoff), then folds the
    /// workspace's counters; then finished workflows older than the longest retention. Returns
    /// how many jobs. Like promotion, the pick skips locked rows
    /// and the delete checks the state again, so a job retried meanwhile is never deleted.
    pub async fn prune(&self, retention: &Retention) -> Result<u64, sqlx::Error> {
        let now = self.clock.now();
        let workspaces: Vec<(String,)> = with_reader!(&self.db, pool => {
            // The workspaces that have (or had) jobs: the store's own counters know them.
            sqlx::query_as("SELECT DISTINCT workspace_id FROM job_counts")
                .fetch_all(pool)
                .await
        })?;
        let sql = format!(
            "DELETE FROM jobs WHERE (workspace_id, id) IN (SELECT workspace_id, id FROM jobs \
             WHERE workspace_id = $1 AND id < $2 AND state = $3 AND finalized_at < $4 LIMIT $5 {}) \
             AND state = $3 AND finalized_at < $4 RETURNING workspace_id, queue",
            self.db.backend().for_update_skip_locked()
        );
        let mut pruned = 0;
        for (workspace,) in &workspaces {
            for (state, keep) in [
                (JobState::Completed, retention.completed),
                (JobState::Cancelled, retention.cancelled),
                (JobState::Discarded, retention.discarded),
            ] {
                let cutoff = now.saturating_sub(keep);
                // A job finished before the cutoff was created before it too.
                let id_bound = format!("{}_{}", JobId::PREFIX, pier_core::id::floor_body(cutoff));
                loop {
                    let mut tx = self.db.begin().await?;
                    let deleted: Vec<(String, String)> = with_tx!(&mut tx, conn => {
                        sqlx::query_as(&sql)
                            .bind(workspace)
                            .bind(&id_bound)
                            .bind(state.as_str())
                            .bind(cutoff.as_micros())
                            .bind(BATCH * 4)
                            .fetch_all(conn)
                            .await
                    })?;
                    let mut moves = Moves::new();
                    for (workspace, queue) in &deleted {
                        moves.moved(workspace, queue, Some(state), None);
                    }
                    moves.apply(&mut tx).await?;
                    tx.commit().await?;
                    pruned += deleted.len() as u64;
                    if (deleted.len() as i64) < BATCH * 4 {
                        break;
                    }
                }
            }
            let mut tx = self.db.begin().await?;
            counts::compact(&mut tx, workspace).await?;
            tx.commit().await?;
        }
        // A finished workflow is kept as long as the longest-kept of its jobs may be.
        let longest = retention
            .completed
            .max(retention.cancelled)
            .max(retention.discarded);
        self.prune_workflows(now.saturating_sub(longest).as_micros())
            .await?;
        Ok(pruned)
    }
}

/// How often leases are checked and due jobs promoted: rescue happens within about this long
/// after a lease expires.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(1);
/// How often finished jobs are pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(300);

impl JobStore {
    /// Runs rescue and promotion every [`UPKEEP_EVERY`] and pruning every [`PRUNE_EVERY`] until
    /// `stop` turns true.
    pub async fn maintain(
        self,
        retention: Retention,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = until_true(&mut stop) => return,
            }
            match self.rescue_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "rescued jobs whose lease expired"),
                Err(err) => tracing::warn!(error = %err, "lease rescue failed"),
            }
            if let Err(err) = self.promote_due().await {
                tracing::warn!(error = %err, "promoting due jobs failed");
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                match self.prune(&retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(jobs = n, "pruned finished jobs"),
                    Err(err) => tracing::warn!(error = %err, "pruning jobs failed"),
                }
            }
        }
    }
}
