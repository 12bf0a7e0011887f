//! The in-process worker runtime for Rust handlers.
//!
//! A [`WorkerPool`] serves one queue with up to `concurrency` jobs at a time. It claims as many
//! jobs as it has free slots in one statement, runs each handler on its own task with a
//! heartbeat that keeps the lease alive (and notices cancellation), and reports completions in
//! batches. It sleeps until an enqueue wakes it, polling as a fallback. On shutdown it stops
//! claiming, gives running jobs `grace` to finish, signals the rest to cancel and releases their
//! leases so another worker can take them at once.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pier_core::Timestamp;
use pier_core::WorkspaceId;
use pier_db::Tx;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::model::{ClaimedJob, JobId};
use crate::notify::until_true;
use crate::store::{ClaimLimits, ClaimTarget, Completion, Failure, Held, JobStore};

/// A job handler. `KIND` is the `kind` it handles; its payload arrives deserialized.
pub trait Worker: Send + Sync + 'static {
    const KIND: &'static str;
    type Payload: DeserializeOwned + Send;

    /// Does the work. Runs at least once per job, maybe more (see the crate docs): make it
    /// idempotent.
    fn run(
        &self,
        ctx: JobContext,
        payload: Self::Payload,
    ) -> impl Future<Output = Result<(), JobFailure>> + Send;
}

/// What a handler knows about the job it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub id: JobId,
    pub workspace_id: WorkspaceId,
    pub queue: String,
    /// 1 on the first run.
    pub attempt: u32,
    /// A workflow step's dependencies' results by step name (a compensation's: the result of
    /// the step it undoes); `None` outside workflows.
    pub inputs: Option<serde_json::Value>,
    cancel: watch::Receiver<bool>,
    store: JobStore,
    held: Held,
    /// What the handler reported: a result, and whether it completed the job itself.
    report: Arc<Mutex<Report>>,
}

#[derive(Debug, Default)]
struct Report {
    result: Option<serde_json::Value>,
    completed: bool,
}

impl JobContext {
    /// Keeps `result` on the job when it completes (at most 64 KiB as JSON); a workflow's
    /// later steps receive it among their `inputs`.
    pub fn set_result(&self, result: serde_json::Value) {
        self.report().result = Some(result);
    }

    /// Completes the job inside `tx`, the handler's own transaction: its writes and the
    /// completion (with the workflow steps it releases) commit together or not at all (as
    /// River's `JobCompleteTx`). Commit `tx`, then return `Ok`: the pool reports nothing more.
    /// If `tx` rolls back, the job stays running and runs again once its lease expires.
    pub async fn complete_in(
        &self,
        tx: &mut Tx,
        result: Option<&serde_json::Value>,
    ) -> Result<(), JobFailure> {
        let mut completion = Completion::new(self.held.clone());
        if let Some(result) = result {
            completion = completion.with_result(result).map_err(JobFailure::new)?;
        }
        self.store
            .complete_in(tx, completion)
            .await
            .map_err(|e| JobFailure::new(e.to_string()))?;
        self.report().completed = true;
        Ok(())
    }

    /// The store the job came from, e.g. to begin the transaction [`complete_in`] takes.
    ///
    /// [`complete_in`]: Self::complete_in
    pub fn store(&self) -> &JobStore {
        &self.store
    }

    fn report(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once the job was cancelled or the pool is shutting down past its grace period.
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Completes when the handler should stop.
    pub async fn cancelled(&self) {
        until_true(&mut self.cancel.clone()).await;
    }
}

/// Why an attempt failed, and optionally when to try again; or a snooze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub message: String,
    pub retry_at: Option<Timestamp>,
    /// Not a failure: the job could not run yet and goes back to wait until `retry_at`,
    /// without spending an attempt or recording an error (see [`JobFailure::snooze`]).
    pub snooze: bool,
    /// A permanent failure: no more attempts (see [`JobFailure::discard`]).
    pub discard: bool,
}

