//! Group commit for single operations. Concurrent callers that each have one small write (a job
//! to enqueue or complete, a webhook attempt to record) hand it to a committer; it takes
//! everything that queued up while the previous commit ran and commits it as one transaction,
//! then answers each caller with its own outcome. A commit costs one disk sync and one round of
//! `BEGIN`/`COMMIT` however many operations it carries, so the rate of single operations
//! approaches that of batches, while each caller still waits only for its own commit. If a
//! gathered batch fails as a whole, each operation is retried alone, so one failing operation
//! never fails the others.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::Backend;

/// The most operations one commit carries.
const MAX_BATCH: usize = 500;
/// Operations waiting for a commit per lane; callers beyond this wait to queue.
const QUEUED: usize = 10_000;

type Reply<R, E> = oneshot::Sender<Result<R, E>>;

/// Runs a gathering as one transaction and gives one outcome per item, in order. The items are
/// shared, so that a failed gathering can be retried item by item without copying each up front.
pub type Run<C, I, R, E> = Arc<
    dyn Fn(C, Arc<Vec<I>>) -> Pin<Box<dyn Future<Output = Result<Vec<R>, E>> + Send>> + Send + Sync,
>;

/// How many committers a lane should run: SQLite has one writer; on PostgreSQL a second commit
/// in flight overlaps the first's disk sync (more only make each gathering smaller: measured on
/// the job engine's lanes).
pub fn committers(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 2,
    }
}

/// One kind of operation with its committers. Cheap to clone; the committers end when the last
/// clone is dropped.
pub struct Lane<I, R, E> {
    queue: mpsc::Sender<(I, Reply<R, E>)>,
}

impl<I, R, E> Clone for Lane<I, R, E> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<I, R, E> std::fmt::Debug for Lane<I, R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lane")
    }
}

impl<I, R, E> Lane<I, R, E>
where
    I: Clone + Send + Sync + 'static,
    R: Send + 'static,
    E: From<sqlx::Error> + Display + Send + 'static,
{
    /// Starts `committers` tasks that each take what queued up and hand it to `run` with a clone
    /// of `context`.
    pub fn start<C: Clone + Send + Sync + 'static>(
        context: C,
        committers: usize,
        run: Run<C, I, R, E>,
    ) -> Self {
        let (queue, receiver) = mpsc::channel::<(I, Reply<R, E>)>(QUEUED);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..committers {
            let (context, receiver, run) = (context.clone(), receiver.clone(), run.clone());
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                loop {
                    if receiver.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
                        return; // Every sender is gone.
                    }
                    let (items, replies): (Vec<I>, Vec<Reply<R, E>>) = batch.drain(..).unzip();
                    commit(&context, &run, items, replies).await;
                }
            });
        }
        Self { queue }
    }

    /// Hands `item` to a committer and waits for its own outcome.
    pub async fn call(&self, item: I) -> Result<R, E> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((item, reply))
            .await
            .map_err(|_| E::from(sqlx::Error::PoolClosed))?;
        answer.await.map_err(|_| E::from(sqlx::Error::PoolClosed))?
    }
}

async fn commit<C: Clone, I: Clone, R, E: From<sqlx::Error> + Display>(
    context: &C,
    run: &Run<C, I, R, E>,
    items: Vec<I>,
    replies: Vec<Reply<R, E>>,
) {
    let items = Arc::new(items);
    match run(context.clone(), items.clone()).await {
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
                let outcome = run(context.clone(), alone).await.and_then(|mut one| {
                    one.pop()
                        .ok_or_else(|| E::from(sqlx::Error::Protocol("no outcome".into())))
                });
                let _ = reply.send(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Doubles each item; a gathering that holds a negative item fails as a whole.
    fn doubling() -> Run<(), i64, i64, sqlx::Error> {
        Arc::new(|(), items| {
            Box::pin(async move {
                if items.iter().any(|i| *i < 0) {
                    return Err(sqlx::Error::Protocol("a negative item".into()));
                }
                Ok(items.iter().map(|i| i * 2).collect())
            })
        })
    }

    #[tokio::test]
    async fn each_caller_gets_its_own_outcome_even_when_a_gathering_fails() {
        let lane = Lane::start((), 1, doubling());
        let calls: Vec<_> = (-2..40)
            .map(|i| {
                let lane = lane.clone();
                tokio::spawn(async move { (i, lane.call(i).await) })
            })
            .collect();
        for call in calls {
            let (i, outcome) = call.await.expect("the caller task panicked");
            match outcome {
                Ok(doubled) => assert_eq!(doubled, i * 2),
                Err(err) => {
                    assert!(i < 0, "{i} failed: {err}");
                    assert!(err.to_string().contains("negative"), "{err}");
                }
            }
        }
    }
}
