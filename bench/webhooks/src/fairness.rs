//! Fairness between workspaces, on one Pier: workspace A's endpoint is throttled at 5
//! deliveries a second; workspace B's endpoint is not. B publishes `--fairness-samples` events
//! one at a time (each waits for its delivery) with no backlog anywhere, then A publishes
//! `--fairness-backlog` events at once, and B does the same again while A's backlog drains at
//! its rate. Reported: B's publish → delivered latency in both phases (p50, max) and the ratio
//! of the medians, with Pier's delivery slots (`--webhooks-concurrency`; the scenario
//! sets 20).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::api::Api;
use crate::pier::Pier;
use crate::receiver::Receiver;
use crate::stats::object;
use crate::{Args, Backend, publish, report};

/// How long one of B's deliveries may take before the measurement fails.
const PATIENCE: Duration = Duration::from_secs(60);

pub async fn run(args: &Args, backend: Backend) -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let pier = Pier::start(args, backend).await?;
    let a = Arc::new(Api::new(pier.base(), pier.key())?);
    a.create_endpoint_with(json!({"url": receiver.url(0), "rate_limit_per_second": 5}))
        .await?;
    let b_key = pier.create_workspace(&args.pier_bin, "b").await?;
    let b = Api::new(pier.base(), &b_key)?;
    b.create_endpoint(&receiver.url(1)).await?;
    eprintln!("{backend}: fairness: B alone");
    let alone = b_latencies(&b, &receiver, args.fairness_samples).await?;
    eprintln!(
        "{backend}: fairness: A publishes {} to an endpoint at 5/s",
        args.fairness_backlog
    );
    let log = publish::as_fast_as_possible(&a, args.fairness_backlog, 32).await;
    let backlog = log.take().len();
    eprintln!("{backend}: fairness: B beside A's backlog");
    let beside = b_latencies(&b, &receiver, args.fairness_samples).await?;
    let a_delivered = receiver
        .received()
        .saturating_sub(2 * args.fairness_samples);
    pier.stop().await?;
    let (alone_p50, beside_p50) = (median(&alone), median(&beside));
    report(
        "fairness",
        backend,
        2,
        object(json!({
            "webhooks_concurrency": args.webhooks_concurrency,
            "a_backlog": backlog,
            "a_delivered_meanwhile": a_delivered,
            "b_alone_ms": {"p50": alone_p50, "max": max(&alone)},
            "b_beside_backlog_ms": {"p50": beside_p50, "max": max(&beside)},
            "p50_ratio_beside_over_alone": beside_p50 / alone_p50.max(0.001),
        })),
    );
    Ok(())
}

/// Publishes `n` events as workspace B, one at a time, each once the last has arrived: the
/// latency of each, in milliseconds.
async fn b_latencies(b: &Api, receiver: &Receiver, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(n);
    for seq in 0..n {
        let event = b.publish(seq).await.context("B publishes")?;
        let deadline = Instant::now() + PATIENCE;
        let arrived = loop {
            if let Some(at) = receiver.arrived(&event.id, 1) {
                break at;
            }
            if Instant::now() > deadline {
                bail!("B's event {} did not arrive within {PATIENCE:?}", event.id);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let ms = arrived.duration_since(event.sent).as_secs_f64() * 1000.0;
        eprintln!("B's event {seq}: {ms:.1} ms");
        latencies.push(ms);
    }
    Ok(latencies)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}
