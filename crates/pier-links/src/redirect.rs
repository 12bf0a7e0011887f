//! The redirect lookup: what a slug answers, served from a [`pier_cache::Cache`] so a hot slug
//! costs no database read and a cold one costs one however many visitors ask at once. Unknown
//! slugs are remembered too, briefly, so a scan of random paths does not reach the database
//! on every request.
//!
//! Every write that changes what a slug answers (create, which may replace a remembered
//! "unknown", update and delete) forgets the slug when it commits: on this node at once, on the
//! others through a notification sent in the same transaction (PostgreSQL `NOTIFY`; SQLite has
//! one process). A node whose listener reconnects forgets everything, since it may have missed
//! some. The TTL bounds what is left.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pier_cache::{Cache, Settings};
use pier_core::{Busy, Clock, HashGate, Timestamp, WorkspaceId};
use pier_db::{Db, Relay, Tx, with_reader, with_writer};

use crate::clicks::{ClickBuffer, Visit};
use crate::link::{LinkId, RedirectStatus};
use crate::shared::{Lookup, SharedTier};

/// The notification channel of changed slugs; the payload is the slug.
const CHANNEL: &str = "pier_links";

/// What the redirect path needs to know of a link.
#[derive(Debug)]
pub struct Destination {
    pub link_id: LinkId,
    pub workspace_id: WorkspaceId,
    pub url: String,
    pub status: RedirectStatus,
    pub expires_at: Option<Timestamp>,
    pub max_clicks: Option<i64>,
    pub(crate) password_hash: Option<String>,
    /// Set once a click was refused for `max_clicks`, so an exhausted link costs no more
    /// writes until an update (which loads a new destination) raises the limit.
    pub(crate) exhausted: AtomicBool,
}

/// Whether a destination takes visitors now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Open,
    Expired,
    Exhausted,
}

impl Destination {
    pub fn availability(&self, now: Timestamp) -> Availability {
        if self.expires_at.is_some_and(|at| at <= now) {
            Availability::Expired
        } else if self.exhausted.load(Ordering::Relaxed) {
            Availability::Exhausted
        } else {
            Availability::Open
        }
    }

    pub fn needs_password(&self) -> bool {
        self.password_hash.is_some()
    }

    /// Checks a visitor's password within the node's bound on concurrent hashes. A link
    /// without a password takes none.
    pub async fn password_matches(&self, gate: &HashGate, password: &str) -> Result<bool, Busy> {
        match self.password_hash.as_deref() {
            Some(phc) => gate.verify(password, phc).await,
            None => Ok(false),
        }
    }
}

#[derive(sqlx::FromRow)]
struct DestinationRow {
    id: String,
    workspace_id: String,
    url: String,
    redirect_status: i32,
    expires_at: Option<i64>,
    max_clicks: Option<i64>,
    password_hash: Option<String>,
    clicks: i64,
}

/// The redirect lookup and the click recorder. Clones share the cache and the buffer.
#[derive(Debug, Clone)]
pub struct Redirects {
    db: Db,
    clock: Arc<dyn Clock>,
    cache: Cache<Arc<Destination>>,
    clicks: Arc<ClickBuffer>,
    /// The Redis tier, when Redis is configured.
    shared: Option<SharedTier>,
}

impl Redirects {
    pub fn new(db: Db, clock: Arc<dyn Clock>, cache: Settings, clicks: ClickBuffer) -> Self {
        Self {
            cache: Cache::new("links", cache, clock.clone()),
            db,
            clock,
            clicks: Arc::new(clicks),
            shared: None,
        }
    }

    /// Adds the Redis tier (see [`crate::shared`]).
    #[must_use]
    pub fn with_shared(mut self, tier: SharedTier) -> Self {
        self.shared = Some(tier);
        self
    }

    /// Listens for the slugs other nodes change, through Redis, until the task is dropped;
    /// `None` without the Redis tier.
    pub fn spawn_shared_listener(&self) -> Option<tokio::task::JoinHandle<()>> {
        let tier = self.shared.clone()?;
        Some(tokio::spawn(tier.listen(self.cache.clone())))
    }

    /// Adds the channel of changed slugs to `relay` (PostgreSQL; on SQLite every write
    /// happens in this process).
    #[must_use]
    pub fn listen(&self, relay: Relay) -> Relay {
        self.cache.listen(relay, CHANNEL)
    }

