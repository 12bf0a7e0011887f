//! Benchmarks Pier's webhooks end to end: each measurement starts `pier serve` on a fresh
//! database, registers endpoints on an in-process receiver, publishes events over the API and
//! times each delivery from just before its event's `POST /v1/events` to its arrival.
//!
//! - `throughput`: N events from concurrent publishers as fast as they go, to 1, 10 and 100
//!   endpoints: events accepted per second, deliveries completed per second, latency;
//! - `latency`: an open-loop 200 events/s to 10 endpoints: latency p50/p95/p99/max;
//! - `sustained`: an open-loop 100 events/s to 10 endpoints (1,000 deliveries/s), sampled every
//!   second: does the backlog of deliveries grow?
//! - `fairness`: workspace B's first delivery latency with and without workspace A's backlog to
//!   an endpoint throttled at 5/s, on one Pier (see `fairness.rs`).
//!
//! One JSON object per measurement on stdout; progress on stderr. See `bench/run-webhooks.sh`.

mod api;
mod fairness;
mod pier;
mod publish;
mod receiver;
mod scenarios;
mod stats;

use std::fmt;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Throughput,
    Latency,
    Sustained,
    Fairness,
}

#[derive(Debug, Parser)]
struct Args {
    /// The pier binary to run
    #[arg(long, env = "PIER_BIN", default_value = "target/release/pier")]
    pier_bin: PathBuf,
    /// An admin connection to PostgreSQL, used to create and drop a database per measurement
    #[arg(
        long,
        env = "PIER_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_admin_url: String,
    /// The backends, each running every scenario
    #[arg(
        long,
        env = "BENCH_BACKENDS",
        value_delimiter = ',',
        default_value = "sqlite,postgres"
    )]
    backends: Vec<Backend>,
    /// The scenarios, in order
    #[arg(
        long,
        env = "BENCH_SCENARIOS",
        value_delimiter = ',',
        default_value = "throughput,latency,sustained"
    )]
    scenarios: Vec<Scenario>,
    /// Throughput: the endpoint counts, one measurement each
    #[arg(
        long,
        env = "BENCH_ENDPOINTS",
        value_delimiter = ',',
        default_value = "1,10,100"
    )]
    endpoints: Vec<usize>,
    /// Throughput: events per measurement, fewer where --max-deliveries says so
    #[arg(long, env = "BENCH_EVENTS", default_value_t = 2_000)]
    events: usize,
    /// Throughput: the most deliveries (events x endpoints) one measurement makes
    #[arg(long, env = "BENCH_MAX_DELIVERIES", default_value_t = 50_000)]
    max_deliveries: usize,
    /// Throughput: publishers sending at once
    #[arg(long, env = "BENCH_PUBLISHERS", default_value_t = 32)]
    publishers: usize,
    /// Latency: events per second
    #[arg(
        long,
        env = "BENCH_LATENCY_RATE",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value_t = 200
    )]
    latency_rate: u32,
    /// Latency: endpoints
    #[arg(long, env = "BENCH_LATENCY_ENDPOINTS", default_value_t = 10)]
    latency_endpoints: usize,
    /// Latency: seconds of publishing
    #[arg(long, env = "BENCH_LATENCY_SECONDS", default_value_t = 30)]
    latency_seconds: u64,
    /// Sustained: events per second
    #[arg(
        long,
        env = "BENCH_SUSTAINED_RATE",
        value_parser = clap::value_parser!(u32).range(1..),
        default_value_t = 100
    )]
    sustained_rate: u32,
    /// Sustained: endpoints
    #[arg(long, env = "BENCH_SUSTAINED_ENDPOINTS", default_value_t = 10)]
    sustained_endpoints: usize,
    /// Sustained: seconds of publishing (at least 3: growth is judged on the last three samples)
    #[arg(
        long,
        env = "BENCH_SUSTAINED_SECONDS",
        value_parser = clap::value_parser!(u64).range(3..),
        default_value_t = 60
    )]
    sustained_seconds: u64,
    /// Fairness: events in workspace A's backlog
    #[arg(long, env = "BENCH_FAIRNESS_BACKLOG", default_value_t = 500)]
    fairness_backlog: usize,
    /// Fairness: workspace B's events, measured one at a time, with and without the backlog
    #[arg(long, env = "BENCH_FAIRNESS_SAMPLES", default_value_t = 10)]
    fairness_samples: usize,
    /// How long to wait for the last deliveries after publishing ends, in seconds
    #[arg(long, env = "BENCH_DRAIN_SECONDS", default_value_t = 600)]
    drain_seconds: u64,
    /// Pier's PIER_WEBHOOKS_CONCURRENCY (deliveries sent at once); Pier's default when unset
    #[arg(long, env = "BENCH_WEBHOOKS_CONCURRENCY")]
    webhooks_concurrency: Option<u64>,
}

impl Args {
    /// Every measurement, as (scenario, endpoints), in the order they run on each backend.
    fn measurements(&self) -> Vec<(Scenario, usize)> {
        let mut all = Vec::new();
        for &scenario in &self.scenarios {
            match scenario {
                Scenario::Throughput => all.extend(self.endpoints.iter().map(|&e| (scenario, e))),
                Scenario::Latency => all.push((scenario, self.latency_endpoints)),
                Scenario::Sustained => all.push((scenario, self.sustained_endpoints)),
                Scenario::Fairness => all.push((scenario, 2)),
            }
        }
        all
    }
}

/// Prints one measurement as a JSON line.
fn report(scenario: &str, backend: Backend, endpoints: usize, fields: Map<String, Value>) {
    let mut line = json!({
        "bench": "webhooks", "scenario": scenario, "backend": backend.to_string(),
        "endpoints": endpoints, "load_1m": load_1m(),
    });
    if let Some(line) = line.as_object_mut() {
        line.extend(fields);
    }
    println!("{line}");
}

/// The machine's one-minute load average: this machine is shared, and the figures move with it.
fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut failed = 0;
    for &backend in &args.backends {
        for (scenario, endpoints) in args.measurements() {
            // A failed measurement is reported and the rest still run.
            if let Err(err) = scenarios::run(&args, backend, scenario, endpoints).await {
                eprintln!("{backend}: {scenario:?} with {endpoints} endpoint(s) failed: {err:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} measurement(s) failed");
    }
    Ok(())
}
