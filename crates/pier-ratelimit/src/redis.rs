//! The shared store: decisions run in one atomic Lua script (`decide.lua`) with `EVALSHA` (the
//! script is sent again when Redis answers `NOSCRIPT`, e.g. after a restart), at Redis's own
//! time so nodes whose clocks disagree still count in the same windows. The script decides and
//! writes; it answers with the time and the state each decision read, and the answer a caller
//! gets is computed here from those by [`algorithm::decide`], as the local store computes it.
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

use crate::algorithm::{self, Decision, Quota, State};
use crate::policy::{Algorithm, Policy};

/// The decision script, loaded once per Redis and run by its hash.
static SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("decide.lua")));

/// The most decisions in one script call.
pub const MAX_BATCH: usize = 128;
/// The most script calls in flight at once: one running in Redis while the next is on the wire.
/// More would only split the waiting decisions into smaller calls, and a call's fixed cost in
/// Redis is several decisions' worth.
pub const MAX_IN_FLIGHT: usize = 2;
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

/// One decision: its policies' quotas and state keys.
#[derive(Debug)]
struct Request {
    keys: Vec<String>,
    quotas: Vec<Quota>,
    cost: i64,
    consume: bool,
}

type Answer = Result<Vec<Decision>, String>;

struct Pending {
    request: Request,
    reply: oneshot::Sender<Answer>,
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
            quotas: policies.iter().map(|p| *p.quota()).collect(),
            cost,
            consume,
        };
        match &self.batches {
            Some(queue) => {
                let (tx, rx) = oneshot::channel();
                queue
                    .try_send(Pending { request, reply: tx })
                    .map_err(|_| failure("the queue of decisions for Redis is full".into()))?;
                rx.await
                    .map_err(|_| failure("the Redis batcher stopped".into()))?
                    .map_err(failure)
            }
            None => {
                let now = self.clock.as_ref().map(|c| c.millis());
                let requests = std::slice::from_ref(&request);
                let (reply, offsets) = invoke(&self.conn, requests, now).await?;
                answer(&request, &reply, offsets[0]).map_err(failure)
            }
        }
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

/// Runs `requests` in one script call; `now` in ms overrides Redis's clock. Returns the reply
/// and where each request's states start in it.
async fn invoke(
    conn: &ConnectionManager,
    requests: &[Request],
    now: Option<i64>,
) -> redis::RedisResult<(Reply, Vec<usize>)> {
    let (call, offsets) = invocation(requests, now);
    let reply = call.invoke_async(&mut conn.clone()).await?;
    Ok((Reply::parse(reply).map_err(failure)?, offsets))
}

/// The script's arguments for `requests` (see `decide.lua`): the distinct policies once, then
/// the requests in runs of one shape (policies, cost, consume), so the script parses a run's
/// numbers once. Returns each request's first key's position among the call's keys.
fn invocation(
    requests: &[Request],
    now: Option<i64>,
) -> (redis::ScriptInvocation<'static>, Vec<usize>) {
    // Each run: the requests of one shape, in order of first appearance.
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let alike = |run: &&mut Vec<usize>| {
            let first = &requests[run[0]];
            first.quotas == r.quotas && first.cost == r.cost && first.consume == r.consume
        };
        match runs.iter_mut().find(alike) {
            Some(run) => run.push(i),
            None => runs.push(vec![i]),
        }
    }
    let mut quotas: Vec<Quota> = Vec::new();
    // Per run, its policies' positions in `quotas`, 1-based.
    let positions: Vec<Vec<usize>> = runs
        .iter()
        .map(|run| {
            requests[run[0]]
                .quotas
                .iter()
                .map(|q| match quotas.iter().position(|known| known == q) {
                    Some(i) => i + 1,
                    None => {
                        quotas.push(*q);
                        quotas.len()
                    }
                })
                .collect()
        })
        .collect();
    let mut call = SCRIPT.prepare_invoke();
    match now {
        Some(ms) => call.arg(ms),
        None => call.arg(""),
    };
    call.arg(quotas.len());
    for q in &quotas {
        call.arg(q.algorithm.code())
            .arg(q.limit)
            .arg(q.period_ms)
            .arg(q.capacity);
    }
    let mut offsets = vec![0; requests.len()];
    let mut next = 0;
    for (run, positions) in runs.iter().zip(&positions) {
        let first = &requests[run[0]];
        call.arg(run.len())
            .arg(positions.len())
            .arg(first.cost)
            .arg(u8::from(first.consume))
            .arg(positions);
        for &i in run {
            offsets[i] = next;
            next += requests[i].keys.len();
            call.key(&requests[i].keys);
        }
    }
    (call, offsets)
}