impl JobFailure {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_at: None,
            snooze: false,
            discard: false,
        }
    }

    /// Fails the job for good: it is discarded with `message` whatever attempts it has left
    /// (a payload that can never work, a refusal no retry will change), and its workflow, if
    /// it is a step of one, compensates.
    pub fn discard(message: impl Into<String>) -> Self {
        Self {
            discard: true,
            ..Self::new(message)
        }
    }

    /// Gives the job back to run again at `until`: no attempt is spent and no error recorded,
    /// so a job that waits often (for a rate limit, say) never runs out of attempts by waiting.
    pub fn snooze(until: Timestamp) -> Self {
        Self {
            retry_at: Some(until),
            snooze: true,
            ..Self::new("snoozed")
        }
    }

    #[must_use]
    pub fn retry_at(mut self, at: Timestamp) -> Self {
        self.retry_at = Some(at);
        self
    }
}

impl<E: std::error::Error> From<E> for JobFailure {
    fn from(err: E) -> Self {
        Self::new(err.to_string())
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), JobFailure>> + Send>>;

/// A [`Worker`] with its payload type erased, so one pool can dispatch on `kind`.
trait Handler: Send + Sync {
    fn call(&self, ctx: JobContext, payload: serde_json::Value) -> BoxFuture;
}

struct Typed<W>(Arc<W>);

impl<W: Worker> Handler for Typed<W> {
    fn call(&self, ctx: JobContext, payload: serde_json::Value) -> BoxFuture {
        let worker = self.0.clone();
        Box::pin(async move {
            let payload = serde_json::from_value::<W::Payload>(payload).map_err(|e| {
                JobFailure::new(format!("the payload does not fit {}: {e}", W::KIND))
            })?;
            worker.run(ctx, payload).await
        })
    }
}

/// Settings of a pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Jobs run at once by this pool.
    pub concurrency: usize,
    /// How often an idle pool looks for jobs without being woken.
    pub poll_interval: Duration,
    /// How long shutdown waits for running jobs before cancelling and releasing them.
    pub grace: Duration,
    /// The lease this pool's claims hold and its heartbeats renew; `None` uses each job's own
    /// (30 s unless set).
    pub lease: Option<Duration>,
    /// Stop adding jobs to one claim once their payloads reach this many bytes.
    pub claim_budget_bytes: u64,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            concurrency: 50,
            poll_interval: Duration::from_secs(1),
            grace: Duration::from_secs(10),
            lease: None,
            claim_budget_bytes: 4 * 1024 * 1024,
        }
    }
}

/// Serves one queue with registered handlers.
pub struct WorkerPool {
    store: JobStore,
    target: ClaimTarget,
    options: PoolOptions,
    handlers: HashMap<&'static str, Arc<dyn Handler>>,
    worker_id: String,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("target", &self.target)
            .field("options", &self.options)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// How an attempt ended, for the reporter.
enum Outcome {
    Completed(Completion),
    /// Completed by the handler in its own transaction: nothing to report.
    CompletedInTx,
    Failed(Held, JobFailure),
    /// Stopped by shutdown (at once), or snoozed (until then): given back without counting
    /// the attempt.
    GivenBack(Held, Option<Timestamp>),
}

/// The text of a panic's payload, for the job's error history.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text payload".to_owned());
    format!("the handler panicked: {text}")
}

impl WorkerPool {
    pub fn new(store: JobStore, target: ClaimTarget, options: PoolOptions) -> Self {
        let worker_id = format!("{}-{}", hostname(), std::process::id());
        Self {
            store,
            target,
            options,
            handlers: HashMap::new(),
            worker_id,
        }
    }

    #[must_use]
    pub fn register<W: Worker>(mut self, worker: W) -> Self {
        self.handlers
            .insert(W::KIND, Arc::new(Typed(Arc::new(worker))));
        self
    }

