//! The [`Limiter`]: decides on the local store, or on Redis when one is configured, and applies
//! each policy's failure mode when Redis does not answer within the timeout. After a failure,
//! the failing caller's decisions skip Redis for a second, and every decision does once Redis
//! looks down (see [`crate::breaker`]), so a stalled Redis costs one timeout a second, not one
//! per request.
//!
//! A call that timed out may still be applied in Redis, so the decision it was for is never
//! also charged on the local store: it counts once (in Redis, if the call landed) or not at all.

use std::sync::Arc;
use std::time::Duration;

use pier_core::Clock;

use crate::algorithm::Decision;
use crate::breaker::Breaker;
use crate::local::LocalStore;
use crate::policy::{FailureMode, Policy};
use crate::redis::RedisStore;

/// How long a decision waits for Redis before its policy's failure mode decides, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// What a refusal by `fail_closed` tells the caller to wait.
pub const FAIL_CLOSED_RETRY: Duration = Duration::from_secs(1);

/// A request the limiter cannot decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("cost must be at least 1")]
    ZeroCost,
    #[error(
        "cost {cost} exceeds the capacity of policy `{policy}` ({capacity}), so it could never be allowed"
    )]
    CostOverCapacity {
        policy: String,
        cost: u64,
        capacity: u64,
    },
    #[error("no policy to check")]
    NoPolicy,
}

/// The outcome of checking several policies at once: allowed only if every one allows, and then
/// every one consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// One decision per policy, in the order asked.
    pub decisions: Vec<Decision>,
}

/// Decides requests against policies; cheap to share (`Arc`) across tasks.
#[derive(Debug)]
pub struct Limiter {
    local: LocalStore,
    redis: Option<RedisStore>,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    /// Which decisions skip a failing Redis: their failure modes decide at once instead of
    /// every request waiting out the timeout.
    breaker: Breaker,
}

impl Limiter {
    /// A limiter on this process's memory alone, holding at most about `max_keys` keys.
    pub fn local(clock: Arc<dyn Clock>, max_keys: usize) -> Self {
        Self {
            local: LocalStore::new(max_keys),
            redis: None,
            timeout: DEFAULT_TIMEOUT,
            clock,
            breaker: Breaker::new(DEFAULT_TIMEOUT),
        }
    }

    /// Decides on Redis, shared by every node; the local store serves `local` failure modes.
    #[must_use]
    pub fn with_redis(mut self, store: RedisStore, timeout: Duration) -> Self {
        self.redis = Some(store);
        self.timeout = timeout;
        self.breaker = Breaker::new(timeout);
        self
    }

    /// Spends `cost` units of `key`'s quota under `policy`, if it allows.
    pub async fn check(
        &self,
        policy: &Policy,
        key: &str,
        cost: u64,
    ) -> Result<Decision, LimitError> {
        let cost = check_cost(std::slice::from_ref(policy), cost)?;
        let decision = match &self.redis {
            None => self.local.decide(policy, key, cost, true, self.now_ms()),
            Some(redis) => {
                self.decide_shared(redis, std::slice::from_ref(policy), key, cost, true)
                    .await
                    .decisions[0]
            }
        };
        policy.count(decision.allowed);
        Ok(decision)
    }

    /// What [`check`](Self::check) would answer, without spending anything.
    pub async fn peek(
        &self,
        policy: &Policy,
        key: &str,
        cost: u64,
    ) -> Result<Decision, LimitError> {
        Ok(self
            .check_all(std::slice::from_ref(policy), key, cost, false)
            .await?
            .decisions[0])
    }

    /// Checks every policy for one caller; when `consume`, spends on all of them only if all
    /// allow (and on none otherwise).
    pub async fn check_all(
        &self,
        policies: &[Policy],
        key: &str,
        cost: u64,
        consume: bool,
    ) -> Result<Verdict, LimitError> {
        let cost = check_cost(policies, cost)?;
        let verdict = match &self.redis {
            None => verdict(
                self.local
                    .decide_all(policies, key, cost, consume, self.now_ms()),
            ),
            Some(redis) => {
                self.decide_shared(redis, policies, key, cost, consume)
                    .await
            }
        };
        if consume {
            for (policy, decision) in policies.iter().zip(&verdict.decisions) {
                policy.count(decision.allowed);
            }
        }
        Ok(verdict)
    }

