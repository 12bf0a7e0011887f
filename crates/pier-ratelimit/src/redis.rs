//! The shared store: every decision is one atomic Lua script (`decide.lua`) run with `EVALSHA`
//! (the script is sent again when Redis answers `NOSCRIPT`, e.g. after a restart), deciding at
//! Redis's own time so nodes whose clocks disagree still count in the same windows.
//!
//! Keys are `pier:rl:{NAMESPACE:DIGEST}:NAME:ALGORITHM+PERIOD`, where DIGEST is a hash of the
//! caller's key: bounded length, no caller text in Redis, and one hash tag per caller, so a
//! check of several policies for one caller touches one Redis Cluster slot. Every key is written
//! with an expiry at the moment its state runs out.

use std::sync::Arc;

use pier_core::Clock;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use crate::algorithm::Decision;
use crate::policy::Policy;

/// The decision script, loaded once per Redis and run by its hash.
static SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("decide.lua")));

/// The Redis store.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// Decide at this clock's time instead of Redis's (tests move time this way).
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStore")
    }
}

impl RedisStore {
    /// A store on `conn`; concurrent decisions share (and are pipelined on) its connection.
    pub fn new(conn: ConnectionManager) -> Self {
        Self { conn, clock: None }
    }

    /// Decides at `clock`'s time rather than at Redis's: for tests that move time.
    #[must_use]
    pub fn deciding_at(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Decides every policy for `key`; consumes (when `consume`) only if all allow.
    pub async fn decide_all(
        &self,
        policies: &[Policy],
        key: &str,
        cost: i64,
        consume: bool,
    ) -> redis::RedisResult<Vec<Decision>> {
        let digest = digest(key);
        let mut call = SCRIPT.prepare_invoke();
        call.arg(cost).arg(u8::from(consume));
        match &self.clock {
            Some(clock) => call.arg(clock.now().as_micros().div_euclid(1000)),
            None => call.arg(""),
        };
        for policy in policies {
            let q = policy.quota();
            call.key(state_key(policy, &digest))
                .arg(q.algorithm.code())
                .arg(q.limit)
                .arg(q.period_ms)
                .arg(q.capacity);
        }
        let reply: Vec<i64> = call.invoke_async(&mut self.conn.clone()).await?;
        if reply.len() != policies.len() * 4 {
            return Err(redis::RedisError::from((
                redis::ErrorKind::TypeError,
                "the decision script answered with the wrong number of values",
            )));
        }
        Ok(policies
            .iter()
            .zip(reply.chunks_exact(4))
            .map(|(policy, r)| Decision {
                allowed: r[0] == 1,
                limit: policy.spec().limit(),
                remaining: non_negative(r[1]),
                reset_after: std::time::Duration::from_millis(non_negative(r[2])),
                retry_after: std::time::Duration::from_millis(non_negative(r[3])),
            })
            .collect())
    }

    /// Forgets `key`'s state under `policy`.
    pub async fn reset(&self, policy: &Policy, key: &str) -> redis::RedisResult<()> {
        redis::cmd("DEL")
            .arg(state_key(policy, &digest(key)))
            .query_async(&mut self.conn.clone())
            .await
    }
}

/// 128 bits of SHA-256 of the caller's key, in hex.
fn digest(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// The Redis key of a policy's state for a caller; see the module documentation.
fn state_key(policy: &Policy, digest: &str) -> String {
    let scope = policy.scope();
    // The scope is `namespace:name:code+period`; the caller's tag goes after the namespace.
    let rest = &scope[policy.namespace().len() + 1..];
    format!("pier:rl:{{{}:{digest}}}:{rest}", policy.namespace())
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicySpec;

    #[test]
    fn one_callers_keys_share_a_cluster_slot_and_hold_no_caller_text() {
        let spec: PolicySpec = "gcra 10/1s".parse().expect("spec");
        let other: PolicySpec = "fixed_window 100/1h".parse().expect("spec");
        let key = "user {42} } {";
        let digest = digest(key);
        let a = state_key(&Policy::server("per-second", spec), &digest);
        let b = state_key(&Policy::server("per-hour", other), &digest);
        let tag = |k: &str| {
            let open = k.find('{').expect("tag opens");
            let close = k[open..].find('}').expect("tag closes") + open;
            k[open + 1..close].to_owned()
        };
        assert_eq!(tag(&a), tag(&b));
        assert_eq!(a, format!("pier:rl:{{pier:{digest}}}:per-second:g1000"));
        assert!(!a.contains("user"));
        assert_ne!(
            tag(&a),
            tag(&state_key(&Policy::server("x", spec), "other"))
        );
    }
}