    /// Runs until `stop` turns true, then shuts down as described in the module docs.
    pub fn spawn(self, stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.run(stop))
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.options.concurrency));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let reporter = tokio::spawn(report(self.store.clone(), done_rx));
        let (cancel_all_tx, cancel_all) = watch::channel(false);
        let mut running = JoinSet::new();
        let mut wake = self
            .store
            .notifier()
            .subscribe(self.target.workspace_id(), self.target.queue());

        loop {
            // Wait for at least one free slot (or the stop signal), then take every free slot.
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit,
                () = until_true(&mut stop) => break,
            };
            let Ok(first) = first else { break };
            if *stop.borrow() {
                break;
            }
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            wake.mark_seen();
            let limits = ClaimLimits {
                max: u32::try_from(permits.len()).unwrap_or(u32::MAX),
                budget_bytes: self.options.claim_budget_bytes,
            };
            let jobs = match self
                .store
                .claim(
                    &self.target,
                    limits,
                    self.options.lease,
                    Some(&self.worker_id),
                )
                .await
            {
                Ok(jobs) => jobs,
                Err(err) => {
                    tracing::warn!(error = %err, queue = %self.target.queue(), "claim failed; retrying");
                    drop(permits);
                    tokio::select! {
                        () = tokio::time::sleep(self.options.poll_interval) => {}
                        () = until_true(&mut stop) => {}
                    }
                    continue;
                }
            };
            let idle = jobs.is_empty();
            for job in jobs {
                let Some(permit) = permits.pop() else { break };
                let slot = Slot {
                    permit,
                    done: done_tx.clone(),
                };
                running.spawn(self.execute(job, slot, cancel_all.clone()));
            }
            drop(permits);
            while running.try_join_next().is_some() {}
            if idle {
                tokio::select! {
                    () = wake.changed() => {}
                    () = tokio::time::sleep(self.options.poll_interval) => {}
                    () = until_true(&mut stop) => {}
                }
            }
        }

        // Shutdown: no more claims; give running jobs their grace period, then cancel them.
        if tokio::time::timeout(self.options.grace, async {
            while running.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            let _ = cancel_all_tx.send(true);
            while running.join_next().await.is_some() {}
        }
        drop(done_tx);
        let _ = reporter.await;
    }

    /// Runs one job with a heartbeat beside it; sends the outcome to the reporter. The handler
    /// runs on a task of its own, so a panic in it is caught and recorded as a failed attempt.
    fn execute(
        &self,
        job: ClaimedJob,
        done: Slot,
        mut shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let store = self.store.clone();
        let handler = self.handlers.get(job.kind.as_str()).cloned();
        let lease = self.options.lease;
        let lease_left = job.lease_expires_at.duration_since(store.now());
        let span = crate::trace::process(&job);
        let handler_span = span.clone();
        async move {
            let held = Held {
                workspace: job.workspace_id.clone(),
                id: job.id.clone(),
                token: job.lease_token.clone(),
            };
            let Some(handler) = handler else {
                let failure =
                    JobFailure::new(format!("no handler for kind `{}` on this queue", job.kind));
                done.report(Outcome::Failed(held, failure));
                return;
            };
            let (cancel_tx, cancel_rx) = watch::channel(false);
            let report = Arc::new(Mutex::new(Report::default()));
            let ctx = JobContext {
                id: job.id.clone(),
                workspace_id: job.workspace_id.clone(),
                queue: job.queue.clone(),
                attempt: job.attempt,
                inputs: job.inputs.clone(),
                cancel: cancel_rx,
                store: store.clone(),
                held: held.clone(),
                report: report.clone(),
            };
            let mut work = tokio::spawn(handler.call(ctx, job.payload).instrument(handler_span));
            // Renew well before the lease runs out: each beat extends it by the pool's lease
            // (or the job's own), so beating every third of it survives two lost beats.
            let beat_every = (lease.unwrap_or(lease_left) / 3).max(Duration::from_millis(100));
            let mut shutting_down = false;
            let result = loop {
                tokio::select! {
                    result = &mut work => break result,
                    () = tokio::time::sleep(beat_every) => {
                        match store.heartbeat(&held, lease).await {
                            Ok(Some(beat)) if beat.cancel_requested => { let _ = cancel_tx.send(true); }
                            Ok(Some(_)) => {}
                            // Rescued meanwhile: our token is stale, so whatever we report is ignored.
                            Ok(None) => { let _ = cancel_tx.send(true); }
                            Err(err) => tracing::warn!(error = %err, job_id = %held.id, "heartbeat failed"),
                        }
                    }
                    () = until_true(&mut shutdown), if !shutting_down => {
                        shutting_down = true;
                        let _ = cancel_tx.send(true);
                    }
                }
            };
            let reported = std::mem::take(&mut *report.lock().unwrap_or_else(PoisonError::into_inner));
            let outcome = match result {
                Ok(Ok(())) if reported.completed => Outcome::CompletedInTx,
                Ok(Ok(())) => completed(held, reported.result),
                Ok(Err(failure)) if failure.snooze => Outcome::GivenBack(held, failure.retry_at),
                // A failure the shutdown caused runs again at once; one that names its own
                // time (a delivery that timed out, with its schedule or `Retry-After`) keeps it.
                Ok(Err(failure)) if shutting_down && failure.retry_at.is_none() => {
                    Outcome::GivenBack(held, None)
                }
                Ok(Err(failure)) => Outcome::Failed(held, failure),
                Err(join) => {
                    let message = match join.try_into_panic() {
                        Ok(payload) => panic_message(payload.as_ref()),
                        Err(_) => "the handler was aborted".to_owned(),
                    };
                    tracing::error!(job_id = %held.id, kind = %job.kind, error = %message, "job handler panicked");
                    Outcome::Failed(held, JobFailure::new(message))
                }
            };
            done.report(outcome);
        }
        .instrument(span)
    }
}

