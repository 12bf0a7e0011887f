//! Stored policies on both backends: create versus replace under concurrency, compare-and-set,
//! the per-workspace cap, and the cache checks read them from.

use std::sync::Arc;

use pier_core::{ManualClock, WorkspaceId};
use pier_ratelimit::{PolicySpec, PolicyStore, StoreError};
use pier_testkit::{Backend, TestDb, on_both_backends};

on_both_backends!(
    concurrent_creates_of_one_name_create_it_once,
    a_stale_read_cannot_replace_a_newer_policy,
    a_workspace_holds_at_most_its_cap,
    checks_read_cached_policies_that_writes_forget,
);

async fn store(backend: &Backend) -> (TestDb, PolicyStore, ManualClock) {
    let db = TestDb::new(backend, &[pier_db::MIGRATIONS, pier_ratelimit::MIGRATIONS]).await;
    let clock = ManualClock::starting_now();
    let store = PolicyStore::new(db.db.clone(), Arc::new(clock.clone()));
    (db, store, clock)
}

fn spec(text: &str) -> PolicySpec {
    text.parse().expect("spec")
}

async fn concurrent_creates_of_one_name_create_it_once(backend: Backend) {
    let (_db, store, _clock) = store(&backend).await;
    let ws = WorkspaceId::new(pier_core::Timestamp::from_micros(1));
    let puts = (0..8).map(|i| {
        let (store, ws) = (store.clone(), ws.clone());
        tokio::spawn(async move {
            store
                .put(&ws, "shared", spec(&format!("gcra {}/60s", i + 1)), None)
                .await
        })
    });
    let mut created = 0;
    for put in futures_util::future::join_all(puts).await {
        let (_, was_created) = put.expect("task").expect("put");
        created += usize::from(was_created);
    }
    assert_eq!(created, 1);
}

async fn a_stale_read_cannot_replace_a_newer_policy(backend: Backend) {
    let (_db, store, clock) = store(&backend).await;
    let ws = WorkspaceId::new(pier_core::Timestamp::from_micros(1));
    let (first, created) = store
        .put(&ws, "p", spec("gcra 1/1s"), None)
        .await
        .expect("put");
    assert!(created);
    clock.advance(std::time::Duration::from_millis(1));
    let (second, created) = store
        .put(&ws, "p", spec("gcra 2/1s"), Some(&first))
        .await
        .expect("replace what was read");
    assert!(!created);
    let stale = store.put(&ws, "p", spec("gcra 3/1s"), Some(&first)).await;
    assert!(matches!(stale, Err(StoreError::Changed)), "{stale:?}");
    assert!(!store.delete(&ws, "p", Some(&first)).await.expect("delete"));
    assert!(store.delete(&ws, "p", Some(&second)).await.expect("delete"));
}

async fn a_workspace_holds_at_most_its_cap(backend: Backend) {
    let (_db, store, _clock) = store(&backend).await;
    let ws = WorkspaceId::new(pier_core::Timestamp::from_micros(1));
    let max = usize::try_from(PolicyStore::MAX_PER_WORKSPACE).expect("small");
    for i in 0..max {
        store
            .put(&ws, &format!("p{i}"), spec("gcra 1/1s"), None)
            .await
            .expect("put");
    }
    let full = store.put(&ws, "one-more", spec("gcra 1/1s"), None).await;
    assert!(matches!(full, Err(StoreError::TooMany { .. })), "{full:?}");
    // Replacing one is still allowed, and another workspace has room of its own.
    store
        .put(&ws, "p0", spec("gcra 5/1s"), None)
        .await
        .expect("replace");
    let other = WorkspaceId::new(pier_core::Timestamp::from_micros(2));
    store
        .put(&other, "one-more", spec("gcra 1/1s"), None)
        .await
        .expect("other workspace");
}

/// Changes the stored limit of `name` behind the store's back, as a write it is not told of.
async fn change_unannounced(db: &TestDb, name: &str, limit: i64) {
    pier_db::with_writer!(&db.db, pool => {
        sqlx::query("UPDATE rate_limit_policies SET quota = $1 WHERE name = $2")
            .bind(limit)
            .bind(name)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
    .expect("changed");
}

/// A policy once looked up is served from the cache (a change the store is not told of stays
/// unseen, so no database was read), "no such policy" included; every write through the store
/// is seen at once.
async fn checks_read_cached_policies_that_writes_forget(backend: Backend) {
    let (db, store, _clock) = store(&backend).await;
    let ws = WorkspaceId::new(pier_core::Timestamp::from_micros(1));
    let limit = |policy: Option<pier_ratelimit::Policy>| policy.map(|p| p.spec().limit());
    assert_eq!(limit(store.policy(&ws, "p").await.expect("read")), None);
    store
        .put(&ws, "p", spec("gcra 1/1s"), None)
        .await
        .expect("put");
    assert_eq!(limit(store.policy(&ws, "p").await.expect("read")), Some(1));
    change_unannounced(&db, "p", 7).await;
    assert_eq!(
        limit(store.policy(&ws, "p").await.expect("cached")),
        Some(1)
    );
    store
        .put(&ws, "p", spec("gcra 2/1s"), None)
        .await
        .expect("replace");
    assert_eq!(limit(store.policy(&ws, "p").await.expect("read")), Some(2));
    assert!(store.delete(&ws, "p", None).await.expect("delete"));
    assert_eq!(limit(store.policy(&ws, "p").await.expect("read")), None);
}
