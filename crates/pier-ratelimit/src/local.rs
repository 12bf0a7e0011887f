//! The in-process store: state per (policy, key) in sharded hash tables, each behind its own
//! mutex, held only for one lookup and one update (no allocation on a known key, no `await`).
//!
//! Memory is bounded two ways. State that has run out (a TAT in the past, a window that ended)
//! means the same as no state, so a shard drops such entries at most once a second while it is
//! in use, and at once when it is full: idle keys cost nothing after their period. A shard also
//! holds at most its share of `max_keys`; when it is full of live entries, a new key takes the
//! place of the entry nearest to running out among a sample, so the caller forgotten gets back
//! at most what it would have regained soonest. Evictions are counted in
//! `pier_ratelimit_local_evictions_total`: when they grow, raise `max_keys`.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;

use crate::algorithm::{Decision, Outcome, State, decide};
use crate::policy::Policy;

/// Shards (a power of two): enough that two cores rarely meet on one lock.
const SHARDS: usize = 64;
/// How often, at most, a shard in use drops its run-out entries (ms).
const SWEEP_EVERY_MS: i64 = 1000;
/// How many entries a full shard looks at to choose one to evict.
const EVICTION_SAMPLE: usize = 16;

/// The local store; see the module documentation.
#[derive(Debug)]
pub struct LocalStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::quality::RandomState,
    shard_cap: usize,
}

#[derive(Debug, Default)]
struct Shard {
    table: HashTable<Entry>,
    next_sweep: i64,
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    /// The policy's scope followed by the key.
    text: Box<str>,
    split: usize,
    state: State,
    expires_at: i64,
}

impl Entry {
    fn is(&self, scope: &str, key: &str) -> bool {
        self.text.len() == scope.len() + key.len()
            && self.text[..self.split] == *scope
            && self.text[self.split..] == *key
    }
}

impl LocalStore {
    /// A store keeping at most about `max_keys` keys (each shard holds its share).
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::quality::RandomState::default(),
            shard_cap: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// Decides one policy for `key` at `now` (ms since the epoch).
    pub fn decide(
        &self,
        policy: &Policy,
        key: &str,
        cost: i64,
        consume: bool,
        now: i64,
    ) -> Decision {
        let (scope, quota) = (policy.scope(), policy.quota());
        let hash = self.hash(scope, key);
        let mut shard = self.lock(shard_of(hash));
        // A known key: one lookup, updated in place.
        if let Some(entry) = shard.table.find_mut(hash, |e| e.is(scope, key)) {
            let out = decide(quota, Some(entry.state), now, cost, consume);
            if let Some(next) = out.next {
                entry.state = next;
                entry.expires_at = out.expires_at;
            }
            return out.decision;
        }
        let out = decide(quota, None, now, cost, consume);
        shard.store(hash, scope, key, &out, now, self.shard_cap);
        out.decision
    }

    /// Decides every policy for `key` and consumes (when `consume`) only if all allow: the
    /// shards involved are locked together, in order, so no other caller slips in between.
    pub fn decide_all(
        &self,
        policies: &[Policy],
        key: &str,
        cost: i64,
        consume: bool,
        now: i64,
    ) -> Vec<Decision> {
        let hashes: Vec<u64> = policies.iter().map(|p| self.hash(p.scope(), key)).collect();
        let mut order: Vec<usize> = hashes.iter().map(|&h| shard_of(h)).collect();
        order.sort_unstable();
        order.dedup();
        // Each policy's guard, by position in `order`.
        let slots: Vec<usize> = hashes
            .iter()
            .map(|&h| order.binary_search(&shard_of(h)).unwrap_or_default())
            .collect();
        let mut guards: Vec<MutexGuard<'_, Shard>> = order.iter().map(|&i| self.lock(i)).collect();
        let peeked: Vec<Outcome> = policies
            .iter()
            .zip(&hashes)
            .zip(&slots)
            .map(|((p, &h), &slot)| {
                let state = guards[slot].state(h, p.scope(), key);
                decide(p.quota(), state, now, cost, false)
            })
            .collect();
        if !(consume && peeked.iter().all(|o| o.decision.allowed)) {
            return peeked.into_iter().map(|o| o.decision).collect();
        }
        policies
            .iter()
            .zip(&hashes)
            .zip(&slots)
            .map(|((p, &h), &slot)| {
                let shard = &mut guards[slot];
                let out = decide(p.quota(), shard.state(h, p.scope(), key), now, cost, true);
                shard.store(h, p.scope(), key, &out, now, self.shard_cap);
                out.decision
            })
            .collect()
    }

    /// Forgets `key`'s state under `policy`: its quota is whole again.
    pub fn reset(&self, policy: &Policy, key: &str) {
        let hash = self.hash(policy.scope(), key);
        let mut shard = self.lock(shard_of(hash));
        if let Ok(entry) = shard.table.find_entry(hash, |e| e.is(policy.scope(), key)) {
            entry.remove();
        }
    }

    /// How many keys the store holds now (run-out entries included until swept).
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).table.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys the store holds.
    pub fn capacity(&self) -> usize {
        self.shard_cap * SHARDS
    }

    fn hash(&self, scope: &str, key: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(scope.as_bytes());
        h.write(key.as_bytes());
        h.write_usize(scope.len());
        h.finish()
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave an entry half-written (updates are single
        // assignments), so a poisoned lock is still sound to use.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The shard of a hash: bits the table itself does not use for its buckets' order.
fn shard_of(hash: u64) -> usize {
    (hash >> 40) as usize & (SHARDS - 1)
}

impl Shard {
    fn state(&self, hash: u64, scope: &str, key: &str) -> Option<State> {
        self.table.find(hash, |e| e.is(scope, key)).map(|e| e.state)
    }

    fn store(&mut self, hash: u64, scope: &str, key: &str, out: &Outcome, now: i64, cap: usize) {
        let Some(state) = out.next else { return };
        if let Some(entry) = self.table.find_mut(hash, |e| e.is(scope, key)) {
            entry.state = state;
            entry.expires_at = out.expires_at;
            return;
        }
        // At most one sweep a second, even when full: under churn a full shard evicts one entry
        // per insert instead of scanning itself every time.
        if now >= self.next_sweep {
            self.sweep(now);
        }
        if self.table.len() >= cap {
            self.evict_one();
        }
        let text = [scope, key].concat().into_boxed_str();
        let entry = Entry {
            hash,
            text,
            split: scope.len(),
            state,
            expires_at: out.expires_at,
        };
        self.table.insert_unique(hash, entry, |e| e.hash);
    }

    /// Drops every entry that has run out.
    fn sweep(&mut self, now: i64) {
        let before = self.table.len();
        self.table.retain(|e| e.expires_at > now);
        let dropped = before - self.table.len();
        if dropped > 0 {
            metrics::counter!("pier_ratelimit_local_evictions_total", "reason" => "expired")
                .increment(dropped as u64);
        }
        self.next_sweep = now + SWEEP_EVERY_MS;
    }

    /// Makes room in a shard full of live entries: the sampled entry nearest to running out goes.
    fn evict_one(&mut self) {
        let victim = self
            .table
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|e| e.expires_at)
            .map(|e| (e.hash, e.text.clone()));
        if let Some((hash, text)) = victim
            && let Ok(entry) = self.table.find_entry(hash, |e| e.text == text)
        {
            entry.remove();
            metrics::counter!("pier_ratelimit_local_evictions_total", "reason" => "full")
                .increment(1);
        }
    }
}