    /// Makes every node forget `slugs` once `tx` commits: this one at once, the others by
    /// `NOTIFY` (PostgreSQL) and Redis pub/sub (when configured), whose tier is fenced first.
    pub(crate) async fn forget_on_commit(
        &self,
        tx: &mut Tx,
        slugs: impl IntoIterator<Item = String>,
    ) -> Result<(), sqlx::Error> {
        let mut slugs: Vec<String> = slugs.into_iter().collect();
        slugs.dedup();
        tx.notify(CHANNEL, &slugs).await?;
        if let Some(shared) = &self.shared {
            shared.fence(&slugs).await;
        }
        let (cache, shared) = (self.cache.clone(), self.shared.clone());
        tx.after_commit(move || {
            slugs.iter().for_each(|s| cache.invalidate(s));
            if let Some(shared) = shared {
                tokio::spawn(async move { shared.announce(slugs).await });
            }
        });
        Ok(())
    }

    /// What `slug` answers, if it is a link.
    pub async fn resolve(&self, slug: &str) -> Result<Option<Arc<Destination>>, sqlx::Error> {
        self.cache
            .get_or_load(slug, || self.load(slug))
            .await
            .map_err(pier_db::unshare)
    }

    /// What this node's cache holds for `slug`, without loading it: `None` when
    /// [`resolve`](Self::resolve) would ask the Redis tier or the database.
    pub async fn cached(&self, slug: &str) -> Option<Option<Arc<Destination>>> {
        self.cache.cached(slug).await
    }

    /// From the Redis tier when it knows the slug, else from the database (offering the answer
    /// to the tier unless the slug was fenced).
    async fn load(&self, slug: &str) -> Result<Option<Arc<Destination>>, sqlx::Error> {
        let Some(shared) = &self.shared else {
            return self.read(slug).await;
        };
        match shared.get(slug).await {
            Lookup::Known(dest) => Ok(dest),
            Lookup::Load { fill } => {
                let dest = self.read(slug).await?;
                if fill {
                    shared.fill(slug, dest.as_deref()).await;
                }
                Ok(dest)
            }
        }
    }

    async fn read(&self, slug: &str) -> Result<Option<Arc<Destination>>, sqlx::Error> {
        let row: Option<DestinationRow> = with_reader!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, workspace_id, url, redirect_status, expires_at, max_clicks, \
                 password_hash, clicks FROM links WHERE slug = $1",
            )
            .bind(slug)
            .fetch_optional(pool)
            .await
        })?;
        let Some(row) = row else { return Ok(None) };
        let status = u16::try_from(row.redirect_status)
            .ok()
            .and_then(RedirectStatus::from_code)
            .unwrap_or_default();
        Ok(Some(Arc::new(Destination {
            link_id: LinkId::from_trusted(row.id),
            workspace_id: WorkspaceId::from_trusted(row.workspace_id),
            url: row.url,
            status,
            expires_at: row.expires_at.map(Timestamp::from_micros),
            exhausted: AtomicBool::new(row.max_clicks.is_some_and(|max| row.clicks >= max)),
            max_clicks: row.max_clicks,
            password_hash: row.password_hash,
        })))
    }

    /// Lets a visitor through and records the click, or refuses it because the link's
    /// `max_clicks` are spent (`Ok(false)`).
    ///
    /// Bots pass without spending a click (a chat app's link preview must not use up a
    /// one-time link) and are counted apart. A human click on a link with `max_clicks` takes
    /// its click with one conditional update, so the limit holds exactly across concurrent
    /// visitors and nodes: the one write the redirect path waits for, and only on such links.
    /// Every other click goes to the buffer, which a background task writes in batches.
    pub async fn admit(&self, dest: &Destination, visit: &Visit<'_>) -> Result<bool, sqlx::Error> {
        let counted = match dest.max_clicks {
            Some(_) if !visit.visitor.is_bot() => {
                if !self.take_click(&dest.link_id).await? {
                    dest.exhausted.store(true, Ordering::Relaxed);
                    return Ok(false);
                }
                true
            }
            _ => false,
        };
        let link = (&dest.workspace_id, &dest.link_id);
        self.clicks.record(link, self.clock.now(), visit, counted);
        Ok(true)
    }

    async fn take_click(&self, link: &LinkId) -> Result<bool, sqlx::Error> {
        let taken = with_writer!(&self.db, pool => {
            sqlx::query(
                "UPDATE links SET clicks = clicks + 1 WHERE id = $1 AND clicks < max_clicks",
            )
            .bind(link.as_str())
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(taken == 1)
    }

    /// The click buffer, for the flusher and tests.
    pub fn clicks(&self) -> &ClickBuffer {
        &self.clicks
    }

    /// Writes the buffered clicks (see [`ClickBuffer::flush`]).
    pub async fn flush_clicks(&self) -> Result<usize, sqlx::Error> {
        self.clicks.flush(&self.db).await
    }
}
