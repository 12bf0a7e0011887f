//! Forgetting old history with the retention of webhook events: audit entries older than it,
//! except the newest entry of each flag that still exists (so every flag still shows who last
//! changed it, and to which version), and schedules that ended before it.

use pier_db::{with_reader, with_tx};

use crate::FlagStore;

/// Rows deleted per transaction, so pruning never holds locks for long.
const BATCH: i64 = 1000;

/// Audit entries older than `$2` but the newest of each existing flag, `$3` of them.
const OLD_CHANGES: &str = "DELETE FROM flag_changes WHERE workspace_id = $1 AND seq IN (\
     SELECT c.seq FROM flag_changes c WHERE c.workspace_id = $1 AND c.created_at < $2 \
     AND NOT EXISTS (SELECT 1 FROM flags f WHERE f.workspace_id = c.workspace_id \
     AND f.key = c.flag_key AND c.seq = (SELECT MAX(m.seq) FROM flag_changes m \
     WHERE m.workspace_id = c.workspace_id AND m.flag_key = c.flag_key)) \
     LIMIT $3)";

/// Schedules that ended before `$2`, `$3` of them.
const ENDED_SCHEDULES: &str = "DELETE FROM flag_schedules WHERE workspace_id = $1 AND id IN (\
     SELECT id FROM flag_schedules WHERE workspace_id = $1 AND ended_at < $2 LIMIT $3)";

impl FlagStore {
    /// Deletes the audit entries and ended schedules older than the store's history
    /// ([`FlagStore::with_history`]; see the module's docs), one workspace at a time, [`BATCH`]
    /// rows per transaction. Returns how many rows.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let cutoff = self.clock.now().saturating_sub(self.history).as_micros();
        let mut pruned = 0;
        for (table, delete) in [
            ("flag_changes", OLD_CHANGES),
            ("flag_schedules", ENDED_SCHEDULES),
        ] {
            let sql = format!("SELECT DISTINCT workspace_id FROM {table}");
            let workspaces: Vec<String> = with_reader!(&self.db, pool => {
                sqlx::query_scalar(&sql).fetch_all(pool).await
            })?;
            for workspace in &workspaces {
                loop {
                    let mut tx = self.db.begin().await?;
                    let deleted = with_tx!(&mut tx, conn => {
                        sqlx::query(delete)
                            .bind(workspace)
                            .bind(cutoff)
                            .bind(BATCH)
                            .execute(conn)
                            .await
                            .map(|r| r.rows_affected())
                    })?;
                    tx.commit().await?;
                    pruned += deleted;
                    if deleted < BATCH as u64 {
                        break;
                    }
                }
            }
        }
        Ok(pruned)
    }
}
