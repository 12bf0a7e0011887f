//! Measures the job engine in-process, the way Pier's own capabilities use it:
//!
//! - `enqueue`: bulk enqueue rate (batches of 1,000 in one statement each);
//! - `burndown`: enqueue N no-op jobs, then time worker pools draining them;
//! - `latency`: a steady trickle of single enqueues; time from enqueue to handler start;
//! - `noisy-neighbour`: one workspace's claim latency next to another workspace's paused backlog
//!   in a queue of the same name, against the same loop on an empty table;
//! - `http-burndown`: like `burndown`, but against a running Pier, with workers that claim and
//!   complete over HTTP (see `http.rs`);
//! - `flag-propagation`: how long a flag change takes to reach another node's evaluations, on
//!   PostgreSQL (see `flags.rs`).
//!
//! `all` runs the first three. Each run prints one JSON object per measurement. See
//! `bench/RESULTS.md` for how to run it.

mod flags;
mod http;
mod neighbour;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use pier_core::{Clock, SystemClock, WorkspaceId};
use pier_db::{Backend, DatabaseUrl, Db, sqlx, with_writer};
use pier_jobs::{
    ClaimTarget, JobContext, JobFailure, JobSpec, JobStore, NewJob, Notifier, PoolOptions,
    QueueName, Worker, WorkerPool,
};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

#[derive(Debug, Parser)]
struct Args {
    /// sqlite://PATH or postgres://…; the default is a fresh SQLite file in a temp dir
    #[arg(long)]
    database_url: Option<String>,
    /// Jobs for enqueue and the burn-downs (in-process and over HTTP)
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Worker pools draining the queue (each is one claim loop)
    #[arg(long, default_value_t = 2)]
    pools: usize,
    /// Jobs each pool runs at once (and so claims per statement at most)
    #[arg(long, default_value_t = 500)]
    concurrency: usize,
    /// Flag changes timed by flag-propagation
    #[arg(long, default_value_t = 500)]
    flips: usize,
    /// Jobs in the latency trickle
    #[arg(long, default_value_t = 2_000)]
    trickle_jobs: usize,
    /// Milliseconds between trickle enqueues
    #[arg(long, default_value_t = 5)]
    trickle_every_ms: u64,
    /// enqueue, burndown, latency, noisy-neighbour, http-burndown, flag-propagation, or all
    /// (the first three)
    #[arg(long, default_value = "all")]
    measure: String,
    /// Noisy neighbour: jobs in the other workspace's paused queue
    #[arg(long, default_value_t = 1_000_000)]
    backlog: usize,
    /// Noisy neighbour: timed enqueue-then-claim rounds, on the empty table and next to the backlog
    #[arg(long, default_value_t = 2_000)]
    claims: usize,
    /// HTTP burn-down: Pier's base URL, e.g. http://127.0.0.1:8080
    #[arg(long)]
    url: Option<String>,
    /// HTTP burn-down: an API key of the workspace to use (`jobs:write` and `jobs:work`)
    #[arg(long, env = "PIER_BENCH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// HTTP burn-down: the server's backend, only for the report (the client cannot see it)
    #[arg(long, default_value = "unknown")]
    server_backend: String,
    /// HTTP burn-down: the queue to fill and drain
    #[arg(long, default_value = "bench")]
    queue: String,
    /// HTTP burn-down: workers claiming and completing at once
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// HTTP burn-down: jobs each claim asks for (each batch is completed in one call)
    #[arg(long, default_value_t = 100)]
    claim_max: u32,
    /// Indexes of the jobs table to drop after migrating (repeatable), to measure what an
    /// index costs the writes with one binary, in the same run
    #[arg(long = "drop-index", value_name = "NAME")]
    drop_indexes: Vec<String>,
}

/// Every value of `--measure`.
const MEASURES: [&str; 7] = [
    "all",
    "enqueue",
    "burndown",
    "latency",
    "noisy-neighbour",
    "http-burndown",
    "flag-propagation",
];

/// Does nothing, as fast as possible; counts runs.
#[derive(Clone)]
struct NoOp(Arc<AtomicU64>);

impl Worker for NoOp {
    const KIND: &'static str = "noop";
    type Payload = serde_json::Value;

    async fn run(&self, _ctx: JobContext, _payload: serde_json::Value) -> Result<(), JobFailure> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Deserialize)]
struct Stamp {
    sent_us: u64,
}

