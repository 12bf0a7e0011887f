//! The shared store: decisions run in one atomic Lua script (`decide.lua`) with `EVALSHA` (the
//! script is sent again when Redis answers `NOSCRIPT`, e.g. after a restart), at Redis's own
//! time so nodes whose clocks disagree still count in the same windows.
//!
//! Keys are `pier:rl:{NAMESPACE:DIGEST}:NAME:ALGORITHM+PERIOD`, where DIGEST is a hash of the
//! caller's key: bounded length, no caller text in Redis, and one hash tag per caller, so a
//! check of several policies for one caller touches one Redis Cluster slot. Every key is written
//! with an expiry at the moment its state runs out.
//!
//! By default, decisions that arrive while others are in flight are coalesced: up to
//! [`MAX_BATCH`] of them go in one script call, [`MAX_IN_FLIGHT`] calls at once on the one
//! (pipelined) connection. Each decision stays atomic; the batch only shares a round trip and a
//! script run, which is what bounds a Redis core. A batch spans callers, so its keys span
//! Cluster slots: on Redis Cluster, use [`RedisStore::one_call_per_decision`].

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use pier_core::Clock;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::algorithm::Decision;
use crate::policy::Policy;

/// The decision script, loaded once per Redis and run by its hash.
static SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("decide.lua")));

/// The most decisions in one script call.
pub const MAX_BATCH: usize = 128;
/// The most script calls in flight at once.
pub const MAX_IN_FLIGHT: usize = 8;
/// Decisions waiting for a batch; when full, a decision fails at once (and its failure mode
/// decides) rather than queueing behind a stalled Redis.
const QUEUE: usize = 16 * 1024;

/// The Redis store.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// Decide at this clock's time instead of Redis's (tests move time this way).
    clock: Option<Arc<dyn Clock>>,
    /// The coalescing queue; `None` when every decision is its own call.
    batches: Option<mpsc::Sender<Pending>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStore")
    }
}

/// One decision: its state keys and the script's arguments for it.
#[derive(Debug)]
struct Request {
    keys: Vec<String>,
    cost: i64,
    consume: bool,
    /// Per policy: algorithm code, limit, period in ms, capacity.
    quotas: Vec<(&'static str, i64, i64, i64)>,
}

struct Pending {
    request: Request,
    reply: oneshot::Sender<Result<Vec<i64>, String>>,
}

impl RedisStore {
    /// A store on `conn` that coalesces concurrent decisions (see the module documentation).
    /// Must be called within a Tokio runtime.
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            batches: Some(start_batches(conn.clone(), None)),
            conn,
            clock: None,
        }
    }

    /// A store on `conn` whose every decision is a script call of its own, touching one
    /// Cluster slot.
    pub fn one_call_per_decision(conn: ConnectionManager) -> Self {
        Self {
            conn,
            clock: None,
            batches: None,
        }
    }

    /// Decides at `clock`'s time rather than at Redis's: for tests that move time.
    #[must_use]
    pub fn deciding_at(mut self, clock: Arc<dyn Clock>) -> Self {
        if self.batches.is_some() {
            // The old batcher stops once its queue's last sender is gone.
            self.batches = Some(start_batches(self.conn.clone(), Some(clock.clone())));
        }
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
        let request = Request {
            keys: policies.iter().map(|p| state_key(p, &digest)).collect(),
            cost,
            consume,
            quotas: policies
                .iter()
                .map(|p| {
                    let q = p.quota();
                    (q.algorithm.code(), q.limit, q.period_ms, q.capacity)
                })
                .collect(),
        };
        let reply = match &self.batches {
            Some(queue) => {
                let (tx, rx) = oneshot::channel();
                queue
                    .try_send(Pending { request, reply: tx })
                    .map_err(|_| failure("the queue of decisions for Redis is full".into()))?;
                rx.await
                    .map_err(|_| failure("the Redis batcher stopped".into()))?
                    .map_err(failure)?
            }
            None => {
                let now = self.clock.as_ref().map(|c| now_ms(c.as_ref()));
                invoke(&self.conn, std::slice::from_ref(&request), now).await?
            }
        };
        if reply.len() != policies.len() * 4 {
            return Err(failure(
                "the decision script answered with the wrong number of values".into(),
            ));
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

fn failure(detail: String) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, "rate-limit decision", detail))
}

/// Runs `requests` in one script call; `now` in ms overrides Redis's clock.
async fn invoke(
    conn: &ConnectionManager,
    requests: &[Request],
    now: Option<i64>,
) -> redis::RedisResult<Vec<i64>> {
    let mut call = SCRIPT.prepare_invoke();
    match now {
        Some(ms) => call.arg(ms),
        None => call.arg(""),
    };
    for request in requests {
        call.arg(request.keys.len())
            .arg(request.cost)
            .arg(u8::from(request.consume));
        for (key, (code, limit, period_ms, capacity)) in request.keys.iter().zip(&request.quotas) {
            call.key(key)
                .arg(*code)
                .arg(*limit)
                .arg(*period_ms)
                .arg(*capacity);
        }
    }
    call.invoke_async(&mut conn.clone()).await
}

fn now_ms(clock: &dyn Clock) -> i64 {
    clock.millis()
}

fn start_batches(conn: ConnectionManager, clock: Option<Arc<dyn Clock>>) -> mpsc::Sender<Pending> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run_batches(conn, clock, rx));
    tx
}

/// Takes decisions off the queue in batches and answers each from its batch's reply. The calls
/// in flight are polled here, in one task, so a decision costs no task hops beyond the
/// connection's own; while [`MAX_IN_FLIGHT`] calls are out, new decisions gather into the next.
async fn run_batches(
    conn: ConnectionManager,
    clock: Option<Arc<dyn Clock>>,
    mut queue: mpsc::Receiver<Pending>,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            pending = queue.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(first) = pending else { break };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(pending) => batch.push(pending),
                        Err(_) => break,
                    }
                }
                let now = clock.as_ref().map(|c| now_ms(c.as_ref()));
                in_flight.push(run_batch(conn.clone(), batch, now));
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.next().await.is_some() {}
}

/// One script call for `batch`, each decision answered with its share of the reply.
async fn run_batch(conn: ConnectionManager, batch: Vec<Pending>, now: Option<i64>) {
    let (requests, replies): (Vec<Request>, Vec<_>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let answer = invoke(&conn, &requests, now).await;
    let mut values = answer.as_deref().unwrap_or_default();
    for (request, reply) in requests.iter().zip(replies) {
        let len = request.keys.len() * 4;
        let result = match &answer {
            Ok(_) if values.len() >= len => {
                let (mine, rest) = values.split_at(len);
                values = rest;
                Ok(mine.to_vec())
            }
            Ok(_) => Err("the decision script answered too few values".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        // The caller may have given up (timeout); its decision was still made.
        let _ = reply.send(result);
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
