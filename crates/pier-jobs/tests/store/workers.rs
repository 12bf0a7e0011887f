//! The in-process runtime: Rust handlers, retries, cancellation signals, concurrency limits that
//! hold across competing pools, leases kept alive at the pool's length, panics recorded as
//! failures, and shutdown that claims nothing new and releases what it could not finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pier_core::{Clock, Patch, Timestamp};
use pier_jobs::{
    JobContext, JobFailure, JobState, NewJob, PoolOptions, QueuePatch, Worker, WorkerPool,
};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::support::{Backend, Jobs, eventually, job, on_both_backends, queue_name};

on_both_backends!(
    handlers_run_every_job_once,
    failed_attempts_are_retried,
    a_discarding_handler_ends_its_job_at_once,
    cancelling_a_running_job_signals_its_handler,
    concurrency_limit_holds_across_competing_pools,
    shutdown_releases_unfinished_jobs,
    a_failure_that_names_its_time_keeps_it_at_shutdown,
    a_snoozed_job_waits_without_spending_an_attempt,
    shutdown_claims_nothing_while_waiting_for_a_slot,
    heartbeats_renew_the_pools_lease,
    a_panicking_handler_fails_the_attempt,
);

#[derive(Deserialize)]
struct Item {
    n: u32,
}

/// Records what it ran; optionally holds each job for a while, tracking how many ran at once.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<HashMap<u32, u32>>>,
    running: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
    hold: Duration,
    fail_first_attempt: bool,
    wait_for_cancel: bool,
    /// Once cancelled, fail with this retry time rather than none.
    retry_at: Option<Timestamp>,
    /// Snooze every job until then.
    snooze: Option<Timestamp>,
    panic: bool,
    /// Fail every job for good.
    discard: bool,
}

impl Worker for Recorder {
    const KIND: &'static str = "record";
    type Payload = Item;

