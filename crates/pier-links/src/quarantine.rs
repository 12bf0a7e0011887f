//! Slug quarantine: a slug a link gives up (deleted, or renamed away from) stays reserved to
//! its workspace for a while, so a short link already printed or shared cannot be taken over
//! by another tenant (ASVS 5.0 V8.4.1). Another workspace finds such a slug taken, exactly as
//! if a link held it; the workspace that held it may take it again at once.
//!
//! The reservation is written in the transaction that frees the slug, and a create or rename
//! looks for reservations after its own write, in its transaction. So a create racing a delete
//! on PostgreSQL (read committed) cannot slip between them: its insert waits on the deleted
//! row until the delete commits, and the look that follows sees the reservation committed with
//! it. SQLite runs one write at a time.

use std::collections::HashSet;

use pier_core::WorkspaceId;
use pier_db::{JsonList, Tx, with_tx, with_writer};

use crate::store::LinkStore;

/// Slugs as the JSON rows `[[slug], …]` that `value ->> 0` reads on both backends.
pub(crate) fn slug_list(slugs: &[&str]) -> Result<JsonList, sqlx::Error> {
    let rows: Vec<[&str; 1]> = slugs.iter().map(|s| [*s]).collect();
    JsonList::new(&rows)
}

impl LinkStore {
    /// Reserves `slugs`, which `tx` frees, to `workspace` for the quarantine (nothing when
    /// it is zero).
    pub(crate) async fn hold_slugs(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        slugs: &[&str],
    ) -> Result<(), sqlx::Error> {
        if self.quarantine().is_zero() || slugs.is_empty() {
            return Ok(());
        }
        let until = self.now().saturating_add(self.quarantine());
        let list = slug_list(slugs)?;
        // `WHERE true` keeps SQLite from reading `ON CONFLICT` as part of the SELECT's join.
        let sql = format!(
            "INSERT INTO link_slug_quarantine (slug, workspace_id, held_until) \
             SELECT value ->> 0, $1, $2 FROM {} WHERE true \
             ON CONFLICT (slug) DO UPDATE SET workspace_id = excluded.workspace_id, \
             held_until = excluded.held_until",
            tx.backend().json_rows("$3")
        );
        with_tx!(tx, conn => {
            sqlx::query(&sql)
                .bind(workspace.as_str())
                .bind(until.as_micros())
                .bind(list.as_str())
                .execute(conn)
                .await
                .map(drop)
        })
    }

    /// Which of `slugs` another workspace holds in quarantine now. Asked after the write that
    /// takes them, in its transaction (see the module docs).
    pub(crate) async fn held_by_others(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        slugs: &[&str],
    ) -> Result<HashSet<String>, sqlx::Error> {
        if self.quarantine().is_zero() || slugs.is_empty() {
            return Ok(HashSet::new());
        }
        let list = slug_list(slugs)?;
        let sql = format!(
            "SELECT slug FROM link_slug_quarantine WHERE workspace_id <> $1 AND held_until > $2 \
             AND slug IN (SELECT value ->> 0 FROM {})",
            tx.backend().json_rows("$3")
        );
        let held: Vec<String> = with_tx!(tx, conn => {
            sqlx::query_scalar(&sql)
                .bind(workspace.as_str())
                .bind(self.now().as_micros())
                .bind(list.as_str())
                .fetch_all(conn)
                .await
        })?;
        Ok(held.into_iter().collect())
    }

    /// Deletes the reservations whose time has passed (maintenance); returns how many.
    pub async fn prune_quarantine(&self) -> Result<u64, sqlx::Error> {
        let now = self.now().as_micros();
        with_writer!(self.db(), pool => {
            sqlx::query("DELETE FROM link_slug_quarantine WHERE held_until <= $1")
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pier_core::{Clock, WorkspaceId};
    use pier_testkit::{Backend, on_both_backends};

    use crate::LinkError;
    use crate::bulk::tests::{clocked_store, row};

    on_both_backends!(
        a_create_racing_the_delete_never_takes_the_slug,
        ended_quarantines_are_pruned,
    );

    async fn a_create_racing_the_delete_never_takes_the_slug(backend: Backend) {
        let (_db, store, ours, clock) = clocked_store(backend).await;
        let store = store.with_slug_quarantine(Duration::from_secs(60));
        let theirs = WorkspaceId::new(clock.now());
        for n in 0..20 {
            let slug = format!("race{n}");
            let link = store
                .create(&ours, "test", row(Some(&slug), &[]))
                .await
                .expect("created");
            // Before the delete the link holds the slug, after it the quarantine; while it
            // runs, the create waits for it and then finds the quarantine.
            let (deleted, taken) = tokio::join!(
                store.delete(&link),
                store.create(&theirs, "test", row(Some(&slug), &[])),
            );
            assert!(deleted.expect("delete"));
            assert!(
                matches!(taken, Err(LinkError::SlugTaken(_))),
                "{slug} went to another workspace: {taken:?}"
            );
        }
    }

    async fn ended_quarantines_are_pruned(backend: Backend) {
        let (_db, store, ours, clock) = clocked_store(backend).await;
        let store = store.with_slug_quarantine(Duration::from_secs(60));
        let theirs = WorkspaceId::new(clock.now());
        for slug in ["old", "new"] {
            let link = store
                .create(&ours, "test", row(Some(slug), &[]))
                .await
                .expect("created");
            assert!(store.delete(&link).await.expect("deleted"));
            clock.advance(Duration::from_secs(30));
        }
        // `old` was held 60 s ago, `new` 30 s ago.
        assert_eq!(store.prune_quarantine().await.expect("pruned"), 1);
        assert_eq!(store.prune_quarantine().await.expect("pruned"), 0);
        store
            .create(&theirs, "test", row(Some("old"), &[]))
            .await
            .expect("free again");
        let held = store.create(&theirs, "test", row(Some("new"), &[])).await;
        assert!(matches!(held, Err(LinkError::SlugTaken(_))), "{held:?}");
    }
}
