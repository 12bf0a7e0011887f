//! Redis-backed rate-limit decisions per second at N concurrent callers (50 by default), each a
//! tokio task deciding for its own key in a loop, on a multi-thread runtime with one worker by
//! default: redis-benchmark, the ceiling these figures are compared with, is one thread too, and
//! on a 2-core machine Redis needs the other core (`--workers 2` shows what a second worker
//! fighting Redis for it costs):
//!
//! - `own`: every task has its own `Limiter` on its own `ConnectionManager` (N connections), each
//!   decision one script call (`RedisStore::one_call_per_decision`), as redis-benchmark sends one
//!   EVALSHA per request;
//! - `shared`: every task shares one `Limiter` as `pier serve` has it (`RedisStore::new`): one
//!   multiplexed connection, concurrent decisions coalesced into script calls pipelined on it.
//!
//! Each mode warms up (loading the script, opening connections), then counts the decisions that
//! complete during the measured span. The policy is `gcra 1000000000/1s fail_closed`: nothing is
//! ever over the limit, so a refusal means Redis did not answer in time (or failed) and the
//! failure mode decided; refusals are reported as `refused` and should be 0.
//!
//! Usage: redis-bench [--url redis://127.0.0.1:6379] [--tasks 50] [--workers 1] [--seconds 10]
//!                    [--warmup 2] [--timeout-ms 50] [--mode own|shared|both]
//! Prints one JSON object per mode on stdout.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pier_core::SystemClock;
use pier_ratelimit::{Limiter, Policy, PolicySpec, RedisStore};
use redis::aio::ConnectionManager;

const SPEC: &str = "gcra 1000000000/1s fail_closed";

struct Args {
    url: String,
    tasks: usize,
    seconds: f64,
    warmup: f64,
    timeout: Duration,
    workers: usize,
    modes: Vec<Mode>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Own,
    Shared,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Own => "own_connections",
            Self::Shared => "shared_connection",
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "redis://127.0.0.1:6379".to_owned(),
        tasks: 50,
        seconds: 10.0,
        warmup: 2.0,
        timeout: pier_ratelimit::DEFAULT_TIMEOUT,
        workers: 1,
        modes: vec![Mode::Own, Mode::Shared],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--tasks" => args.tasks = value()?.parse().map_err(|e| format!("--tasks: {e}"))?,
            "--workers" => {
                args.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?;
            }
            "--seconds" => args.seconds = number(value()?)?,
            "--warmup" => args.warmup = number(value()?)?,
            "--timeout-ms" => args.timeout = Duration::from_secs_f64(number(value()?)? / 1000.0),
            "--mode" => {
                args.modes = match value()?.as_str() {
                    "own" => vec![Mode::Own],
                    "shared" => vec![Mode::Shared],
                    "both" => vec![Mode::Own, Mode::Shared],
                    other => return Err(format!("--mode: `{other}` is not own, shared or both")),
                }
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.tasks == 0 || args.workers == 0 || args.seconds <= 0.0 || args.warmup < 0.0 {
        return Err("--tasks, --workers and --seconds must be positive".to_owned());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("redis-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("redis-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> redis::RedisResult<()> {
    let client = redis::Client::open(args.url.as_str())?;
    let policy = Policy::server("bench", SPEC.parse::<PolicySpec>().expect("valid spec"));
    for &mode in &args.modes {
        let record = measure(args, &client, &policy, mode).await?;
        println!("{record}");
    }
    Ok(())
}

/// A limiter on its own connection: coalescing concurrent decisions into one script call when
/// `coalesce`, else one script call per decision (as redis-benchmark sends one EVALSHA per
/// request).
async fn limiter(
    client: &redis::Client,
    timeout: Duration,
    coalesce: bool,
) -> redis::RedisResult<Arc<Limiter>> {
    let conn = ConnectionManager::new(client.clone()).await?;
    let store = if coalesce {
        RedisStore::new(conn)
    } else {
        RedisStore::one_call_per_decision(conn)
    };
    Ok(Arc::new(
        Limiter::local(Arc::new(SystemClock), 1000).with_redis(store, timeout),
    ))
}

async fn measure(
    args: &Args,
    client: &redis::Client,
    policy: &Policy,
    mode: Mode,
) -> redis::RedisResult<serde_json::Value> {
    let shared = match mode {
        Mode::Shared => Some(limiter(client, args.timeout, true).await?),
        Mode::Own => None,
    };
    let decisions = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(args.tasks);
    for t in 0..args.tasks {
        let limiter = match &shared {
            Some(limiter) => Arc::clone(limiter),
            None => limiter(client, args.timeout, false).await?,
        };
        let (policy, decisions, refused, stop) = (
            policy.clone(),
            Arc::clone(&decisions),
            Arc::clone(&refused),
            Arc::clone(&stop),
        );
        let key = format!("bench:{}:{t}", mode.name());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let decision = limiter
                    .check(&policy, &key, 1)
                    .await
                    .expect("cost 1 fits the policy");
                if !decision.allowed {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                decisions.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let (start, start_count, start_refused) = (
        Instant::now(),
        decisions.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let (end, end_count, end_refused) = (
        Instant::now(),
        decisions.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a decision task panicked");
    }
    let elapsed = (end - start).as_secs_f64();
    let counted = end_count - start_count;
    Ok(serde_json::json!({
        "measure": "redis_decisions",
        "mode": mode.name(),
        "tasks": args.tasks,
        "connections": if mode == Mode::Own { args.tasks } else { 1 },
        "worker_threads": args.workers,
        "policy": SPEC,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "decisions": counted,
        "decisions_per_sec": (counted as f64 / elapsed).round(),
        "refused": end_refused - start_refused,
    }))
}