/// The script's answer: Redis's time and, per key, the state its decision read.
struct Reply {
    now: i64,
    states: Vec<redis::Value>,
}

impl Reply {
    fn parse(value: redis::Value) -> Result<Self, String> {
        let redis::Value::Array(mut items) = value else {
            return Err("the decision script answered with something other than a list".into());
        };
        let Some(redis::Value::Int(now)) = items.first().cloned() else {
            return Err("the decision script's answer does not start with the time".into());
        };
        items.remove(0);
        Ok(Self { now, states: items })
    }
}

/// `request`'s decisions, from its states at `offset` in `reply`: as the script decided them,
/// all or nothing.
fn answer(request: &Request, reply: &Reply, offset: usize) -> Answer {
    let raw = reply
        .states
        .get(offset..offset + request.keys.len())
        .ok_or("the decision script answered too few states")?;
    let states = request
        .quotas
        .iter()
        .zip(raw)
        .map(|(quota, value)| decode(quota, value))
        .collect::<Result<Vec<_>, _>>()?;
    let decide = |consume: bool| -> Vec<Decision> {
        request
            .quotas
            .iter()
            .zip(&states)
            .map(|(q, &s)| algorithm::decide(q, s, reply.now, request.cost, consume).decision)
            .collect()
    };
    let peeked = decide(false);
    Ok(if request.consume && peeked.iter().all(|d| d.allowed) {
        decide(true)
    } else {
        peeked
    })
}

/// A stored state: little-endian doubles, (tat, frac) for GCRA, (index, count, previous) for the
/// windows. The doubles hold integers below 2^53, so the conversions are exact.
fn decode(quota: &Quota, value: &redis::Value) -> Result<Option<State>, String> {
    let bytes = match value {
        redis::Value::Nil => return Ok(None),
        redis::Value::BulkString(bytes) => bytes,
        _ => return Err("the decision script answered a state that is not a string".into()),
    };
    let mut numbers = bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()) as i64);
    let mut next = || numbers.next().unwrap_or_default();
    match (quota.algorithm, bytes.len()) {
        (Algorithm::Gcra, 16) => Ok(Some(State::Gcra {
            tat: next(),
            frac: next(),
        })),
        (Algorithm::FixedWindow | Algorithm::SlidingWindow, 24) => Ok(Some(State::Window {
            index: next(),
            count: next(),
            previous: next(),
        })),
        _ => Err(format!(
            "a stored rate-limit state has {} bytes, which no state of its algorithm has",
            bytes.len()
        )),
    }
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
                let now = clock.as_ref().map(|c| c.millis());
                in_flight.push(run_batch(conn.clone(), batch, now));
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.next().await.is_some() {}
}

/// One script call for `batch`, each decision answered from its share of the reply.
async fn run_batch(conn: ConnectionManager, batch: Vec<Pending>, now: Option<i64>) {
    let (requests, replies): (Vec<Request>, Vec<_>) =
        batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let called = invoke(&conn, &requests, now).await;
    for (i, (request, reply)) in requests.iter().zip(replies).enumerate() {
        let result = match &called {
            Ok((values, offsets)) => answer(request, values, offsets[i]),
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

    /// One call with the same key twice and two shapes: the runs regroup the decisions, and
    /// each still sees the state the one before it on its key left.
    #[tokio::test]
    #[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
    async fn one_call_decides_in_order_even_for_one_key_twice() {
        let client = redis::Client::open(pier_testkit::redis_url()).expect("a Redis URL");
        let conn = ConnectionManager::new(client).await.expect("connects");
        let gcra = Policy::server("twice-g", "gcra 1/60s".parse().expect("spec"));
        let window = Policy::server("twice-w", "fixed_window 2/60s".parse().expect("spec"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos();
        let digest = digest(&format!("twice-{nanos}"));
        let request = |policy: &Policy| Request {
            keys: vec![state_key(policy, &digest)],
            quotas: vec![*policy.quota()],
            cost: 1,
            consume: true,
        };
        let requests = [&gcra, &window, &gcra, &window, &window].map(request);
        let (reply, offsets) = invoke(&conn, &requests, None).await.expect("decides");
        let allowed: Vec<bool> = requests
            .iter()
            .zip(&offsets)
            .map(|(r, &at)| answer(r, &reply, at).expect("an answer")[0].allowed)
            .collect();
        assert_eq!(allowed, [true, true, false, true, false]);
    }
}
