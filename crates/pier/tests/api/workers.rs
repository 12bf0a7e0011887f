//! The in-process runtime: Rust handlers, retries, cancellation signals, concurrency limits that
//! hold across competing pools, and shutdown that releases leases.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pier_jobs::{
    ClaimTarget, JobContext, JobFailure, JobKind, NewJob, PoolOptions, QueueName, Worker,
    WorkerPool,
};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::support::{Backend, TestApp, on_both_backends};

on_both_backends!(
    handlers_run_every_job_once,
    failed_attempts_are_retried,
    cancelling_a_running_job_signals_its_handler,
    concurrency_limit_holds_across_competing_pools,
    shutdown_releases_unfinished_jobs,
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
}

impl Worker for Recorder {
    const KIND: &'static str = "record";
    type Payload = Item;

    async fn run(&self, ctx: JobContext, item: Item) -> Result<(), JobFailure> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        if self.wait_for_cancel {
            ctx.cancelled().await;
        } else {
            tokio::time::sleep(self.hold).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        if self.wait_for_cancel {
            return Err(JobFailure::new("stopped"));
        }
        if self.fail_first_attempt && ctx.attempt == 1 {
            return Err(JobFailure::new("first attempts always fail"));
        }
        *self.seen.lock().expect("lock").entry(item.n).or_default() += 1;
        Ok(())
    }
}

fn job(n: u32, queue: &str) -> NewJob {
    let kind = JobKind::parse("record").expect("kind");
    NewJob::new(kind, json!({ "n": n })).on_queue(QueueName::parse(queue).expect("queue"))
}

fn pool(app: &TestApp, queue: &str, concurrency: usize, worker: Recorder) -> WorkerPool {
    let target = ClaimTarget {
        workspace: Some(app.workspace()),
        queue: QueueName::parse(queue).expect("queue"),
    };
    let options = PoolOptions {
        concurrency,
        poll_interval: Duration::from_millis(50),
        grace: Duration::from_millis(200),
        ..PoolOptions::default()
    };
    WorkerPool::new(app.jobs.clone(), target, options).register(worker)
}

/// Waits (bounded) until `queue` has `n` jobs in `state`.
async fn wait_for_count(app: &TestApp, queue: &str, state: &str, n: u64) {
    let ws = app.workspace();
    for _ in 0..1000 {
        let queues = app.jobs.queues(&ws).await.expect("queues");
        if queues
            .iter()
            .any(|q| q.name == queue && q.counts.get(state) == Some(&n))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("queue {queue} never reached {n} {state} jobs");
}

async fn handlers_run_every_job_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let recorder = Recorder::default();
    let (stop, stopped) = watch::channel(false);
    let running = pool(&app, "work", 8, recorder.clone()).spawn(stopped);
    app.jobs
        .enqueue(&app.workspace(), (0..60).map(|n| job(n, "work")).collect())
        .await
        .expect("enqueue");
    wait_for_count(&app, "work", "completed", 60).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
    let seen = recorder.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 60);
    assert!(seen.values().all(|&count| count == 1));
}

async fn failed_attempts_are_retried(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let recorder = Recorder {
        fail_first_attempt: true,
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    let running = pool(&app, "flaky", 4, recorder.clone()).spawn(stopped);
    app.jobs
        .enqueue(&app.workspace(), (0..5).map(|n| job(n, "flaky")).collect())
        .await
        .expect("enqueue");
    wait_for_count(&app, "flaky", "retryable", 5).await;
    app.clock.advance(Duration::from_secs(2));
    wait_for_count(&app, "flaky", "completed", 5).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
    assert_eq!(recorder.seen.lock().expect("lock").len(), 5);
}

async fn cancelling_a_running_job_signals_its_handler(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let recorder = Recorder {
        wait_for_cancel: true,
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    // A short lease set on the pool (not on the job) makes the pool heartbeat often.
    let mut short_lease = pool(&app, "long", 1, recorder);
    short_lease.set_lease(Duration::from_secs(1));
    let running = short_lease.spawn(stopped);
    let enqueued = app
        .jobs
        .enqueue(&app.workspace(), vec![job(1, "long")])
        .await
        .expect("enqueue");
    let id = enqueued[0].job.id.clone();
    wait_for_count(&app, "long", "running", 1).await;
    app.jobs
        .cancel(&app.workspace(), &id)
        .await
        .expect("cancel");
    wait_for_count(&app, "long", "cancelled", 1).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
}

async fn concurrency_limit_holds_across_competing_pools(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let queue = QueueName::parse("limited").expect("queue");
    app.jobs
        .set_concurrency_limit(&app.workspace(), &queue, Some(2))
        .await
        .expect("limit");
    let recorder = Recorder {
        hold: Duration::from_millis(30),
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    let first = pool(&app, "limited", 4, recorder.clone()).spawn(stopped.clone());
    let second = pool(&app, "limited", 4, recorder.clone()).spawn(stopped);
    app.jobs
        .enqueue(
            &app.workspace(),
            (0..24).map(|n| job(n, "limited")).collect(),
        )
        .await
        .expect("enqueue");
    wait_for_count(&app, "limited", "completed", 24).await;
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
    let app = TestApp::spawn(backend).await;
    let recorder = Recorder {
        wait_for_cancel: true,
        ..Recorder::default()
    };
    let (stop, stopped) = watch::channel(false);
    let running = pool(&app, "stuck", 2, recorder).spawn(stopped);
    let enqueued = app
        .jobs
        .enqueue(&app.workspace(), vec![job(1, "stuck")])
        .await
        .expect("enqueue");
    wait_for_count(&app, "stuck", "running", 1).await;
    stop.send(true).expect("stop");
    running.await.expect("pool stops");
    let job = app
        .jobs
        .get(&app.workspace(), &enqueued[0].job.id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(
        job.state,
        pier_jobs::JobState::Available,
        "released for another worker"
    );
    assert_eq!(job.attempt, 0, "an interrupted attempt is not counted");
}
