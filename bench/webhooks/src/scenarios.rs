//! The measurements. Each runs on its own Pier, fresh database and receiver, and reports one
//! JSON line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::api::{Api, Published};
use crate::pier::Pier;
use crate::publish::{self, Log};
use crate::receiver::{Arrivals, Receiver};
use crate::stats::{Deliveries, object, publish_fields, rate};
use crate::{Args, Backend, Scenario, report};

/// Events whose missing deliveries are looked up in Pier, when some are missing.
const MISSING_SHOWN: usize = 3;

pub async fn run(
    args: &Args,
    backend: Backend,
    scenario: Scenario,
    endpoints: usize,
) -> anyhow::Result<()> {
    let stage = || Stage::new(args, backend, endpoints);
    let (name, fields) = match scenario {
        Scenario::Throughput => (
            "throughput".to_owned(),
            throughput(args, stage().await?).await?,
        ),
        Scenario::Latency => (
            format!("latency_{}eps", args.latency_rate),
            latency(args, stage().await?).await?,
        ),
        Scenario::Sustained => (
            format!("sustained_{}dps", args.sustained_rate as usize * endpoints),
            sustained(args, stage().await?).await?,
        ),
        // Two workspaces on one Pier: a stage of its own.
        Scenario::Fairness => return crate::fairness::run(args, backend).await,
    };
    report(&name, backend, endpoints, fields);
    Ok(())
}

/// Publishes as fast as `--publishers` concurrent loops go: events accepted per second (until
/// the last 202) and deliveries completed per second (until the last arrival), both from the
/// first publish.
async fn throughput(args: &Args, stage: Stage) -> anyhow::Result<Map<String, Value>> {
    let events = args
        .events
        .min(args.max_deliveries / stage.endpoints.max(1))
        .max(1);
    eprintln!(
        "{}: throughput: {events} events to {} endpoint(s) from {} publishers",
        stage.backend, stage.endpoints, args.publishers
    );
    let started = Instant::now();
    let log = publish::as_fast_as_possible(&stage.api, events, args.publishers).await;
    let published = log.take();
    let (deliveries, mut fields) = stage.finish(&published, log.failed(), args).await?;
    fields.extend(object(json!({
        "publishers": args.publishers,
        "events_per_sec_accepted": rate(published.len(), since(started, last_accepted(&published))),
        "deliveries_per_sec_completed": rate(deliveries.count(), since(started, deliveries.last)),
    })));
    Ok(fields)
}

/// Publishes at `--latency-rate` events a second, open-loop: the latency quantiles, and the rate
/// the publisher achieved.
async fn latency(args: &Args, stage: Stage) -> anyhow::Result<Map<String, Value>> {
    let per_second = args.latency_rate;
    eprintln!(
        "{}: latency: {per_second} events/s to {} endpoint(s) for {} s",
        stage.backend, stage.endpoints, args.latency_seconds
    );
    let log = Arc::new(Log::default());
    let started = Instant::now();
    let duration = Duration::from_secs(args.latency_seconds);
    publish::at_rate(&stage.api, per_second, duration, &log).await;
    let published = log.take();
    let (_, mut fields) = stage.finish(&published, log.failed(), args).await?;
    fields.extend(object(json!({
        "seconds": args.latency_seconds,
        "target_events_per_sec": per_second,
        "events_per_sec_achieved": rate(published.len(), since(started, last_accepted(&published))),
    })));
    Ok(fields)
}

/// Publishes at `--sustained-rate` events a second, open-loop, noting every second the
/// deliveries offered (events accepted × endpoints) and received so far. The backlog grows when
/// it ends above two seconds' worth of deliveries, or rose at each of the last two samples by
/// more than a tenth of a second's worth (smaller rises are noise).
async fn sustained(args: &Args, stage: Stage) -> anyhow::Result<Map<String, Value>> {
    let per_second = args.sustained_rate;
    let seconds = args.sustained_seconds;
    let offered_per_second = per_second as usize * stage.endpoints;
    eprintln!(
        "{}: sustained: {per_second} events/s to {} endpoint(s) ({offered_per_second} \
         deliveries/s) for {seconds} s",
        stage.backend, stage.endpoints
    );
    let log = Arc::new(Log::default());
    let ((), samples) = tokio::join!(
        publish::at_rate(&stage.api, per_second, Duration::from_secs(seconds), &log),
        sample(&stage.receiver, &log, stage.endpoints, seconds),
    );
    let published = log.take();
    let (_, mut fields) = stage.finish(&published, log.failed(), args).await?;
    fields.extend(backlog_fields(&samples, offered_per_second));
    fields.insert("seconds".into(), seconds.into());
    Ok(fields)
}

/// Deliveries offered and received so far, at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    offered: usize,
    received: usize,
}

impl Sample {
    fn backlog(self) -> usize {
        self.offered.saturating_sub(self.received)
    }
}

