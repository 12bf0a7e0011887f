//! The Redis tier of the redirect cache, when Redis is configured: a slug one node loaded from
//! the database is there for every other node, so a cluster's cold start costs the database one
//! read per slug, not one per node; and changes travel to every node by pub/sub.
//!
//! A change must never leave an old destination in Redis. So a write *fences* its slugs before
//! it commits: the key is set to a marker for [`FENCE`], and while it stands, loads read the
//! database and do not fill. Fills only create keys (`SET NX`), so a load that read the old row
//! before the commit cannot overwrite the fence; the writer overwrites any fill that beat it.
//! Once the fence lapses, the next load fills from the committed row. If Redis cannot be
//! reached, loads go to the database and a write logs that its fence failed: an old entry can
//! then outlive the change by up to the tier's TTL.

use std::time::Duration;

use futures_util::StreamExt;
use pier_cache::Cache;
use pier_core::{Timestamp, WorkspaceId};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::link::{LinkId, RedirectStatus};
use crate::redirect::Destination;

/// How long a write's fence stands: longer than any transaction takes to commit after it.
const FENCE: Duration = Duration::from_secs(10);
/// The longest a Redis call may take before the caller goes on without it.
const TIMEOUT: Duration = Duration::from_millis(50);
/// The pub/sub channel of changed slugs.
const CHANNEL: &str = "pier:links:changed";
const FENCE_MARK: &str = "!";
const UNKNOWN_MARK: &str = "-";

fn key(slug: &str) -> String {
    format!("pier:link:{slug}")
}

/// A destination as Redis keeps it.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    ws: String,
    url: String,
    status: u16,
    expires: Option<i64>,
    max: Option<i64>,
    password: Option<String>,
    exhausted: bool,
}

/// What Redis knows of a slug.
pub(crate) enum Lookup {
    /// The destination, or that there is no link with this slug.
    Known(Option<Arc<Destination>>),
    /// Changed moments ago, or not in Redis: load from the database, filling only if `fill`.
    Load { fill: bool },
}

/// The Redis tier; clones share the connection.
#[derive(Clone)]
pub struct SharedTier {
    conn: ConnectionManager,
    client: redis::Client,
    ttl: Duration,
    unknown_ttl: Duration,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier").finish_non_exhaustive()
    }
}

async fn bounded<T>(
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, redis::RedisError> {
    tokio::time::timeout(TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err((redis::ErrorKind::IoError, "timed out").into()))
}

impl SharedTier {
    /// `conn` for commands; `client` opens the pub/sub connection. Entries live `ttl`, unknown
    /// slugs `unknown_ttl`.
    pub fn new(
        conn: ConnectionManager,
        client: redis::Client,
        ttl: Duration,
        unknown_ttl: Duration,
    ) -> Self {
        Self {
            conn,
            client,
            ttl,
            unknown_ttl,
        }
    }

    pub(crate) async fn get(&self, slug: &str) -> Lookup {
        let mut conn = self.conn.clone();
        let value: Option<String> = match bounded(conn.get(key(slug))).await {
            Ok(value) => value,
            Err(err) => {
                tracing::debug!(error = %err, "redirect cache: Redis unavailable, reading the database");
                return Lookup::Load { fill: false };
            }
        };
        match value.as_deref() {
            None => Lookup::Load { fill: true },
            Some(FENCE_MARK) => Lookup::Load { fill: false },
            Some(UNKNOWN_MARK) => Lookup::Known(None),
            Some(json) => match serde_json::from_str::<Stored>(json) {
                Ok(stored) => Lookup::Known(Some(Arc::new(stored.into()))),
                Err(_) => Lookup::Load { fill: false },
            },
        }
    }

    /// Offers what the database said of `slug` to the other nodes, unless a fence or another
    /// fill is there first.
    pub(crate) async fn fill(&self, slug: &str, dest: Option<&Destination>) {
        let (value, life) = match dest {
            Some(dest) => (stored(dest), self.ttl),
            None => (UNKNOWN_MARK.to_owned(), self.unknown_ttl),
        };
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(millis(life)));
        let mut conn = self.conn.clone();
        let set: Result<Option<String>, _> =
            bounded(conn.set_options(key(slug), value, options)).await;
        if let Err(err) = set {
            tracing::debug!(error = %err, "redirect cache: could not fill Redis");
        }
    }

    /// Fences `slugs` before a write commits (see the module documentation).
    pub(crate) async fn fence(&self, slugs: &[String]) {
        let mut pipe = redis::pipe();
        for slug in slugs {
            pipe.set_ex(key(slug), FENCE_MARK, FENCE.as_secs()).ignore();
        }
        let mut conn = self.conn.clone();
        if let Err(err) = bounded(pipe.query_async::<()>(&mut conn)).await {
            tracing::warn!(
                error = %err,
                "redirect cache: could not fence changed slugs in Redis; other nodes may serve \
                 the old destination until its entry expires"
            );
        }
    }

    /// Tells every node's local cache to forget `slugs`, after a commit.
    pub(crate) async fn announce(&self, slugs: Vec<String>) {
        let mut pipe = redis::pipe();
        for slug in &slugs {
            pipe.publish(CHANNEL, slug).ignore();
        }
        let mut conn = self.conn.clone();
        if let Err(err) = bounded(pipe.query_async::<()>(&mut conn)).await {
            tracing::warn!(error = %err, "redirect cache: could not announce changed slugs");
        }
    }

    /// Forgets, in `cache`, every slug another node announces, until the task is dropped. While
    /// the subscription is down the cache cannot hear of changes, so it is cleared each time
    /// the subscription is made.
    pub(crate) async fn listen(self, cache: Cache<Arc<Destination>>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(CHANNEL).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        cache.clear();
                        let mut messages = pubsub.on_message();
                        while let Some(message) = messages.next().await {
                            if let Ok(slug) = message.get_payload::<String>() {
                                cache.invalidate(&slug);
                            }
                        }
                        tracing::warn!("redirect cache: Redis subscription ended; reconnecting");
                    }
                    Err(err) => tracing::warn!(error = %err, "redirect cache: cannot subscribe"),
                },
                Err(err) => tracing::warn!(error = %err, "redirect cache: cannot reach Redis"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn stored(dest: &Destination) -> String {
    let stored = Stored {
        id: dest.link_id.as_str().to_owned(),
        ws: dest.workspace_id.as_str().to_owned(),
        url: dest.url.clone(),
        status: dest.status.code(),
        expires: dest.expires_at.map(Timestamp::as_micros),
        max: dest.max_clicks,
        password: dest.password_hash.clone(),
        exhausted: dest.exhausted.load(Ordering::Relaxed),
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

impl From<Stored> for Destination {
    fn from(s: Stored) -> Self {
        Destination {
            link_id: LinkId::from_trusted(s.id),
            workspace_id: WorkspaceId::from_trusted(s.ws),
            url: s.url,
            status: RedirectStatus::from_code(s.status).unwrap_or_default(),
            expires_at: s.expires.map(Timestamp::from_micros),
            max_clicks: s.max,
            password_hash: s.password,
            exhausted: AtomicBool::new(s.exhausted),
        }
    }
}