/// Records enqueue-to-start delays against a shared monotonic origin.
#[derive(Clone)]
struct Timer {
    origin: Instant,
    delays_us: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Worker for Timer {
    const KIND: &'static str = "timed";
    type Payload = Stamp;

    async fn run(&self, _ctx: JobContext, stamp: Stamp) -> Result<(), JobFailure> {
        let now = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.delays_us
            .lock()
            .map_err(|_| JobFailure::new("poisoned"))?
            .push(now.saturating_sub(stamp.sent_us));
        Ok(())
    }
}

struct Bench {
    /// Where `db` connects, for measures that need a second, fresh pool.
    url: DatabaseUrl,
    db: Db,
    backend: &'static str,
    store: JobStore,
    workspace: WorkspaceId,
    args: Args,
}

fn noop_jobs(n: usize, queue: &QueueName) -> anyhow::Result<Vec<NewJob>> {
    let job = JobSpec::new(NoOp::KIND).build()?.on_queue(queue.clone());
    Ok(vec![job; n])
}

/// The `p` quantile (0 to 1) of sorted microsecond figures, in milliseconds; 0 when empty.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    let Some(last) = sorted_us.len().checked_sub(1) else {
        return 0.0;
    };
    let at = ((last as f64) * p).round() as usize;
    sorted_us.get(at.min(last)).copied().unwrap_or(0) as f64 / 1000.0
}

/// The mean of microsecond figures, in milliseconds; 0 when empty.
fn mean_ms(us: &[u64]) -> f64 {
    if us.is_empty() {
        return 0.0;
    }
    us.iter().sum::<u64>() as f64 / us.len() as f64 / 1000.0
}

/// Microseconds in `d`, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn report(measure: &str, backend: &str, fields: serde_json::Value) {
    let mut line = json!({"system": "pier", "backend": backend, "measure": measure});
    if let (Some(line), Some(fields)) = (line.as_object_mut(), fields.as_object()) {
        line.extend(fields.clone());
    }
    println!("{line}");
}

impl Bench {
    async fn enqueue_all(&self, queue: &QueueName, n: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut left = n;
        while left > 0 {
            let batch = left.min(1000);
            self.store
                .enqueue(&self.workspace, noop_jobs(batch, queue)?)
                .await?;
            left -= batch;
        }
        Ok(started.elapsed())
    }

    async fn completed(&self, queue: &QueueName) -> anyhow::Result<u64> {
        let queue = self.store.queue(&self.workspace, queue).await?;
        Ok(queue
            .and_then(|q| q.counts.get("completed").copied())
            .unwrap_or(0))
    }

    fn pools(
        &self,
        queue: &QueueName,
        worker: impl Worker + Clone,
        stop: &watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let options = PoolOptions {
            concurrency: self.args.concurrency,
            poll_interval: Duration::from_millis(100),
            grace: Duration::from_secs(5),
            ..PoolOptions::default()
        };
        let target = ClaimTarget::workspace(self.workspace.clone(), queue.clone());
        (0..self.args.pools)
            .map(|_| {
                WorkerPool::new(self.store.clone(), target.clone(), options)
                    .register(worker.clone())
                    .spawn(stop.clone())
            })
            .collect()
    }

    async fn enqueue(&self) -> anyhow::Result<()> {
        let queue = QueueName::parse("bench-enqueue").map_err(anyhow::Error::msg)?;
        self.checkpoint().await;
        let took = self.enqueue_all(&queue, self.args.jobs).await?;
        report(
            "bulk_enqueue",
            self.backend,
            json!({
                "jobs": self.args.jobs, "batch": 1000, "seconds": took.as_secs_f64(),
                "jobs_per_sec": self.args.jobs as f64 / took.as_secs_f64(),
            }),
        );
        Ok(())
    }

    /// Flushes dirty pages before a timed phase, so the previous phase's write-back does not
    /// land in it (the graphile-worker baseline does the same). Needs a superuser; skipped
    /// otherwise.
    async fn checkpoint(&self) {
        if self.db.backend() == Backend::Postgres
            && let Err(err) = with_writer!(&self.db, pool => sqlx::query("CHECKPOINT")
                .execute(pool)
                .await
                .map(drop))
        {
            eprintln!("no CHECKPOINT before the timed phase: {err}");
        }
    }