/// One sample a second for `seconds` seconds.
async fn sample(receiver: &Receiver, log: &Log, endpoints: usize, seconds: u64) -> Vec<Sample> {
    let second = Duration::from_secs(1);
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    let mut samples = Vec::new();
    for _ in 0..seconds {
        every.tick().await;
        samples.push(Sample {
            offered: log.accepted() * endpoints,
            received: receiver.received(),
        });
    }
    samples
}

fn backlog_fields(samples: &[Sample], offered_per_second: usize) -> Map<String, Value> {
    let backlog: Vec<usize> = samples.iter().map(|s| s.backlog()).collect();
    let mut fields = Map::new();
    for at in [10, 30, 60] {
        if let Some(b) = backlog.get(at - 1) {
            fields.insert(format!("backlog_{at}s"), (*b).into());
        }
    }
    let end = backlog.last().copied().unwrap_or(0);
    let noise = offered_per_second / 10;
    let rising = backlog
        .windows(2)
        .rev()
        .take(2)
        .all(|w| w[1] > w[0] + noise);
    // The received rate once warmed up: over the last 30 s, or the second half of a shorter run.
    let window = (samples.len() / 2).min(30);
    let received = match (samples.last(), samples.iter().rev().nth(window)) {
        (Some(last), Some(then)) => rate(
            last.received.saturating_sub(then.received),
            Duration::from_secs(window as u64),
        ),
        _ => 0.0,
    };
    fields.extend(object(json!({
        "offered_per_sec": offered_per_second,
        "backlog_end": end,
        "backlog_max": backlog.iter().max(),
        "backlog_samples": backlog,
        "received_per_sec_window": received,
        "window_s": window,
        "backlog_grows": end > 2 * offered_per_second || rising,
    })));
    fields
}

/// A Pier with `endpoints` endpoints, all on one receiver.
#[derive(Debug)]
struct Stage {
    backend: Backend,
    endpoints: usize,
    api: Arc<Api>,
    pier: Pier,
    receiver: Receiver,
}

impl Stage {
    async fn new(args: &Args, backend: Backend, endpoints: usize) -> anyhow::Result<Self> {
        let receiver = Receiver::start().await?;
        let pier = Pier::start(args, backend).await?;
        let api = Arc::new(Api::new(pier.base(), pier.key())?);
        for n in 0..endpoints {
            api.create_endpoint(&receiver.url(n)).await?;
        }
        Ok(Self {
            backend,
            endpoints,
            api,
            pier,
            receiver,
        })
    }

    /// Waits (up to `--drain-seconds`) for the deliveries of every accepted event, stops Pier and
    /// the receiver, and joins what arrived with what was published. The fields are those every
    /// measurement reports.
    async fn finish(
        self,
        published: &[Published],
        failed: usize,
        args: &Args,
    ) -> anyhow::Result<(Deliveries, Map<String, Value>)> {
        let expected = published.len() * self.endpoints;
        let waiting = Instant::now();
        let drain = Duration::from_secs(args.drain_seconds);
        let complete = self.receiver.wait_for(expected, drain).await;
        let drain_ms = waiting.elapsed().as_millis() as u64;
        let arrivals = self.receiver.stop();
        if !complete {
            eprintln!(
                "{}: {} of {expected} deliveries arrived within {drain:?} of the last publish",
                self.backend,
                arrivals.first.len()
            );
            explain_missing(&self.api, published, &arrivals, self.endpoints).await;
        }
        let pier_log_lines = self.pier.stop().await?;
        let deliveries = Deliveries::join(published, &arrivals, self.endpoints);
        let mut fields = publish_fields(published, failed);
        fields.extend(deliveries.fields());
        fields.extend(object(json!({
            "duplicates": arrivals.duplicates,
            "unlabelled": arrivals.unlabelled,
            "drain_ms": drain_ms,
            "pier_log_lines": pier_log_lines,
        })));
        Ok((deliveries, fields))
    }
}

/// Shows on stderr what Pier says of a few events whose deliveries did not all arrive.
async fn explain_missing(
    api: &Api,
    published: &[Published],
    arrivals: &Arrivals,
    endpoints: usize,
) {
    let mut arrived: HashMap<&str, usize> = HashMap::new();
    for (id, _) in arrivals.first.keys() {
        *arrived.entry(id).or_default() += 1;
    }
    let short = published
        .iter()
        .filter(|p| arrived.get(p.id.as_str()).copied().unwrap_or(0) < endpoints);
    for event in short.take(MISSING_SHOWN) {
        match api.deliveries(&event.id).await {
            Ok(page) => {
                let states: Vec<Value> = page["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| json!([d["state"], d["attempts"], d["last_error"]]))
                    .collect();
                let states = Value::from(states);
                eprintln!("  {}: [state, attempts, last_error]: {states}", event.id);
            }
            Err(err) => eprintln!("  {}: {err:#}", event.id),
        }
    }
}

fn last_accepted(published: &[Published]) -> Option<Instant> {
    published.iter().map(|p| p.accepted).max()
}

/// From `start` to `end`; zero without an end.
fn since(start: Instant, end: Option<Instant>) -> Duration {
    end.map_or(Duration::ZERO, |end| end.saturating_duration_since(start))
}
