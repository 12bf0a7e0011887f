//! What a delivery needs of its endpoint: the endpoint itself (URL, enabled, rate limit) and the
//! keys that sign for it now, read once and cached, so a busy endpoint costs the database no read
//! per delivery (two reads and an unsealing each, before).
//!
//! Every write to an endpoint or its keys (update, delete, secret rotation, Pier disabling it)
//! makes every node forget it when its transaction commits: this node at once, the others through
//! a PostgreSQL notification sent in that transaction (on SQLite every write happens in this
//! process). A node whose listener reconnects forgets them all, since it may have missed some; the
//! TTL bounds what is left. A rotation's overlap ending needs no write: an entry is never served
//! past the moment its first key stops signing.

use std::sync::Arc;
use std::time::Duration;

use pier_cache::{Cache, Settings};
use pier_core::{Clock, SubKey, Timestamp, WorkspaceId};
use pier_db::{Db, Relay, Tx};

use crate::model::{Endpoint, EndpointId};
use crate::secrets::{self, Keys};
use crate::store::WebhookError;

/// The notification channel of changed endpoints; the payload is the cache key.
const CHANNEL: &str = "pier_webhook_endpoints";
/// Endpoints remembered at most.
const CAPACITY: u64 = 10_000;
/// How long an endpoint is remembered unless it changes sooner.
const TTL: Duration = Duration::from_secs(30);
/// How long "no such endpoint" is remembered.
const ABSENT_TTL: Duration = Duration::from_secs(1);

/// An endpoint with the keys that sign its deliveries.
#[derive(Debug)]
pub(crate) struct Target {
    pub endpoint: Endpoint,
    pub keys: Keys,
    /// When the first of `keys` stops signing: from then on this entry is stale.
    until: Option<Timestamp>,
}

/// The cache of [`Target`]s. Clones share it.
#[derive(Clone)]
pub(crate) struct Targets {
    cache: Cache<Arc<Target>>,
}

impl Targets {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let settings = Settings {
            capacity: CAPACITY,
            ttl: TTL,
            negative_ttl: ABSENT_TTL,
            jitter: 0.2,
        };
        Self {
            cache: Cache::new("webhook_endpoints", settings, clock),
        }
    }

    /// The endpoint and its live keys at `now`; `None` when the endpoint does not exist.
    pub async fn get(
        &self,
        db: &Db,
        sealing: &SubKey,
        workspace: &WorkspaceId,
        endpoint: &EndpointId,
        now: Timestamp,
    ) -> Result<Option<Arc<Target>>, WebhookError> {
        let key = key(workspace, endpoint);
        let load = || async {
            let Some(found) = crate::store::read_endpoint(db, workspace, endpoint).await? else {
                return Ok(None);
            };
            let (keys, until) = secrets::live(db, sealing, workspace, endpoint, now).await?;
            Ok(Some(Arc::new(Target {
                endpoint: found,
                keys,
                until,
            })))
        };
        // An entry past its first key's overlap is forgotten and read again, once.
        for _ in 0..2 {
            let target = self.cache.get_or_load(&key, load).await.map_err(unshare)?;
            match target {
                Some(t) if t.until.is_some_and(|until| until <= now) => self.cache.invalidate(&key),
                other => return Ok(other),
            }
        }
        load().await
    }

    /// Makes every node forget `endpoint` once `tx` commits.
    pub async fn forget_on_commit(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        endpoint: &EndpointId,
    ) -> Result<(), sqlx::Error> {
        let key = key(workspace, endpoint);
        self.cache.forget_on_commit(tx, CHANNEL, key).await
    }

    /// Adds the channel of changed endpoints to `relay`.
    #[must_use]
    pub fn listen(&self, relay: Relay) -> Relay {
        self.cache.listen(relay, CHANNEL)
    }
}

fn key(workspace: &WorkspaceId, endpoint: &EndpointId) -> String {
    format!("{workspace}/{endpoint}")
}

/// The error of a load several deliveries awaited together.
fn unshare(shared: Arc<WebhookError>) -> WebhookError {
    Arc::try_unwrap(shared).unwrap_or_else(|shared| match &*shared {
        WebhookError::Sealed(unreadable) => WebhookError::Sealed(unreadable.clone()),
        other => WebhookError::Db(sqlx::Error::Protocol(other.to_string())),
    })
}
