//! A bounded in-process cache of hot reads (API keys by the hash of their secret today; links by
//! slug next), on moka, with what a cache in front of a database needs:
//!
//! - **Single-flight loading.** Concurrent misses of one key share one load, so a cold key costs
//!   the database one read however many requests ask for it at once.
//! - **Negative entries.** "Not found" is cached too, for a shorter TTL, so unknown keys do not
//!   reach the database on every request.
//! - **TTL with jitter.** Each entry lives `ttl` less up to `jitter` of it, at random, so entries
//!   loaded together do not all expire (and reload) together; never longer than `ttl`, which is
//!   the bound on staleness a caller may rely on when it cannot invalidate.
//! - **Invalidation that no load in flight can undo.** A load that read the old row just before a
//!   write committed would otherwise put it back after the write's invalidation. Every entry
//!   records its shard's epoch when its load starts, [`Cache::invalidate`] moves that epoch, and
//!   an entry whose epoch is behind is never served. The price: invalidating a key also retires
//!   the entries of its shard loaded before, one in [`SHARDS`] of the cache.
//! - **Time from a [`Clock`]**, so tests move it; moka's own expiry only frees the memory.
//! - **Metrics**, labelled with the cache's name: `pier_cache_hits_total`,
//!   `pier_cache_misses_total`, `pier_cache_loads_total{outcome="found|absent|failed"}` and
//!   `pier_cache_evictions_total{reason="size|expired"}`.
//!
//! Invalidation across nodes: a write calls [`Cache::forget_on_commit`] in its transaction
//! (this node forgets at once after the commit, the others on a PostgreSQL notification sent
//! in it), and every node adds [`Cache::listen`] to its [`Relay`]. An owner with another channel
//! (Redis, say) calls [`Cache::invalidate`] (or [`Cache::clear`], when it may have missed some)
//! from it.

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::Counter;
use moka::Expiry;
use moka::notification::RemovalCause;
use pier_core::{Clock, Timestamp};
use pier_db::{Notice, Relay, Tx};
use tracing::Instrument;

/// Invalidation epochs per cache; an invalidation retires this share of entries loaded before it.
pub const SHARDS: usize = 4096;

/// How a cache keeps its entries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The most entries held; beyond it, moka evicts the least likely to be used again.
    pub capacity: u64,
    /// How long a found value is served at most.
    pub ttl: Duration,
    /// How long "not found" is served at most.
    pub negative_ttl: Duration,
    /// The share of `ttl` (0 to 1) an entry's life is shortened by, at random.
    pub jitter: f64,
}

#[derive(Debug, Clone)]
struct Entry<V> {
    /// `None`: the key was looked up and not found.
    value: Option<V>,
    expires: Timestamp,
    /// How long moka keeps it (the same life, for the memory).
    life: Duration,
    /// The cache's and the shard's epochs when the load started.
    generation: u64,
    epoch: u64,
}

/// Tells moka each entry's own life.
struct Life;

impl<V> Expiry<String, Entry<V>> for Life {
    fn expire_after_create(&self, _: &String, entry: &Entry<V>, _: Instant) -> Option<Duration> {
        Some(entry.life)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry<V>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.life)
    }
}

#[derive(Debug)]
struct Counters {
    hits: Counter,
    misses: Counter,
    found: Counter,
    absent: Counter,
    failed: Counter,
}

/// A named cache of `V` by string key; cheap to clone (clones share the entries).
#[derive(Clone)]
pub struct Cache<V> {
    name: &'static str,
    entries: moka::future::Cache<String, Entry<V>>,
    settings: Settings,
    clock: Arc<dyn Clock>,
    /// Moved by [`Cache::clear`].
    generation: Arc<AtomicU64>,
    /// Moved by [`Cache::invalidate`], per shard of keys.
    epochs: Arc<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
    counters: Arc<Counters>,
}