/// The completion of a job whose handler succeeded, with its result if it set one within
/// bounds (else the attempt fails, saying why).
fn completed(held: Held, result: Option<serde_json::Value>) -> Outcome {
    let completion = Completion::new(held.clone());
    match result.map(|r| completion.clone().with_result(&r)) {
        None => Outcome::Completed(completion),
        Some(Ok(with_result)) => Outcome::Completed(with_result),
        Some(Err(why)) => Outcome::Failed(held, JobFailure::new(format!("the result {why}"))),
    }
}

/// A job's place in the pool: held from its claim until its outcome is recorded, so the pool
/// never has more jobs claimed than it has slots, however far behind the recording falls.
struct Slot {
    permit: OwnedSemaphorePermit,
    done: mpsc::UnboundedSender<(Outcome, OwnedSemaphorePermit)>,
}

impl Slot {
    fn report(self, outcome: Outcome) {
        let _ = self.done.send((outcome, self.permit));
    }
}

/// Reports outcomes: the completions and the failures gathered meanwhile go in one statement
/// (or transaction) each; their slots free up once they are recorded.
async fn report(store: JobStore, mut rx: mpsc::UnboundedReceiver<(Outcome, OwnedSemaphorePermit)>) {
    let mut buffer = Vec::new();
    while rx.recv_many(&mut buffer, 1000).await > 0 {
        let mut completed = Vec::new();
        let mut failed = Vec::new();
        let mut given_back = Vec::new();
        let mut slots = Vec::with_capacity(buffer.len());
        let now = store.now();
        for (outcome, slot) in buffer.drain(..) {
            slots.push(slot);
            match outcome {
                Outcome::Completed(completion) => completed.push(completion),
                Outcome::CompletedInTx => {}
                Outcome::Failed(job, failure) => failed.push(Failure {
                    job,
                    error: failure.message,
                    retry_at: failure.retry_at,
                    discard: failure.discard,
                }),
                Outcome::GivenBack(held, at) => given_back.push((held, at.unwrap_or(now))),
            }
        }
        if let Err(err) = store.complete_many(&completed).await {
            tracing::warn!(error = %err, jobs = completed.len(), "could not record completions");
        }
        if let Err(err) = store.fail_many(&failed).await {
            tracing::warn!(error = %err, jobs = failed.len(), "could not record failures");
        }
        if let Err(err) = store.give_back(&given_back).await {
            tracing::warn!(error = %err, jobs = given_back.len(), "could not give jobs back");
        }
        drop(slots);
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pier".to_owned())
}
