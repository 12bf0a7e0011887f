//! Forgetting old history: events past the retention period go with their deliveries and
//! attempts, once every delivery of theirs has ended, so the tables stay bounded by the
//! traffic of one period.

use std::time::Duration;

use pier_db::{OwnedKeys, with_reader, with_tx};

use crate::model::EventId;
use crate::store::WebhookStore;

/// Events deleted per transaction, so pruning never holds locks for long.
const BATCH: i64 = 1000;

impl WebhookStore {
    /// Deletes the events older than `retention` whose deliveries have all ended, with those
    /// deliveries and their attempts; one workspace at a time, walking its ids older than the
    /// cutoff. Returns how many events.
    pub async fn prune(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        let cutoff = self.clock.now().saturating_sub(retention);
        // An event created before the cutoff has an id below this one.
        let id_bound = format!("{}_{}", EventId::PREFIX, pier_core::id::floor_body(cutoff));
        let workspaces: Vec<(String,)> = with_reader!(&self.db, pool => {
            sqlx::query_as("SELECT DISTINCT workspace_id FROM webhook_events")
                .fetch_all(pool)
                .await
        })?;
        let ended = "NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                     WHERE d.workspace_id = e.workspace_id AND d.event_id = e.id \
                     AND d.state IN ('waiting', 'pending'))";
        let pick = format!(
            "SELECT id FROM webhook_events e WHERE workspace_id = $1 AND id < $2 AND {ended} \
             ORDER BY id LIMIT $3"
        );
        let events = self.db.backend().owned_keys_in("$1");
        let of_events = events.replacen("(workspace_id, id)", "(workspace_id, event_id)", 1);
        // A retry may reopen a delivery between the pick and the delete: its row lock is
        // awaited, and the events are picked again among the first pick, now that their
        // deliveries are locked, so an event with a reopened delivery stays (and the retry
        // that comes after the lock finds the delivery gone, and says so).
        let lock = format!(
            "SELECT id FROM webhook_deliveries WHERE {of_events} {}",
            self.db.backend().for_update()
        );
        let still_ended = format!("SELECT id FROM webhook_events e WHERE {events} AND {ended}");
        let mut pruned = 0;
        for (workspace,) in &workspaces {
            loop {
                let mut tx = self.db.begin().await?;
                let picked: Vec<String> = with_tx!(&mut tx, conn => {
                    sqlx::query_scalar(&pick)
                        .bind(workspace)
                        .bind(&id_bound)
                        .bind(BATCH)
                        .fetch_all(conn)
                        .await
                })?;
                let keys =
                    OwnedKeys::new(picked.iter().map(|id| (workspace.as_str(), id.as_str())))?;
                let ids: Vec<String> = with_tx!(&mut tx, conn => {
                    sqlx::query(&lock)
                        .persistent(false)
                        .bind(keys.as_str())
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query_scalar(&still_ended)
                        .persistent(false)
                        .bind(keys.as_str())
                        .fetch_all(conn)
                        .await
                })?;
                let keys = OwnedKeys::new(ids.iter().map(|id| (workspace.as_str(), id.as_str())))?;
                for sql in [
                    // By delivery, which the attempts are indexed by.
                    format!(
                        "DELETE FROM webhook_attempts WHERE (workspace_id, delivery_id) IN \
                         (SELECT workspace_id, id FROM webhook_deliveries WHERE {of_events})"
                    ),
                    format!("DELETE FROM webhook_deliveries WHERE {of_events}"),
                    format!("DELETE FROM webhook_events WHERE {events}"),
                ] {
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
                pruned += ids.len() as u64;
                if (picked.len() as i64) < BATCH {
                    break;
                }
            }
        }
        Ok(pruned)
    }
}
