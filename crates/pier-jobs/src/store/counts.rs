//! Per-queue, per-state job counters, so queue statistics never count rows. Every statement that
//! moves jobs between states adds its moves here in the same transaction; the counters are
//! sharded (summed when read) so concurrent batches do not queue on one row lock.

use std::collections::HashMap;

use pier_db::{Tx, with_tx};

use crate::model::JobState;

/// Shards per counter (see the `job_counts` migration).
const SHARDS: i64 = 8;

/// Changes to apply: `(workspace, queue, state) → delta`.
#[derive(Debug, Default)]
pub(crate) struct Moves(HashMap<(String, String, JobState), i64>);

impl Moves {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn add(&mut self, workspace: &str, queue: &str, state: JobState, delta: i64) {
        *self
            .0
            .entry((workspace.to_owned(), queue.to_owned(), state))
            .or_default() += delta;
    }

    /// One job of `workspace`/`queue` moved from `from` (if it existed) to `to` (if it remains).
    pub(crate) fn moved(
        &mut self,
        workspace: &str,
        queue: &str,
        from: Option<JobState>,
        to: Option<JobState>,
    ) {
        if let Some(from) = from {
            self.add(workspace, queue, from, -1);
        }
        if let Some(to) = to {
            self.add(workspace, queue, to, 1);
        }
    }

    /// Writes the moves inside `tx`.
    pub(crate) async fn apply(self, tx: &mut Tx) -> Result<(), sqlx::Error> {
        for ((workspace, queue, state), delta) in self.0 {
            if delta == 0 {
                continue;
            }
            with_tx!(tx, conn => {
                sqlx::query(
                    "INSERT INTO job_counts (workspace_id, queue, state, shard, n) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_id, queue, state, shard) \
                     DO UPDATE SET n = job_counts.n + excluded.n",
                )
                .bind(&workspace)
                .bind(&queue)
                .bind(state.as_str())
                .bind(rand::random_range(0..SHARDS))
                .bind(delta)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
            })?;
        }
        Ok(())
    }
}
