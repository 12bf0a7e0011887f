//! A job store over a fresh database with a manual clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pier_core::{ManualClock, WorkspaceId};
use pier_db::{Db, with_reader};
use pier_jobs::{
    ClaimLimits, ClaimTarget, ClaimedJob, Enqueued, JobSpec, JobStore, NewJob, Notifier, QueueName,
};
use pier_testkit::TestDb;
pub use pier_testkit::{Backend, on_both_backends};

pub struct Jobs {
    pub store: JobStore,
    pub clock: ManualClock,
    pub db: Db,
    pub workspace: WorkspaceId,
    _db: TestDb,
}

impl Jobs {
    pub async fn new(backend: Backend) -> Self {
        let test_db = TestDb::new(&backend, &[pier_db::MIGRATIONS, pier_jobs::MIGRATIONS]).await;
        let clock = ManualClock::starting_now();
        let db = test_db.db.clone();
        let store = JobStore::new(db.clone(), Arc::new(clock.clone()), Notifier::default());
        Self {
            workspace: WorkspaceId::new(pier_core::Clock::now(&clock)),
            store,
            clock,
            db,
            _db: test_db,
        }
    }

    pub async fn enqueue(&self, jobs: Vec<NewJob>) -> Vec<Enqueued> {
        self.store
            .enqueue(&self.workspace, jobs)
            .await
            .expect("enqueue")
    }

    pub fn target(&self, queue: &str) -> ClaimTarget {
        ClaimTarget::workspace(self.workspace.clone(), queue_name(queue))
    }

    pub async fn claim(&self, queue: &str, max: u32) -> Vec<ClaimedJob> {
        self.store
            .claim(&self.target(queue), limits(max), None, None)
            .await
            .expect("claim")
    }

    /// Asserts the per-state counters equal the rows, for every workspace and queue.
    pub async fn assert_counters_match_rows(&self) {
        assert_counters_match_rows(&self.db).await;
    }
}

pub fn limits(max: u32) -> ClaimLimits {
    ClaimLimits {
        max,
        budget_bytes: u64::MAX,
    }
}

pub fn queue_name(queue: &str) -> QueueName {
    QueueName::parse(queue).expect("queue name")
}

/// A job of `kind` on `queue` with `payload`.
pub fn job(kind: &str, queue: &str, payload: serde_json::Value) -> NewJob {
    JobSpec::new(kind)
        .queue(queue)
        .payload(payload)
        .build()
        .expect("valid job")
}

type CountKey = (String, String, String);

/// Counters never go negative and always equal `SELECT state, count(*)`.
pub async fn assert_counters_match_rows(db: &Db) {
    let counted: Vec<(String, String, String, i64)> = with_reader!(db, pool => {
        sqlx::query_as(
            "SELECT workspace_id, queue, state, CAST(SUM(n) AS BIGINT) FROM job_counts \
             GROUP BY workspace_id, queue, state",
        )
        .fetch_all(pool)
        .await
    })
    .expect("counters");
    let rows: Vec<(String, String, String, i64)> = with_reader!(db, pool => {
        sqlx::query_as(
            "SELECT workspace_id, queue, state, COUNT(*) FROM jobs \
             GROUP BY workspace_id, queue, state",
        )
        .fetch_all(pool)
        .await
    })
    .expect("rows");
    let mut expected: BTreeMap<CountKey, i64> = BTreeMap::new();
    for (ws, queue, state, n) in rows {
        expected.insert((ws, queue, state), n);
    }
    for (ws, queue, state, n) in counted {
        assert!(n >= 0, "counter {ws}/{queue}/{state} is negative: {n}");
        let rows = expected.remove(&(ws.clone(), queue.clone(), state.clone()));
        assert_eq!(rows.unwrap_or(0), n, "counter {ws}/{queue}/{state}");
    }
    assert!(expected.is_empty(), "rows without counters: {expected:?}");
}

/// Polls `check` until it holds (bounded), so tests wait for background work without sleeping
/// a fixed time.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}
