//! Notifications between nodes (PostgreSQL `LISTEN`/`NOTIFY`), for wake-ups and cache
//! invalidation. A transaction sends with [`Tx::notify`](crate::Tx::notify); every node relays
//! what arrives on its channels to their handlers with one [`Relay`] and one connection of its
//! own (outside the pool, so listening never takes a connection from requests).
//!
//! A notification sent while the listener is away is lost, and sqlx's `PgListener::recv` would
//! reconnect without saying so. So the relay never lets sqlx reconnect for it: every loss, an
//! error, a closed connection or a keepalive left unanswered (a half-open connection looks like
//! a quiet channel forever), ends the session, and the next session announces
//! [`Notice::Connected`] once its `LISTEN` is in place, for caches to start again from nothing.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::task::JoinHandle;

use crate::{Db, Pools};

/// How often the listening connection is asked a trivial query, so a connection cut off
/// without a reset is noticed within `KEEPALIVE_EVERY + KEEPALIVE_TIMEOUT`.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(2);
/// How long that query may go unanswered before the connection counts as lost.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The wait before connecting again after an attempt failed (a lost session reconnects at
/// once, since every moment away is a moment of possibly missed invalidations).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// What the listening connection calls itself in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "pier-listener";

/// What a relay hands a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice<'a> {
    /// A payload sent on the handler's channel.
    Message(&'a str),
    /// The listener (re)connected: anything sent while it was away is lost, so state derived
    /// from notifications must be dropped before it is used again.
    Connected,
}

type Handler = Box<dyn Fn(Notice<'_>) + Send + Sync>;

/// The channels this node listens on, with what to do with their notifications.
#[derive(Default)]
pub struct Relay {
    handlers: Vec<(&'static str, Handler)>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let channels: Vec<_> = self.handlers.iter().map(|(c, _)| c).collect();
        f.debug_struct("Relay")
            .field("channels", &channels)
            .finish()
    }
}

/// How the listener connects: the pool's options under its own application name. Its `Debug`
/// shows nothing, since the options hold the password.
#[derive(Clone)]
pub(crate) struct ListenOptions(Arc<PgConnectOptions>);

impl ListenOptions {
    pub(crate) fn new(pool: PgConnectOptions) -> Self {
        Self(Arc::new(pool.application_name(LISTENER_APPLICATION_NAME)))
    }
}

impl std::fmt::Debug for ListenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenOptions(..)")
    }
}

/// Why a listening session ended.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("cannot listen: {0}")]
    Unreachable(sqlx::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("the connection closed")]
    Closed,
    #[error("a keepalive went unanswered for {0:?}")]
    Silent(Duration),
}

impl Relay {
    #[must_use]
    pub fn on(
        mut self,
        channel: &'static str,
        handler: impl Fn(Notice<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.handlers.push((channel, Box::new(handler)));
        self
    }

    /// Relays until the task is aborted; `None` on SQLite, where every writer is in this process
    /// and nothing needs relaying. Each (re)connection is announced to every handler.
    pub fn spawn(self, db: &Db) -> Option<JoinHandle<()>> {
        let Pools::Postgres { listen, .. } = &db.0 else {
            return None;
        };
        let options = listen.clone();
        Some(tokio::spawn(async move {
            let mut listened = false;
            loop {
                match self.session(&options, listened).await {
                    Lost::Unreachable(err) => {
                        tracing::warn!(error = %err, "cannot listen for notifications");
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                    lost => {
                        tracing::warn!(error = %lost, "notification listener lost; reconnecting");
                        listened = true;
                    }
                }
            }
        }))
    }

    /// Listens on one connection until it is lost. The connection has a pool of its own, so a
    /// half-open one left behind (its `UNLISTEN` on drop may hang until the kernel gives up)
    /// never keeps the next session from connecting.
    async fn session(&self, options: &ListenOptions, listened_before: bool) -> Lost {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options.0.as_ref().clone());
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(err) => return Lost::Unreachable(err),
        };
        // A loss must end the session here rather than be mended inside sqlx unannounced.
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        let channels = self.handlers.iter().map(|(c, _)| *c);
        if let Err(err) = listener.listen_all(channels).await {
            return Lost::Unreachable(err);
        }
        self.announce(Notice::Connected, None);
        if listened_before {
            tracing::info!("notification listener reconnected; caches relying on it cleared");
        }
        let mut keepalive = tokio::time::interval(KEEPALIVE_EVERY);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await;
        loop {
            // Safe to drop when the keepalive fires first: with an open connection and no
            // eager reconnect, `try_recv` only awaits reading a whole message.
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(message)) => {
                        self.announce(Notice::Message(message.payload()), Some(message.channel()));
                    }
                    Ok(None) => return Lost::Closed,
                    Err(err) => return err.into(),
                },
                _ = keepalive.tick() => {
                    let ping = sqlx::query("SELECT 1").execute(&mut listener);
                    match tokio::time::timeout(KEEPALIVE_TIMEOUT, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return err.into(),
                        Err(_) => return Lost::Silent(KEEPALIVE_TIMEOUT),
                    }
                }
            }
        }
    }

    /// Hands `notice` to the handlers of `channel`, or to every handler when `None`.
    fn announce(&self, notice: Notice<'_>, channel: Option<&str>) {
        for (_, handle) in self
            .handlers
            .iter()
            .filter(|(c, _)| channel.is_none_or(|channel| channel == *c))
        {
            handle(notice);
        }
    }
}
