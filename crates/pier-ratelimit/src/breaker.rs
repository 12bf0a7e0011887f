//! When decisions skip Redis: a circuit breaker scoped to what failed. A failed or timed-out
//! call makes its caller key's decisions skip Redis for [`SKIP_MS`] (one slow key, or one slow
//! Cluster slot, costs that caller one timeout a second and nobody else anything); only when
//! calls keep failing with no success for [`OUTAGE_AFTER_TIMEOUTS`] timeouts is Redis taken to
//! be down, and every decision on the node skips it for [`SKIP_MS`], after which the next
//! decisions probe it again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// How long decisions skip Redis after a failure, in ms.
pub const SKIP_MS: i64 = 1000;
/// Calls failing with no success in between for this many timeouts mean Redis is down, not one
/// call or one key: a single stalled call fails the decisions waiting with it within about two.
pub const OUTAGE_AFTER_TIMEOUTS: u32 = 4;
/// The most caller keys remembered as skipping; more failing keys than this is an outage.
const MAX_SKIPPING_KEYS: usize = 10_000;

#[derive(Debug)]
pub struct Breaker {
    /// How long failures may go on before they count as an outage, in ms.
    outage_after_ms: i64,
    /// Per caller key, until when (ms) its decisions skip Redis.
    keys: Mutex<HashMap<String, i64>>,
    /// The latest of those, so decisions look in `keys` (and take its lock) only while some
    /// key may still skip.
    keys_until: AtomicI64,
    /// Until when (ms) every decision skips Redis.
    all_until: AtomicI64,
    /// Since when (ms) every call has failed; `i64::MAX` while Redis answers.
    failing_since: AtomicI64,
    /// Whether an outage is on, so it is logged once each way.
    outage: AtomicBool,
}

impl Breaker {
    pub fn new(timeout: Duration) -> Self {
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        Self {
            outage_after_ms: timeout_ms.saturating_mul(i64::from(OUTAGE_AFTER_TIMEOUTS)),
            keys: Mutex::default(),
            keys_until: AtomicI64::new(i64::MIN),
            all_until: AtomicI64::new(i64::MIN),
            failing_since: AtomicI64::new(i64::MAX),
            outage: AtomicBool::new(false),
        }
    }

    /// Whether a decision for `key` at `now` skips Redis.
    pub fn skips(&self, key: &str, now: i64) -> bool {
        if now < self.all_until.load(Ordering::Relaxed) {
            return true;
        }
        now < self.keys_until.load(Ordering::Relaxed)
            && self.lock().get(key).is_some_and(|&until| now < until)
    }

    /// Redis decided: failures so far were not an outage, or it is over.
    pub fn succeeded(&self) {
        if self.failing_since.load(Ordering::Relaxed) != i64::MAX {
            self.failing_since.store(i64::MAX, Ordering::Relaxed);
        }
        if self.outage.load(Ordering::Relaxed) && self.outage.swap(false, Ordering::Relaxed) {
            tracing::info!("rate limits: Redis answers again; decisions are shared");
        }
    }

    /// A call for `key` failed at `now` with `error`.
    pub fn failed(&self, key: &str, now: i64, error: &str) {
        let since = self
            .failing_since
            .fetch_min(now, Ordering::Relaxed)
            .min(now);
        let until = now.saturating_add(SKIP_MS);
        let crowded = {
            let mut keys = self.lock();
            if keys.len() >= MAX_SKIPPING_KEYS {
                keys.retain(|_, &mut skip_until| now < skip_until);
            }
            let crowded = keys.len() >= MAX_SKIPPING_KEYS;
            if !crowded {
                keys.insert(key.to_owned(), until);
                self.keys_until.fetch_max(until, Ordering::Relaxed);
            }
            crowded
        };
        if crowded || now.saturating_sub(since) >= self.outage_after_ms {
            self.all_until.fetch_max(until, Ordering::Relaxed);
            if !self.outage.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    %error,
                    "rate limits: Redis cannot decide; each policy's failure_mode decides until it answers"
                );
            }
        } else {
            tracing::debug!(%error, "rate limits: Redis failed one decision; its caller skips Redis a second");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
