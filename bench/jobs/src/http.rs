//! HTTP burn-down: the same drain as `burndown`, but by external workers speaking Pier's HTTP API
//! to a running server.
//!
//! `--jobs` no-op jobs are enqueued with `POST /v1/jobs/batch`, 1,000 per call (not timed). Then
//! `--workers` workers start at once, each looping: claim up to `--claim-max` jobs
//! (`POST /v1/queues/{queue}/claim`, waiting up to 1 s when none is available), then complete them
//! all in one `POST /v1/jobs/complete`. The clock runs from starting the workers until
//! `GET /v1/queues` shows every job completed (first the workers' own count of `completed`
//! outcomes is watched, which is free; then the server's counters confirm it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{Client, StatusCode, header};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{Args, mean_ms, micros, percentile_ms, report};

/// The most jobs `POST /v1/jobs/batch` takes.
const BATCH: usize = 1000;
/// How long one burn-down may take before it fails.
const DEADLINE: Duration = Duration::from_secs(600);

/// A client of one Pier server, authenticated as one workspace.
#[derive(Debug)]
struct Api {
    client: Client,
    base: String,
    queue: String,
}

#[derive(Debug, Deserialize)]
struct Page<T> {
    data: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct QueueRow {
    name: String,
    counts: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Deserialize)]
struct Claimed {
    jobs: Vec<ClaimedJob>,
}

#[derive(Debug, Deserialize)]
struct ClaimedJob {
    id: String,
    lease_token: String,
}

#[derive(Debug, Serialize)]
struct Lease<'a> {
    id: &'a str,
    lease_token: &'a str,
}

#[derive(Debug, Deserialize)]
struct Reported {
    outcome: String,
}

impl Api {
    fn new(base: &str, key: &str, queue: &str) -> anyhow::Result<Self> {
        let mut auth = header::HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key is not a valid header value")?;
        auth.set_sensitive(true);
        let mut headers = header::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, auth);
        let client = Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            queue: queue.to_owned(),
        })
    }

    /// POSTs `body` as JSON; any status but `expect` is an error carrying the response body.
    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        expect: StatusCode,
    ) -> anyhow::Result<T> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        if status != expect {
            let text = response.text().await.unwrap_or_default();
            bail!("POST {path}: {status} (expected {expect}): {text}");
        }
        response
            .json()
            .await
            .with_context(|| format!("POST {path}: reading the response"))
    }

    /// The queue's `completed` count from `GET /v1/queues` (0 while the queue is not listed).
    async fn completed(&self) -> anyhow::Result<u64> {
        let path = "/v1/queues?limit=100";
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        if status != StatusCode::OK {
            let text = response.text().await.unwrap_or_default();
            bail!("GET {path}: {status}: {text}");
        }
        let page: Page<QueueRow> = response.json().await?;
        Ok(page
            .data
            .iter()
            .find(|q| q.name == self.queue)
            .and_then(|q| q.counts.get("completed").copied())
            .unwrap_or(0))
    }

    async fn enqueue(&self, jobs: usize) -> anyhow::Result<()> {
        let mut sent = 0;
        while sent < jobs {
            let batch = (jobs - sent).min(BATCH);
            let specs: Vec<_> = (sent..sent + batch)
                .map(|i| json!({"kind": "noop", "queue": self.queue, "payload": {"i": i}}))
                .collect();
            let created: Page<IgnoredAny> = self
                .post(
                    "/v1/jobs/batch",
                    &json!({ "jobs": specs }),
                    StatusCode::CREATED,
                )
                .await?;
            if created.data.len() != batch {
                bail!(
                    "POST /v1/jobs/batch created {} jobs, expected {batch}",
                    created.data.len()
                );
            }
            sent += batch;
        }
        Ok(())
    }
}

/// What one worker saw.
#[derive(Debug, Default)]
struct WorkerLog {
    claim_us: Vec<u64>,
    complete_us: Vec<u64>,
    empty_claims: u64,
}

/// Counts shared by the workers and the clock.
#[derive(Debug, Default)]
struct Tally {
    completed: AtomicU64,
    /// Outcomes other than `completed` (`stale_lease`, `not_found`): each is a job left undone.
    refused: AtomicU64,
}

