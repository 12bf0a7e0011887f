//! Group commit for single operations. Concurrent callers that each enqueue, complete, fail or
//! heartbeat one job (an HTTP request each, or in-process code) hand their operation to a
//! committer; it takes everything that queued up while the previous commit ran and commits it
//! as one transaction, then answers each caller with its own outcome (a unique key held, a stale
//! lease, …). A commit costs one disk sync however many operations it carries, so the rate of
//! single operations approaches that of batches, while each caller still waits only for its own
//! commit. If a gathered batch fails as a whole, each operation is retried alone, so one
//! failing operation never fails the others.

use std::sync::Arc;
use std::time::Duration;

use pier_core::WorkspaceId;
use pier_db::Backend;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::model::{Enqueued, JobState, NewJob};
use crate::store::{Completion, Failure, Heartbeat, Held, JobStore};

/// The most operations one commit carries.
const MAX_BATCH: usize = 500;
/// Operations waiting for a commit, per kind; callers beyond this wait to queue.
const QUEUED: usize = 10_000;

type Reply<R> = oneshot::Sender<Result<R, sqlx::Error>>;
/// Runs a gathering as one transaction; the items are shared, so that a failed gathering can be
/// retried item by item without copying every payload up front.
type Run<I, R> = Arc<
    dyn Fn(
            JobStore,
            Arc<Vec<I>>,
        ) -> futures_util::future::BoxFuture<'static, Result<Vec<R>, sqlx::Error>>
        + Send
        + Sync,
>;

/// One kind of operation with its committers.
struct Lane<I, R> {
    queue: mpsc::Sender<(I, Reply<R>)>,
}

impl<I, R> Clone for Lane<I, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<I: Clone + Send + Sync + 'static, R: Send + 'static> Lane<I, R> {
    /// Starts `committers` tasks that each take what queued up and run it as one batch; on
    /// PostgreSQL several commits can be in flight at once, on SQLite one writer serves them all.
    fn start(store: &JobStore, committers: usize, run: Run<I, R>) -> Self {
        let (queue, receiver) = mpsc::channel::<(I, Reply<R>)>(QUEUED);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..committers {
            let (store, receiver, run) = (store.clone(), receiver.clone(), run.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                loop {
                    if receiver.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
                        return; // Every sender is gone.
                    }
                    let (items, replies): (Vec<I>, Vec<Reply<R>>) = batch.drain(..).unzip();
                    commit(&store, &run, items, replies).await;
                }
            });
        }
        Self { queue }
    }

    async fn call(&self, item: I) -> Result<R, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((item, reply))
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn commit<I: Clone, R>(
    store: &JobStore,
    run: &Run<I, R>,
    items: Vec<I>,
    replies: Vec<Reply<R>>,
) {
    let items = Arc::new(items);
    match run(store.clone(), items.clone()).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(err) if items.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(err));
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, operations = items.len(), "a group commit failed; retrying each operation alone");
            for (item, reply) in items.iter().zip(replies) {
                let alone = Arc::new(vec![item.clone()]);
                let outcome = run(store.clone(), alone).await.and_then(|mut one| {
                    one.pop()
                        .ok_or_else(|| sqlx::Error::Protocol("no outcome".into()))
                });
                let _ = reply.send(outcome);
            }
        }
    }
}

/// The committers of one job store. Cheap to clone; its tasks end when the last clone is
/// dropped.
#[derive(Clone)]
pub struct GroupCommit {
    enqueue: Lane<(WorkspaceId, NewJob), Enqueued>,
    complete: Lane<Completion, bool>,
    fail: Lane<Failure, Option<JobState>>,
    heartbeat: Lane<(Held, Option<Duration>), Option<Heartbeat>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

impl GroupCommit {
    /// Starts the committers for `store`.
    pub fn start(store: &JobStore) -> Self {
        // SQLite has one writer; on PostgreSQL a second commit in flight overlaps the first's
        // disk sync (more committers only make each gathering smaller: measured).
        let committers = match store.db().backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => 2,
        };
        Self {
            enqueue: Lane::start(
                store,
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
                store,
                committers,
                Arc::new(|store, items| Box::pin(async move { store.complete_many(&items).await })),
            ),
            fail: Lane::start(
                store,
                committers,
                Arc::new(|store, items| Box::pin(async move { store.fail_many(&items).await })),
            ),
            heartbeat: Lane::start(
                store,
                committers,
                Arc::new(|store, items| {
                    Box::pin(async move { store.heartbeat_many(&items).await })
                }),
            ),
        }
    }

    /// Enqueues one job, committed together with whatever other enqueues are waiting.
    pub async fn enqueue(
        &self,
        workspace: WorkspaceId,
        job: NewJob,
    ) -> Result<Enqueued, sqlx::Error> {
        self.enqueue.call((workspace, job)).await
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
