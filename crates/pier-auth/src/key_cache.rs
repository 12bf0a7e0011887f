//! Recently authenticated keys, so that most requests learn who is calling without a database
//! read.
//!
//! An entry lives at most its TTL (5 s by default). Revoking a key evicts it at once on the node
//! that revokes it and, on PostgreSQL, on every other node through a notification sent in the
//! revoking transaction (`pier_auth`); a node whose listener reconnects clears everything, since
//! it may have missed some. The TTL bounds what is left: a key revoked with the offline
//! `pier keys revoke` on SQLite, while the server runs, stops working within it. Expiry needs
//! nothing: it is checked on every use, from the cached key.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pier_core::Timestamp;

use crate::ApiKey;

/// Entries kept at most; beyond it, expired ones go, and if none had, all do.
const CAPACITY: usize = 10_000;

/// The notification channel of revocations.
pub(crate) const CHANNEL: &str = "pier_auth";

#[derive(Debug)]
struct Entry {
    key: ApiKey,
    until: Timestamp,
}

#[derive(Debug)]
pub(crate) struct KeyCache {
    /// By the hash of the key's secret.
    entries: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
}

impl KeyCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn get(&self, hash: &str, now: Timestamp) -> Option<ApiKey> {
        let mut entries = self.lock();
        match entries.get(hash) {
            Some(entry) if entry.until > now => Some(entry.key.clone()),
            Some(_) => {
                entries.remove(hash);
                None
            }
            None => None,
        }
    }

    pub(crate) fn put(&self, hash: String, key: ApiKey, now: Timestamp) {
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.retain(|_, entry| entry.until > now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        let until = now.saturating_add(self.ttl);
        entries.insert(hash, Entry { key, until });
    }

    /// Forgets the key `id` (it was revoked).
    pub(crate) fn evict(&self, id: &str) {
        self.lock().retain(|_, entry| entry.key.id.as_str() != id);
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Notes that the key `id` was used at `at`, as was just stored.
    pub(crate) fn used(&self, id: &str, at: Timestamp) {
        for entry in self.lock().values_mut() {
            if entry.key.id.as_str() == id {
                entry.key.last_used_at = Some(at);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