/// Claims and completes until told to stop; any failed call ends the worker with its error.
async fn work(
    api: Arc<Api>,
    claim_max: u32,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<WorkerLog> {
    let claim_path = format!("/v1/queues/{}/claim", api.queue);
    let claim_body = json!({"max": claim_max, "wait_seconds": 1});
    let mut log = WorkerLog::default();
    while !*stop.borrow() {
        let started = Instant::now();
        let claimed: Claimed = tokio::select! {
            claimed = api.post(&claim_path, &claim_body, StatusCode::OK) => claimed?,
            _ = stop.changed() => break,
        };
        log.claim_us.push(micros(started.elapsed()));
        if claimed.jobs.is_empty() {
            log.empty_claims += 1;
            continue;
        }
        let leases: Vec<Lease<'_>> = claimed
            .jobs
            .iter()
            .map(|job| Lease {
                id: &job.id,
                lease_token: &job.lease_token,
            })
            .collect();
        let started = Instant::now();
        let reported: Page<Reported> = api
            .post("/v1/jobs/complete", &leases, StatusCode::OK)
            .await?;
        log.complete_us.push(micros(started.elapsed()));
        if reported.data.len() != leases.len() {
            bail!(
                "POST /v1/jobs/complete reported {} outcomes for {} jobs",
                reported.data.len(),
                leases.len()
            );
        }
        let done = reported
            .data
            .iter()
            .filter(|r| r.outcome == "completed")
            .count() as u64;
        let refused = leases.len() as u64 - done;
        tally.completed.fetch_add(done, Ordering::Relaxed);
        if refused > 0 {
            tally.refused.fetch_add(refused, Ordering::Relaxed);
            eprintln!("http burn-down: {refused} completions refused (stale lease or not found)");
        }
    }
    Ok(log)
}

pub(crate) async fn burndown(args: &Args) -> anyhow::Result<()> {
    let (Some(url), Some(key)) = (&args.url, &args.key) else {
        bail!("--measure http-burndown needs --url and --key (or PIER_BENCH_KEY)");
    };
    if args.workers == 0 || args.claim_max == 0 {
        bail!("--workers and --claim-max must be at least 1");
    }
    let api = Arc::new(Api::new(url, key, &args.queue)?);
    let jobs = args.jobs;
    // Completions recorded earlier on this server (another run) are not this run's.
    let before = api.completed().await?;
    eprintln!("http burn-down: enqueueing {jobs} jobs over HTTP");
    let enqueue_started = Instant::now();
    api.enqueue(jobs).await?;
    let enqueue_took = enqueue_started.elapsed();

    let target = before + jobs as u64;
    let tally = Arc::new(Tally::default());
    let (stop, stopped) = watch::channel(false);
    eprintln!(
        "http burn-down: {} workers claiming {} at a time",
        args.workers, args.claim_max
    );
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..args.workers {
        workers.spawn(work(
            api.clone(),
            args.claim_max,
            tally.clone(),
            stopped.clone(),
        ));
    }
    let deadline = started + DEADLINE;
    while tally.completed.load(Ordering::Relaxed) < jobs as u64 {
        if Instant::now() > deadline {
            bail!("http burn-down did not finish within {DEADLINE:?}");
        }
        tokio::select! {
            Some(ended) = workers.join_next() => {
                ended??;
                bail!("a worker stopped before the queue was drained");
            }
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    let mut completed = api.completed().await?;
    while completed < target {
        if Instant::now() > deadline {
            bail!("GET /v1/queues shows {completed} of {target} completed after {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        completed = api.completed().await?;
    }
    let took = started.elapsed();
    stop.send(true)?;
    let mut claim_us = Vec::new();
    let mut complete_us = Vec::new();
    let mut empty_claims = 0;
    while let Some(ended) = workers.join_next().await {
        let log = ended??;
        claim_us.extend(log.claim_us);
        complete_us.extend(log.complete_us);
        empty_claims += log.empty_claims;
    }
    claim_us.sort_unstable();
    complete_us.sort_unstable();
    report(
        "http_burndown",
        &args.server_backend,
        json!({
            "jobs": jobs, "workers": args.workers, "claim_max": args.claim_max,
            "seconds": took.as_secs_f64(), "jobs_per_sec": jobs as f64 / took.as_secs_f64(),
            "enqueue_seconds": enqueue_took.as_secs_f64(),
            "claims": claim_us.len(), "empty_claims": empty_claims,
            "completes": complete_us.len(),
            "claim_p50_ms": percentile_ms(&claim_us, 0.50),
            "claim_p99_ms": percentile_ms(&claim_us, 0.99),
            "claim_mean_ms": mean_ms(&claim_us),
            "complete_p50_ms": percentile_ms(&complete_us, 0.50),
            "complete_p99_ms": percentile_ms(&complete_us, 0.99),
            "complete_mean_ms": mean_ms(&complete_us),
            "refused_completions": tally.refused.load(Ordering::Relaxed),
            "server_completed": completed - before,
        }),
    );
    Ok(())
}
