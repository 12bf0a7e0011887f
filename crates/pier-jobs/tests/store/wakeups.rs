//! Wake-ups: only on commit, only for the workspace and queue concerned, across nodes on
//! PostgreSQL.

use std::time::Duration;

use pier_core::WorkspaceId;
use serde_json::json;

use crate::support::{Backend, Jobs, job, on_both_backends, queue_name};

on_both_backends!(transactional_enqueue_commits_or_vanishes);

/// Other capabilities enqueue inside their own transaction: no commit, no job (and no wake-up).
async fn transactional_enqueue_commits_or_vanishes(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let queue = queue_name("tx");
    let mut wake = jobs
        .store
        .notifier()
        .subscribe(Some(&jobs.workspace), &queue);
    wake.mark_seen();

    let mut tx = jobs.db.begin().await.expect("begin");
    jobs.store
        .enqueue_in(&mut tx, &jobs.workspace, &[job("outbox", "tx", json!({}))])
        .await
        .expect("enqueue in tx");
    tx.rollback().await.expect("rollback");
    assert!(!wake.has_changed(), "a rolled-back enqueue wakes nobody");
    assert!(jobs.claim("tx", 10).await.is_empty());

    let mut tx = jobs.db.begin().await.expect("begin");
    let enqueued = jobs
        .store
        .enqueue_in(&mut tx, &jobs.workspace, &[job("outbox", "tx", json!({}))])
        .await
        .expect("enqueue in tx");
    assert!(!wake.has_changed(), "nobody is woken before the commit");
    tx.commit().await.expect("commit");
    tokio::time::timeout(Duration::from_secs(5), wake.changed())
        .await
        .expect("woken on commit");
    let claimed = jobs.claim("tx", 10).await;
    assert_eq!(claimed[0].id, enqueued[0].job.id);
    jobs.assert_counters_match_rows().await;
}

/// On PostgreSQL an enqueue on one node wakes the waiters of that workspace's queue on another
/// through LISTEN/NOTIFY, and nobody else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn an_enqueue_wakes_other_nodes() {
    let jobs = Jobs::new(Backend::postgres()).await;
    let other_node = pier_jobs::Notifier::default();
    let relay = other_node
        .listen(pier_db::Relay::default())
        .spawn(&jobs.db)
        .expect("PostgreSQL relays wake-ups");
    let queue = queue_name("remote");
    let mut mine = other_node.subscribe(Some(&jobs.workspace), &queue);
    mine.mark_seen();
    let stranger = WorkspaceId::new(pier_core::Timestamp::from_micros(0));
    let mut theirs = other_node.subscribe(Some(&stranger), &queue);
    theirs.mark_seen();
    // The listener connects in the background; enqueue until its wake-up arrives (bounded).
    let woken = async {
        loop {
            jobs.enqueue(vec![job("k", "remote", json!({}))]).await;
            if tokio::time::timeout(Duration::from_millis(500), mine.changed())
                .await
                .is_ok()
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), woken)
        .await
        .expect("the other node was woken");
    assert!(!theirs.has_changed(), "another workspace's waiter slept on");
    relay.abort();
}
