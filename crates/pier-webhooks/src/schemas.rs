//! What a publication of each event type is held to (its JSON Schema, compiled), cached per node,
//! so a publish reads no database and compiles no schema for it.
//!
//! An event type is never changed or deleted once registered, so a cached type never goes
//! stale. "Not registered" does, when the type is registered: registering makes every node
//! forget the name when its transaction commits, this node at once and the others through a
//! PostgreSQL notification sent in that transaction (on SQLite every write happens in this
//! process). A node whose listener reconnects forgets them all, since it may have missed some;
//! the short TTL of "not registered" bounds what a lost notification could leave.

use std::sync::Arc;
use std::time::Duration;

use pier_cache::{Cache, Settings};
use pier_core::{Clock, WorkspaceId};
use pier_db::{Relay, Tx};

/// The notification channel of registered event types; the payload is the cache key.
const CHANNEL: &str = "pier_webhook_event_types";
/// Event types remembered at most.
const CAPACITY: u64 = 10_000;
/// How long a registered type is remembered (it cannot change; this only frees memory).
const TTL: Duration = Duration::from_secs(600);
/// How long "not registered" is remembered unless the type is registered sooner.
const ABSENT_TTL: Duration = Duration::from_secs(10);

/// A registered event type's rule: its schema's validator, if it has a schema.
pub(crate) struct Rule(Option<jsonschema::Validator>);

impl Rule {
    pub fn new(validator: Option<jsonschema::Validator>) -> Self {
        Self(validator)
    }

    pub fn validator(&self) -> Option<&jsonschema::Validator> {
        self.0.as_ref()
    }
}

/// The cache of event types' [`Rule`]s by workspace and name. Clones share it.
#[derive(Clone)]
pub(crate) struct Schemas {
    cache: Cache<Arc<Rule>>,
}

impl Schemas {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let settings = Settings {
            capacity: CAPACITY,
            ttl: TTL,
            negative_ttl: ABSENT_TTL,
            jitter: 0.2,
        };
        Self {
            cache: Cache::new("webhook_event_types", settings, clock),
        }
    }

    /// The rule of `name` in `workspace` (`None`: not registered), loaded by `load` on a miss.
    pub async fn get<F, Fut>(
        &self,
        workspace: &WorkspaceId,
        name: &str,
        load: F,
    ) -> Result<Option<Arc<Rule>>, sqlx::Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<Arc<Rule>>, sqlx::Error>>,
    {
        self.cache
            .get_or_load(&key(workspace, name), load)
            .await
            .map_err(pier_db::unshare)
    }

    /// Makes every node forget `name` once `tx` commits.
    pub async fn forget_on_commit(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        name: &str,
    ) -> Result<(), sqlx::Error> {
        let key = key(workspace, name);
        self.cache.forget_on_commit(tx, CHANNEL, key).await
    }

    /// Adds the channel of registered event types to `relay`.
    #[must_use]
    pub fn listen(&self, relay: Relay) -> Relay {
        self.cache.listen(relay, CHANNEL)
    }
}

fn key(workspace: &WorkspaceId, name: &str) -> String {
    format!("{workspace}/{name}")
}
