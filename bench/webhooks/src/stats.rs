//! Joining what was published with what arrived, and the figures reported from it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::api::Published;
use crate::receiver::Arrivals;

/// The deliveries of the accepted events, each timed from publish to arrival.
#[derive(Debug)]
pub struct Deliveries {
    /// Publish → delivered of each, sorted, in microseconds.
    latency_us: Vec<u64>,
    /// Deliveries per endpoint number.
    per_endpoint: Vec<usize>,
    /// When the last one arrived.
    pub last: Option<Instant>,
    /// Accepted events × endpoints.
    expected: usize,
}

impl Deliveries {
    pub fn join(published: &[Published], arrivals: &Arrivals, endpoints: usize) -> Self {
        let sent: HashMap<&str, Instant> =
            published.iter().map(|p| (p.id.as_str(), p.sent)).collect();
        let mut latency_us = Vec::with_capacity(arrivals.first.len());
        let mut per_endpoint = vec![0; endpoints];
        let mut last = None;
        for ((id, endpoint), &at) in &arrivals.first {
            // Events whose publication failed on the client's side may still be delivered.
            let Some(sent) = sent.get(id.as_str()) else {
                continue;
            };
            latency_us.push(micros(at.saturating_duration_since(*sent)));
            if let Some(count) = per_endpoint.get_mut(*endpoint) {
                *count += 1;
            }
            last = last.max(Some(at));
        }
        latency_us.sort_unstable();
        Self {
            latency_us,
            per_endpoint,
            last,
            expected: published.len() * endpoints,
        }
    }

    pub fn count(&self) -> usize {
        self.latency_us.len()
    }

    /// `deliveries`, `missing`, the latency quantiles and the spread across endpoints.
    pub fn fields(&self) -> Map<String, Value> {
        let us = &self.latency_us;
        let fields = json!({
            "deliveries": self.count(),
            "missing": self.expected.saturating_sub(self.count()),
            "p50_ms": percentile_ms(us, 0.50), "p95_ms": percentile_ms(us, 0.95),
            "p99_ms": percentile_ms(us, 0.99), "max_ms": percentile_ms(us, 1.0),
            "per_endpoint_min": self.per_endpoint.iter().min(),
            "per_endpoint_max": self.per_endpoint.iter().max(),
        });
        object(fields)
    }
}

/// `events` accepted, `publish_failures`, and the publish call's own p50/p99 (sent → 202):
/// the share of the latency spent before the event was stored.
pub fn publish_fields(published: &[Published], failed: usize) -> Map<String, Value> {
    let mut us: Vec<u64> = published
        .iter()
        .map(|p| micros(p.accepted - p.sent))
        .collect();
    us.sort_unstable();
    object(json!({
        "events": published.len(), "publish_failures": failed,
        "publish_p50_ms": percentile_ms(&us, 0.50), "publish_p99_ms": percentile_ms(&us, 0.99),
    }))
}

/// The fields of a JSON object (none for any other value).
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The `p` quantile (0 to 1) of sorted microsecond figures, in milliseconds; 0 when empty.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    let Some(last) = sorted_us.len().checked_sub(1) else {
        return 0.0;
    };
    let at = ((last as f64) * p).round() as usize;
    sorted_us.get(at.min(last)).copied().unwrap_or(0) as f64 / 1000.0
}

/// Microseconds in `d`, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `count` per second over `elapsed`; 0 over no time.
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}
