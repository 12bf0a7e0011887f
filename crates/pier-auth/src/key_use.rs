//! When keys were last used, written off the request path: authentication notes a key's use in
//! memory, and [`ApiKeyStore::record_uses`](crate::ApiKeyStore::record_uses) writes the uses
//! noted since its last pass in one transaction, every [`FLUSH_EVERY`]. A key's use is written
//! at most once a [`RESOLUTION`]: `last_used_at` says roughly when, and a write per request
//! would make every authenticated read a database write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use pier_core::Timestamp;

/// How often noted uses are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// A key's use is written at most this often.
pub const RESOLUTION: Duration = Duration::from_secs(60);
/// The most keys whose use waits to be written; uses of keys beyond it are dropped until the
/// next pass (and counted), so a flood of keys cannot grow memory.
const MAX_PENDING: usize = 100_000;

#[derive(Debug, Default)]
struct Uses {
    /// Key id → its latest use, not yet written.
    pending: HashMap<String, Timestamp>,
    /// Key id → the use last written, for keys written within the resolution.
    written: HashMap<String, Timestamp>,
}

#[derive(Debug, Default)]
pub(crate) struct KeyUses(Mutex<Uses>);

impl KeyUses {
    fn lock(&self) -> std::sync::MutexGuard<'_, Uses> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes that key `id` was used at `at`.
    pub(crate) fn note(&self, id: &str, at: Timestamp) {
        let mut uses = self.lock();
        if uses
            .written
            .get(id)
            .is_some_and(|&last| at.duration_since(last) < RESOLUTION)
        {
            return;
        }
        if let Some(pending) = uses.pending.get_mut(id) {
            *pending = (*pending).max(at);
        } else if uses.pending.len() < MAX_PENDING {
            uses.pending.insert(id.to_owned(), at);
        } else {
            metrics::counter!("pier_auth_key_uses_dropped_total").increment(1);
        }
    }

    /// The uses to write now, in key id order.
    pub(crate) fn take(&self) -> Vec<(String, Timestamp)> {
        let mut taken: Vec<(String, Timestamp)> = self.lock().pending.drain().collect();
        taken.sort_unstable();
        taken
    }

    /// Notes again `unwritten` uses whose write failed (within the bound), keeping for each key
    /// the latest of them and of any use noted since.
    pub(crate) fn put_back(&self, unwritten: Vec<(String, Timestamp)>) {
        for (id, at) in unwritten {
            self.note(&id, at);
        }
    }

    /// Notes that `written` reached the database at `now`, and forgets writes older than the
    /// resolution (so `written` holds only the keys used within it).
    pub(crate) fn wrote(&self, written: Vec<(String, Timestamp)>, now: Timestamp) {
        let mut uses = self.lock();
        uses.written
            .retain(|_, &mut last| now.duration_since(last) < RESOLUTION);
        uses.written.extend(written);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_micros(1_700_000_000_000_000).saturating_add(Duration::from_secs(secs))
    }

    #[test]
    fn pending_uses_are_bounded_and_keep_the_latest() {
        let uses = KeyUses::default();
        for i in 0..=MAX_PENDING {
            uses.note(&format!("key_{i}"), at(0));
        }
        uses.note("key_0", at(5));
        let taken = uses.take();
        assert_eq!(
            taken.len(),
            MAX_PENDING,
            "the key past the bound was dropped"
        );
        assert!(taken.contains(&("key_0".to_owned(), at(5))));
        assert!(uses.take().is_empty(), "taking empties the queue");
    }

    #[test]
    fn uses_are_taken_in_key_order_and_put_back_when_unwritten() {
        let uses = KeyUses::default();
        for key in ["key_c", "key_a", "key_b"] {
            uses.note(key, at(0));
        }
        let taken = uses.take();
        let ids: Vec<&str> = taken.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["key_a", "key_b", "key_c"]);
        // key_a was used again while the write failed: the later use stays.
        uses.note("key_a", at(7));
        uses.put_back(taken);
        let again = uses.take();
        assert_eq!(again.len(), 3);
        assert_eq!(again[0], ("key_a".to_owned(), at(7)));
    }

    #[test]
    fn written_keys_wait_out_the_resolution_and_are_then_forgotten() {
        let uses = KeyUses::default();
        uses.note("key_a", at(0));
        uses.wrote(uses.take(), at(0));
        uses.note("key_a", at(59));
        assert!(uses.take().is_empty(), "within the resolution");
        uses.note("key_a", at(60));
        assert_eq!(uses.take(), vec![("key_a".to_owned(), at(60))]);
        uses.wrote(Vec::new(), at(61));
        assert!(
            uses.lock().written.is_empty(),
            "a write older than the resolution is forgotten"
        );
    }
}