    /// Makes `key`'s quota under `policy` whole again, in every store.
    pub async fn reset(&self, policy: &Policy, key: &str) -> Result<(), redis::RedisError> {
        self.local.reset(policy, key);
        match &self.redis {
            Some(redis) => redis.reset(policy, key).await,
            None => Ok(()),
        }
    }

    async fn decide_shared(
        &self,
        redis: &RedisStore,
        policies: &[Policy],
        key: &str,
        cost: i64,
        consume: bool,
    ) -> Verdict {
        if self.breaker.skips(key, self.now_ms()) {
            return self.decide_without_redis(policies, key, cost, consume);
        }
        let error = match tokio::time::timeout(
            self.timeout,
            redis.decide_all(policies, key, cost, consume),
        )
        .await
        {
            Ok(Ok(decisions)) => {
                self.breaker.succeeded();
                return verdict(decisions);
            }
            Ok(Err(e)) => {
                metrics::counter!("pier_ratelimit_store_errors_total", "error" => "failed")
                    .increment(1);
                e.to_string()
            }
            Err(_) => {
                metrics::counter!("pier_ratelimit_store_errors_total", "error" => "timeout")
                    .increment(1);
                format!("no answer within {} ms", self.timeout.as_millis())
            }
        };
        self.breaker.failed(key, self.now_ms(), &error);
        // Redis may still apply the call: charged here too, the decision would count twice.
        self.decide_without_redis(policies, key, cost, false)
    }

    /// Each policy by its failure mode; the `local` ones on the local store, all-or-nothing,
    /// spending there only when `charge` and nothing when a `fail_closed` one refuses.
    fn decide_without_redis(
        &self,
        policies: &[Policy],
        key: &str,
        cost: i64,
        charge: bool,
    ) -> Verdict {
        let closed = policies
            .iter()
            .any(|p| p.spec().failure_mode() == FailureMode::FailClosed);
        let local: Vec<Policy> = policies
            .iter()
            .filter(|p| p.spec().failure_mode() == FailureMode::Local)
            .cloned()
            .collect();
        let mut local_decisions = self
            .local
            .decide_all(&local, key, cost, charge && !closed, self.now_ms())
            .into_iter();
        let decisions = policies
            .iter()
            .map(|p| {
                let mode = p.spec().failure_mode();
                metrics::counter!("pier_ratelimit_fallback_decisions_total", "mode" => mode.as_str())
                    .increment(1);
                match mode {
                    FailureMode::Local => local_decisions
                        .next()
                        .expect("one local decision per local policy"),
                    FailureMode::FailOpen => Decision {
                        allowed: true,
                        limit: p.spec().limit(),
                        remaining: p.spec().capacity(),
                        reset_after: Duration::ZERO,
                        retry_after: Duration::ZERO,
                    },
                    FailureMode::FailClosed => Decision {
                        allowed: false,
                        limit: p.spec().limit(),
                        remaining: 0,
                        reset_after: FAIL_CLOSED_RETRY,
                        retry_after: FAIL_CLOSED_RETRY,
                    },
                }
            })
            .collect();
        verdict(decisions)
    }

    fn now_ms(&self) -> i64 {
        self.clock.millis()
    }
}

fn verdict(decisions: Vec<Decision>) -> Verdict {
    Verdict {
        allowed: decisions.iter().all(|d| d.allowed),
        decisions,
    }
}

/// Cost must be at least 1 and fit every policy's capacity.
fn check_cost(policies: &[Policy], cost: u64) -> Result<i64, LimitError> {
    if policies.is_empty() {
        return Err(LimitError::NoPolicy);
    }
    if cost == 0 {
        return Err(LimitError::ZeroCost);
    }
    if let Some(p) = policies.iter().find(|p| cost > p.spec().capacity()) {
        return Err(LimitError::CostOverCapacity {
            policy: p.name().to_owned(),
            cost,
            capacity: p.spec().capacity(),
        });
    }
    // Capacity is at most a billion, so the cost fits.
    Ok(i64::try_from(cost).unwrap_or(i64::MAX))
}