    async fn run(&self, ctx: JobContext, item: Item) -> Result<(), JobFailure> {
        assert!(!self.panic, "the handler broke on item {}", item.n);
        if self.discard {
            return Err(JobFailure::discard(format!(
                "item {} can never work",
                item.n
            )));
        }
        if let Some(until) = self.snooze {
            return Err(JobFailure::snooze(until));
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        if self.wait_for_cancel {
            ctx.cancelled().await;
        } else {
            tokio::time::sleep(self.hold).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        if self.wait_for_cancel {
            let failure = JobFailure::new("stopped");
            return Err(match self.retry_at {
                Some(at) => failure.retry_at(at),
                None => failure,
            });
        }
        if self.fail_first_attempt && ctx.attempt == 1 {
            return Err(JobFailure::new("first attempts always fail"));
        }
        *self.seen.lock().expect("lock").entry(item.n).or_default() += 1;
        Ok(())
    }
}

fn item(n: u32, queue: &str) -> NewJob {
    job("record", queue, json!({ "n": n }))
}

fn pool(jobs: &Jobs, queue: &str, options: PoolOptions, worker: Recorder) -> WorkerPool {
    WorkerPool::new(jobs.store.clone(), jobs.target(queue), options).register(worker)
}

fn options(concurrency: usize) -> PoolOptions {
    PoolOptions {
        concurrency,
        poll_interval: Duration::from_millis(50),
        grace: Duration::from_millis(200),
        ..PoolOptions::default()
    }
}

/// Waits (bounded) until `queue` has `n` jobs in `state`.
async fn wait_for_count(jobs: &Jobs, queue: &str, state: &str, n: u64) {
    eventually(&format!("{queue} has {n} {state} jobs"), || async {
        let info = jobs
            .store
            .queue(&jobs.workspace, &queue_name(queue))
            .await
            .expect("queue");
        info.is_some_and(|q| q.counts.get(state) == Some(&n))
    })
    .await;
}

async fn handlers_run_every_job_once(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let recorder = Recorder::default();
    let (stop, stopped) = watch::channel(false);
    let running = pool(&jobs, "work", options(8), recorder.clone()).spawn(stopped);
    jobs.enqueue((0..60).map(|n| item(n, "work")).collect())
        .await;
    wait_for_count(&jobs, "work", "completed", 60).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
    let seen = recorder.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 60);
    assert!(seen.values().all(|&count| count == 1));
    jobs.assert_counters_match_rows().await;
}

async fn failed_attempts_are_retried(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let recorder = Recorder {
        fail_first_attempt: true,
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    let running = pool(&jobs, "flaky", options(4), recorder.clone()).spawn(stopped);
    jobs.enqueue((0..5).map(|n| item(n, "flaky")).collect())
        .await;
    wait_for_count(&jobs, "flaky", "retryable", 5).await;
    jobs.clock.advance(Duration::from_secs(2));
    wait_for_count(&jobs, "flaky", "completed", 5).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
    assert_eq!(recorder.seen.lock().expect("lock").len(), 5);
}

/// A `Discard` failure spends no further attempt: the job is discarded on its first, with its
/// error kept.
async fn a_discarding_handler_ends_its_job_at_once(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let recorder = Recorder {
        discard: true,
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    let running = pool(&jobs, "doomed", options(2), recorder).spawn(stopped);
    let enqueued = jobs.enqueue(vec![item(7, "doomed")]).await;
    wait_for_count(&jobs, "doomed", "discarded", 1).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
    let job = jobs
        .store
        .get(&jobs.workspace, &enqueued[0].job.id)
        .await
        .expect("read")
        .expect("job");
    assert_eq!(
        (job.state, job.attempt, job.max_attempts),
        (JobState::Discarded, 1, 20)
    );
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].error, "item 7 can never work");
    jobs.assert_counters_match_rows().await;
}

async fn cancelling_a_running_job_signals_its_handler(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let recorder = Recorder {
        wait_for_cancel: true,
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    // A short lease set on the pool (not on the job) makes the pool heartbeat often.
    let short_lease = PoolOptions {
        lease: Some(Duration::from_secs(1)),
        ..options(1)
    };
    let running = pool(&jobs, "long", short_lease, recorder).spawn(stopped);
    let enqueued = jobs.enqueue(vec![item(1, "long")]).await;
    wait_for_count(&jobs, "long", "running", 1).await;
    jobs.store
        .cancel(&jobs.workspace, &enqueued[0].job.id)
        .await
        .expect("cancel");
    wait_for_count(&jobs, "long", "cancelled", 1).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
}

async fn concurrency_limit_holds_across_competing_pools(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let patch = QueuePatch::new(None, Patch::Set(2)).expect("a limit in bounds");
    jobs.store
        .update_queue(&jobs.workspace, &queue_name("limited"), patch)
        .await
        .expect("limit");
    let recorder = Recorder {
        hold: Duration::from_millis(30),
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    let first = pool(&jobs, "limited", options(4), recorder.clone()).spawn(stopped.clone());
    let second = pool(&jobs, "limited", options(4), recorder.clone()).spawn(stopped);
    jobs.enqueue((0..24).map(|n| item(n, "limited")).collect())
        .await;
    wait_for_count(&jobs, "limited", "completed", 24).await;
    stop.send(true).expect("stop");
    first.await.expect("pool stops");
    second.await.expect("pool stops");
    let most = recorder.most_at_once.load(Ordering::SeqCst);
    assert!(
        most <= 2,
        "at most 2 ran at once across both pools, saw {most}"
    );
    assert_eq!(most, 2, "the limit, not the pools, was the bottleneck");
}

async fn shutdown_releases_unfinished_jobs(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let recorder = Recorder {
        wait_for_cancel: true,
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    let running = pool(&jobs, "stuck", options(2), recorder).spawn(stopped);
    let enqueued = jobs.enqueue(vec![item(1, "stuck")]).await;
    wait_for_count(&jobs, "stuck", "running", 1).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
    let job = jobs
        .store
        .get(&jobs.workspace, &enqueued[0].job.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(
        job.state,
        JobState::Available,
        "released for another worker"
    );
    assert_eq!(job.attempt, 0, "an interrupted attempt is not counted");
    jobs.assert_counters_match_rows().await;
}

/// Runs one job through a pool of `worker` until the job is in `state`, then stops the pool;
/// returns the job as stored.
async fn one_job_until_stopped(
    jobs: &Jobs,
    queue: &str,
    worker: Recorder,
    state: &str,
) -> pier_jobs::Job {
    let (stop, stopped) = watch::channel(false);
    let running = pool(jobs, queue, options(2), worker).spawn(stopped);
    let enqueued = jobs.enqueue(vec![item(1, queue)]).await;
    wait_for_count(jobs, queue, state, 1).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
    jobs.store
        .get(&jobs.workspace, &enqueued[0].job.id)
        .await
        .expect("get")
        .expect("job")
}

/// A handler interrupted by shutdown whose failure names its own retry time (a webhook delivery
/// that timed out, with its schedule or `Retry-After`) keeps that time: it is not released for
/// an immediate re-run.
async fn a_failure_that_names_its_time_keeps_it_at_shutdown(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let later = jobs.clock.now().saturating_add(Duration::from_secs(300));
    let recorder = Recorder {
        wait_for_cancel: true,
        retry_at: Some(later),
        ..Recorder::default()
    };
    let job = one_job_until_stopped(&jobs, "timing", recorder, "running").await;
    assert_eq!(job.state, JobState::Retryable);
    assert_eq!(job.run_at, later, "the retry keeps its time");
    jobs.assert_counters_match_rows().await;
}

/// A snooze gives the job back until its time: no attempt spent, no error recorded, however
/// often it happens.
async fn a_snoozed_job_waits_without_spending_an_attempt(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let later = jobs.clock.now().saturating_add(Duration::from_secs(60));
    let recorder = Recorder {
        snooze: Some(later),
        ..Recorder::default()
    };
    let job = one_job_until_stopped(&jobs, "snoozy", recorder, "scheduled").await;
    assert_eq!(job.state, JobState::Scheduled);
    assert_eq!(job.run_at, later);
    assert_eq!(job.attempt, 0, "a snooze spends no attempt");
    assert!(job.errors.is_empty(), "a snooze records no error");
    jobs.assert_counters_match_rows().await;
}

/// A pool whose every slot is busy waits for one; a stop signal during that wait ends the pool
/// without claiming another batch.
async fn shutdown_claims_nothing_while_waiting_for_a_slot(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let recorder = Recorder {
        hold: Duration::from_millis(400),
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    let running = pool(
        &jobs,
        "busy",
        PoolOptions {
            grace: Duration::from_secs(5),
            ..options(1)
        },
        recorder.clone(),
    )
    .spawn(stopped);
    jobs.enqueue((0..4).map(|n| item(n, "busy")).collect())
        .await;
    wait_for_count(&jobs, "busy", "running", 1).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
    wait_for_count(&jobs, "busy", "completed", 1).await;
    wait_for_count(&jobs, "busy", "available", 3).await;
    assert_eq!(recorder.seen.lock().expect("lock").len(), 1, "one job ran");
}

/// A pool's lease is what each heartbeat renews, not the job's own (shorter) one.
async fn heartbeats_renew_the_pools_lease(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let recorder = Recorder {
        wait_for_cancel: true,
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    let pool_lease = PoolOptions {
        lease: Some(Duration::from_secs(3)),
        ..options(1)
    };
    let running = pool(&jobs, "beat", pool_lease, recorder).spawn(stopped);
    let spec = pier_jobs::JobSpec {
        lease_seconds: Some(1),
        ..pier_jobs::JobSpec::new("record")
            .queue("beat")
            .payload(json!({"n": 1}))
    };
    let enqueued = jobs.enqueue(vec![spec.build().expect("valid")]).await;
    wait_for_count(&jobs, "beat", "running", 1).await;
    // The pool beats every second (a third of its lease); the manual clock stands still, so
    // every beat sets the same deadline: now + the pool's 3 s.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let job = jobs
        .store
        .get(&jobs.workspace, &enqueued[0].job.id)
        .await
        .expect("get")
        .expect("job");
    let left = job
        .lease_expires_at
        .expect("leased")
        .duration_since(jobs.clock.now());
    assert_eq!(left, Duration::from_secs(3), "renewed by the pool's lease");
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
}

async fn a_panicking_handler_fails_the_attempt(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let recorder = Recorder {
        panic: true,
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    let running = pool(&jobs, "panics", options(2), recorder).spawn(stopped);
    let enqueued = jobs.enqueue(vec![item(7, "panics")]).await;
    wait_for_count(&jobs, "panics", "retryable", 1).await;
    stop.send(true).expect("stop");
    running
        .await
        .expect("the pool survives its handler's panic");
    let job = jobs
        .store
        .get(&jobs.workspace, &enqueued[0].job.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(job.attempt, 1);
    let error = &job.errors.last().expect("an error is recorded").error;
    assert!(
        error.contains("panicked") && error.contains("the handler broke on item 7"),
        "{error}"
    );
}

/// A pool never holds more jobs than it has slots, even when recording outcomes falls behind:
/// a slot frees only once its job's outcome is written. (The completion of one job is held up
/// by a row lock; the pool must not claim past its two slots meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn slots_free_only_once_outcomes_are_recorded() {
    let jobs = Jobs::new(Backend::postgres()).await;
    let recorder = Recorder {
        hold: Duration::from_millis(20),
        ..Recorder::default()
    };
    jobs.enqueue((0..30).map(|n| item(n, "slow-report")).collect())
        .await;
    let (stop, stopped) = watch::channel(false);
    let running = pool(&jobs, "slow-report", options(2), recorder).spawn(stopped);
    // Lock the first job a worker takes, so its completion waits.
    let mut blocker = jobs.db.begin().await.expect("begin");
    let mut locked: Option<String> = None;
    for _ in 0..500 {
        locked = pier_db::with_tx!(&mut blocker, conn => {
            sqlx::query_scalar(
                "SELECT id FROM jobs WHERE state = 'running' LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .fetch_optional(conn)
            .await
        })
        .expect("lock");
        if locked.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(locked.is_some(), "a running job was locked");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let running_now = count(&jobs, "running").await;
    assert!(
        running_now <= 2,
        "{running_now} jobs claimed by a pool of 2 slots"
    );
    blocker.rollback().await.expect("release the lock");
    wait_for_count(&jobs, "slow-report", "completed", 30).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
}

async fn count(jobs: &Jobs, state: &str) -> i64 {
    pier_db::with_reader!(&jobs.db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = $1")
            .bind(state)
            .fetch_one(pool)
            .await
    })
    .expect("count")
}