    async fn burndown(&self) -> anyhow::Result<()> {
        let queue = QueueName::parse("bench-burndown").map_err(anyhow::Error::msg)?;
        self.enqueue_all(&queue, self.args.jobs).await?;
        self.checkpoint().await;
        let runs = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = watch::channel(false);
        let started = Instant::now();
        let pools = self.pools(&queue, NoOp(runs.clone()), &stopped);
        let target = self.args.jobs as u64;
        let deadline = started + Duration::from_secs(600);
        // Watch the handler counter (free), then confirm in the database that every completion
        // was recorded; the clock stops only then.
        while runs.load(Ordering::Relaxed) < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while self.completed(&queue).await? < target {
            if Instant::now() > deadline {
                bail!("burn-down did not finish within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        stop.send(true)?;
        for pool in pools {
            pool.await?;
        }
        report(
            "burndown",
            self.backend,
            json!({
                "jobs": self.args.jobs, "pools": self.args.pools, "concurrency": self.args.concurrency,
                "seconds": took.as_secs_f64(), "jobs_per_sec": target as f64 / took.as_secs_f64(),
                "handler_runs": runs.load(Ordering::Relaxed),
            }),
        );
        Ok(())
    }

    async fn latency(&self) -> anyhow::Result<()> {
        let queue = QueueName::parse("bench-latency").map_err(anyhow::Error::msg)?;
        let timer = Timer {
            origin: Instant::now(),
            delays_us: Arc::default(),
        };
        let (stop, stopped) = watch::channel(false);
        let pools = self.pools(&queue, timer.clone(), &stopped);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut tick = tokio::time::interval(Duration::from_millis(self.args.trickle_every_ms));
        for _ in 0..self.args.trickle_jobs {
            tick.tick().await;
            let sent_us = u64::try_from(timer.origin.elapsed().as_micros())?;
            let job = JobSpec::new(Timer::KIND)
                .payload(json!({ "sent_us": sent_us }))
                .build()?
                .on_queue(queue.clone());
            self.store.enqueue(&self.workspace, vec![job]).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.completed(&queue).await? < self.args.trickle_jobs as u64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true)?;
        for pool in pools {
            pool.await?;
        }
        let mut delays = timer
            .delays_us
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        delays.sort_unstable();
        let pct = |p: f64| percentile_ms(&delays, p);
        report(
            "pickup_latency",
            self.backend,
            json!({
                "jobs": delays.len(), "every_ms": self.args.trickle_every_ms,
                "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            }),
        );
        Ok(())
    }
}

/// Drops one of the jobs table's indexes; refuses a name that is not one.
async fn drop_index(db: &Db, name: &str) -> anyhow::Result<()> {
    if !name.starts_with("jobs_") || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("--drop-index {name}: not the name of an index of the jobs table");
    }
    let sql = format!("DROP INDEX {name}");
    with_writer!(db, pool => sqlx::query(&sql).execute(pool).await.map(drop))
        .with_context(|| format!("--drop-index {name}"))?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !MEASURES.contains(&args.measure.as_str()) {
        bail!(
            "unknown --measure {}; expected one of {}",
            args.measure,
            MEASURES.join(", ")
        );
    }
    // Against a running server: no database of its own.
    if args.measure == "http-burndown" {
        return http::burndown(&args).await;
    }
    if args.measure == "flag-propagation" {
        let url = args.database_url.as_deref().unwrap_or_default().parse()?;
        return flags::propagation(&url, args.flips).await;
    }
    let dir = tempfile::tempdir()?;
    let url: DatabaseUrl = match &args.database_url {
        Some(url) => url.parse()?,
        None => DatabaseUrl::Sqlite(dir.path().join("bench.db")),
    };
    let db = url.connect(16).await.context("connect")?;
    db.migrate(&[pier_db::MIGRATIONS, pier_jobs::MIGRATIONS])
        .await
        .context("migrate")?;
    for index in &args.drop_indexes {
        drop_index(&db, index).await?;
    }
    let backend = db.backend().as_str();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let workspace = WorkspaceId::new(clock.now());
    let notifier = Notifier::default();
    let store = JobStore::new(db.clone(), clock, notifier.clone());
    let relay = notifier.listen(pier_db::Relay::default()).spawn(&db);
    let measure = args.measure.clone();
    let bench = Bench {
        url,
        db,
        backend,
        store,
        workspace,
        args,
    };
    if matches!(measure.as_str(), "all" | "enqueue") {
        bench.enqueue().await?;
    }
    if matches!(measure.as_str(), "all" | "burndown") {
        bench.burndown().await?;
    }
    if matches!(measure.as_str(), "all" | "latency") {
        bench.latency().await?;
    }
    if measure == "noisy-neighbour" {
        bench.noisy_neighbour().await?;
    }
    if let Some(relay) = relay {
        relay.abort();
    }
    bench.db.close().await;
    Ok(())
}
