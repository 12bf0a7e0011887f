//! Per-queue, per-state job counters, so queue statistics never count rows. Every statement that
//! moves jobs between states adds its moves here in the same transaction; the counters are
//! sharded (summed when read) so concurrent batches do not queue on one row lock.

use std::collections::BTreeMap;

use pier_db::{JsonList, Tx, with_tx};

use crate::metrics::{self, Event};
use crate::model::JobState;

/// Shards per counter (see the `job_counts` migration).
const SHARDS: i64 = 8;

/// Changes to apply: `(workspace, queue, state) → delta`. Ordered, so every transaction updates
/// counter rows in the same order and two transactions can never wait on each other in a cycle
/// (a deadlock on PostgreSQL).
///
/// Each move is also counted in the job metrics (`pier_jobs_enqueued_total` and the rest) when
/// the moves are written.
#[derive(Debug, Default)]
pub(crate) struct Moves {
    deltas: BTreeMap<(String, String, JobState), i64>,
    events: BTreeMap<(String, Event), u64>,
}

impl Moves {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// One job of `workspace`/`queue` moved from `from` (if it existed) to `to` (if it remains).
    pub(crate) fn moved(
        &mut self,
        workspace: &str,
        queue: &str,
        from: Option<JobState>,
        to: Option<JobState>,
    ) {
        if let Some(event) = Event::of(from, to) {
            *self.events.entry((queue.to_owned(), event)).or_default() += 1;
        }
        for (state, delta) in [(from, -1), (to, 1)] {
            if let Some(state) = state {
                *self
                    .deltas
                    .entry((workspace.to_owned(), queue.to_owned(), state))
                    .or_default() += delta;
            }
        }
    }

    /// Writes the moves inside `tx`, in one statement, all on one shard picked for this
    /// transaction; rows are upserted in key order. The metrics count them once written (a
    /// transaction that then fails to commit is counted all the same: rare, and only a count).
    pub(crate) async fn apply(self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        self.write(tx).await?;
        for ((queue, event), n) in self.events {
            metrics::count(&queue, event, n);
        }
        Ok(())
    }

    async fn write(&self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        let rows: Vec<(&str, &str, &str, i64)> = self
            .deltas
            .iter()
            .filter(|(_, delta)| **delta != 0)
            .map(|((workspace, queue, state), delta)| {
                (workspace.as_str(), queue.as_str(), state.as_str(), *delta)
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO job_counts (workspace_id, queue, state, shard, n) \
             SELECT value ->> 0, value ->> 1, value ->> 2, $1, CAST(value ->> 3 AS BIGINT) \
             FROM {} WHERE true ORDER BY 1, 2, 3 \
             ON CONFLICT (workspace_id, queue, state, shard) DO UPDATE SET n = job_counts.n + excluded.n",
            tx.backend().json_rows("$2")
        );
        let rows = JsonList::new(&rows)?;
        let shard = rand::random_range(0..SHARDS);
        with_tx!(tx, conn => {
            sqlx::query(&sql)
                .bind(shard)
                .bind(rows.as_str())
                .execute(conn)
                .await
                .map(drop)
        })
    }
}

/// Folds `workspace`'s counters: the rows of a queue that holds no job any more (every state sums
/// to zero) go, and so do rows at zero, so counters do not outlive their queues however many
/// queue names a workspace has used. The rows are locked in key order, the order every
/// transaction updates them in, and summed under the lock, so nothing concurrent is lost.
pub(crate) async fn compact(tx: &mut Tx, workspace: &str) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "SELECT queue, state, shard, n FROM job_counts WHERE workspace_id = $1 \
         ORDER BY queue, state, shard {}",
        tx.backend().for_update()
    );
    let rows: Vec<(String, String, i64, i64)> = with_tx!(tx, conn => {
        sqlx::query_as(&sql).bind(workspace).fetch_all(conn).await
    })?;
    let mut sums: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (queue, state, _, n) in &rows {
        *sums.entry((queue, state)).or_default() += n;
    }
    let busy: std::collections::HashSet<&str> = sums
        .iter()
        .filter(|(_, sum)| **sum != 0)
        .map(|((queue, _), _)| *queue)
        .collect();
    let gone: Vec<(&str, &str, i64)> = rows
        .iter()
        .filter(|(queue, _, _, n)| *n == 0 || !busy.contains(queue.as_str()))
        .map(|(queue, state, shard, _)| (queue.as_str(), state.as_str(), *shard))
        .collect();
    if gone.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "DELETE FROM job_counts WHERE workspace_id = $1 AND (queue, state, shard) IN \
         (SELECT value ->> 0, value ->> 1, CAST(value ->> 2 AS BIGINT) FROM {})",
        tx.backend().json_rows("$2")
    );
    let gone = JsonList::new(&gone)?;
    with_tx!(tx, conn => {
        sqlx::query(&sql)
            .persistent(false)
            .bind(workspace)
            .bind(gone.as_str())
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
    })
}