impl<V> std::fmt::Debug for Cache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("settings", &self.settings)
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl<V: Clone + Send + Sync + 'static> Cache<V> {
    /// A cache whose metrics carry `name` (a fixed name per cache, so labels stay bounded).
    pub fn new(name: &'static str, settings: Settings, clock: Arc<dyn Clock>) -> Self {
        let evicted = |reason: &'static str| metrics::counter!("pier_cache_evictions_total", "cache" => name, "reason" => reason);
        let (size, expired) = (evicted("size"), evicted("expired"));
        let entries = moka::future::Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(Life)
            .eviction_listener(move |_, _, cause| match cause {
                RemovalCause::Size => size.increment(1),
                RemovalCause::Expired => expired.increment(1),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        let loaded = |outcome: &'static str| metrics::counter!("pier_cache_loads_total", "cache" => name, "outcome" => outcome);
        Self {
            name,
            entries,
            settings,
            clock,
            generation: Arc::new(AtomicU64::new(0)),
            epochs: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
            counters: Arc::new(Counters {
                hits: metrics::counter!("pier_cache_hits_total", "cache" => name),
                misses: metrics::counter!("pier_cache_misses_total", "cache" => name),
                found: loaded("found"),
                absent: loaded("absent"),
                failed: loaded("failed"),
            }),
        }
    }

    /// The value of `key`: from the cache when it holds a live entry, else from `load` (once for
    /// all concurrent callers), which answers `None` when there is no such value. A failed load
    /// is not cached; every caller that waited on it gets its error.
    pub async fn get_or_load<F, Fut, E>(&self, key: &str, load: F) -> Result<Option<V>, Arc<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
        E: Send + Sync + 'static,
    {
        let now = self.clock.now();
        let shard = self.shard(key);
        if let Some(entry) = self.entries.get(key).await {
            if self.is_live(&entry, shard, now) {
                self.counters.hits.increment(1);
                return Ok(entry.value);
            }
            self.entries.invalidate(key).await;
        }
        self.counters.misses.increment(1);
        let (generation, epoch) = (
            self.generation.load(Ordering::Acquire),
            self.epochs[shard].load(Ordering::Acquire),
        );
        // A load already in flight may have started before an invalidation this caller has seen;
        // joining it could return the old value, so such an answer is dropped and loaded again.
        for _ in 0..3 {
            let entry = self
                .entries
                .try_get_with(key.to_owned(), self.load(&load, now, generation, epoch))
                .await?;
            if entry.generation >= generation && entry.epoch >= epoch {
                return Ok(entry.value);
            }
            self.entries.invalidate(key).await;
        }
        // Invalidations keep racing this key's loads: answer from the database, uncached.
        load().await.map_err(Arc::new)
    }

    /// What the cache holds for `key`, without loading: `Some(value)` (itself `None` for a
    /// remembered absence) when it holds a live entry, `None` when a lookup would load.
    pub async fn cached(&self, key: &str) -> Option<Option<V>> {
        let entry = self.entries.get(key).await?;
        if !self.is_live(&entry, self.shard(key), self.clock.now()) {
            return None;
        }
        self.counters.hits.increment(1);
        Some(entry.value)
    }

    async fn load<F, Fut, E>(
        &self,
        load: &F,
        now: Timestamp,
        generation: u64,
        epoch: u64,
    ) -> Result<Entry<V>, E>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        // One span per load (not per lookup): a trace shows the database work a miss caused.
        let value = load()
            .instrument(tracing::info_span!("cache.load", cache = self.name))
            .await
            .inspect_err(|_| self.counters.failed.increment(1))?;
        let life = match value {
            Some(_) => {
                self.counters.found.increment(1);
                self.settings
                    .ttl
                    .mul_f64(1.0 - self.settings.jitter * rand::random::<f64>())
            }
            None => {
                self.counters.absent.increment(1);
                self.settings.negative_ttl
            }
        };
        Ok(Entry {
            value,
            expires: now.saturating_add(life),
            life,
            generation,
            epoch,
        })
    }

    /// Forgets `key` (it changed or went): no caller gets the old value from here on, including
    /// from a load that was in flight. Synchronous, so a notification handler can call it: it
    /// moves the key's shard epoch, and moka drops the retired entries when next asked for them
    /// or when they expire.
    pub fn invalidate(&self, key: &str) {
        self.epochs[self.shard(key)].fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets everything (for an owner that may have missed invalidations).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }

    /// Makes every node forget `key` once `tx` commits: this one at once, the others through a
    /// notification on `channel` sent in the same transaction (PostgreSQL `NOTIFY`; on SQLite
    /// every write happens in this process).
    pub async fn forget_on_commit(
        &self,
        tx: &mut Tx,
        channel: &str,
        key: String,
    ) -> Result<(), sqlx::Error> {
        tx.notify(channel, std::slice::from_ref(&key)).await?;
        let cache = self.clone();
        tx.after_commit(move || cache.invalidate(&key));
        Ok(())
    }

    /// Adds `channel` to `relay`: a key notified there is forgotten, and a reconnect, which may
    /// have missed some, forgets everything. The TTL bounds what a lost notification leaves.
    #[must_use]
    pub fn listen(&self, relay: Relay, channel: &'static str) -> Relay {
        let cache = self.clone();
        relay.on(channel, move |notice| match notice {
            Notice::Message(key) => cache.invalidate(key),
            Notice::Connected => cache.clear(),
        })
    }

    /// About how many entries are held (moka counts lazily; see [`Cache::sync`]).
    pub fn len(&self) -> u64 {
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies moka's pending work (evictions, expiries, counts) now; for tests and metrics.
    pub async fn sync(&self) {
        self.entries.run_pending_tasks().await;
    }

    fn is_live(&self, entry: &Entry<V>, shard: usize, now: Timestamp) -> bool {
        entry.expires > now
            && entry.generation == self.generation.load(Ordering::Acquire)
            && entry.epoch == self.epochs[shard].load(Ordering::Acquire)
    }

    fn shard(&self, key: &str) -> usize {
        // The modulo keeps the value below SHARDS, so it fits a usize.
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }
}
