//! Group commit ([`pier_db::group`]) of single job operations: concurrent callers that each
//! enqueue, complete, fail or heartbeat one job (an HTTP request each, or in-process code) share
//! commits, and each gets its own outcome (a unique key held, a stale lease, …).

use std::sync::Arc;
use std::time::Duration;

use pier_core::WorkspaceId;
use pier_db::group::{self, Lane};
use tracing::Instrument;

use crate::model::{Enqueued, JobState, NewJob};
use crate::store::{Completion, Failure, Heartbeat, Held, JobStore};

/// The committers of one job store. Cheap to clone; its tasks end when the last clone is
/// dropped.
#[derive(Clone)]
pub struct GroupCommit {
    enqueue: Lane<(WorkspaceId, NewJob), Enqueued, sqlx::Error>,
    complete: Lane<Completion, bool, sqlx::Error>,
    fail: Lane<Failure, Option<JobState>, sqlx::Error>,
    heartbeat: Lane<(Held, Option<Duration>), Option<Heartbeat>, sqlx::Error>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

impl GroupCommit {
    /// Starts the committers for `store`.
    pub fn start(store: &JobStore) -> Self {
        let committers = group::committers(store.db().backend());
        Self {
            enqueue: Lane::start(
                store.clone(),
                committers,
                Arc::new(|store, items| {
                    Box::pin(async move {
                        let jobs: Vec<(&WorkspaceId, &NewJob)> =
                            items.iter().map(|(w, j)| (w, j)).collect();
                        let mut tx = store.db().begin().await?;
                        let enqueued = store.enqueue_rows(&mut tx, &jobs).await?;
                        tx.commit().await?;
                        Ok(enqueued)
                    })
                }),
            ),
            complete: Lane::start(
                store.clone(),
                committers,
                Arc::new(|store, items| Box::pin(async move { store.complete_many(&items).await })),
            ),
            fail: Lane::start(
                store.clone(),
                committers,
                Arc::new(|store, items| Box::pin(async move { store.fail_many(&items).await })),
            ),
            heartbeat: Lane::start(
                store.clone(),
                committers,
                Arc::new(|store, items| {
                    Box::pin(async move { store.heartbeat_many(&items).await })
                }),
            ),
        }
    }

    /// Enqueues one job, committed together with whatever other enqueues are waiting. The job
    /// continues the caller's trace, though the committer stores it away from the caller's span.
    pub async fn enqueue(
        &self,
        workspace: WorkspaceId,
        mut job: NewJob,
    ) -> Result<Enqueued, sqlx::Error> {
        let span = crate::trace::publish(Some(job.queue.as_str()), 1);
        job.trace_parent = pier_core::trace::traceparent(&span);
        self.enqueue.call((workspace, job)).instrument(span).await
    }

    /// Completes one job; `false` when its lease is stale or it does not exist.
    pub async fn complete(&self, completion: Completion) -> Result<bool, sqlx::Error> {
        self.complete.call(completion).await
    }

    /// Records one failed attempt; `None` when the lease is stale or the job does not exist.
    pub async fn fail(&self, failure: Failure) -> Result<Option<JobState>, sqlx::Error> {
        self.fail.call(failure).await
    }

    /// Extends one lease; `None` when it is stale or the job does not exist.
    pub async fn heartbeat(
        &self,
        job: Held,
        lease: Option<Duration>,
    ) -> Result<Option<Heartbeat>, sqlx::Error> {
        self.heartbeat.call((job, lease)).await
    }
}
