//! Notifications between nodes (PostgreSQL `LISTEN`/`NOTIFY`), for wake-ups and cache
//! invalidation. A transaction sends with [`Tx::notify`](crate::Tx::notify); every node relays
//! what arrives on its channels to their handlers with one [`Relay`] and one connection of its
//! own (outside the pool, so listening never takes a connection from requests).

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::{Db, Pools};

/// What a relay hands a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice<'a> {
    /// A payload sent on the handler's channel.
    Message(&'a str),
    /// The listener (re)connected: anything sent while it was away is lost, so state derived
    /// from notifications should be refreshed.
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
    /// and nothing needs relaying. The listener reconnects after errors, announcing each
    /// (re)connection to every handler.
    pub fn spawn(self, db: &Db) -> Option<JoinHandle<()>> {
        let Pools::Postgres { listen, .. } = &db.0 else {
            return None;
        };
        let listen = listen.clone();
        let channels: Vec<&str> = self.handlers.iter().map(|(c, _)| *c).collect();
        Some(tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect_with(&listen).await {
                    Ok(mut listener) => match listener.listen_all(channels.iter().copied()).await {
                        Ok(()) => {
                            for (_, handle) in &self.handlers {
                                handle(Notice::Connected);
                            }
                            loop {
                                match listener.recv().await {
                                    Ok(message) => {
                                        for (channel, handle) in &self.handlers {
                                            if *channel == message.channel() {
                                                handle(Notice::Message(message.payload()));
                                            }
                                        }
                                    }
                                    Err(err) => {
                                        tracing::warn!(error = %err, "notification listener lost");
                                        break;
                                    }
                                }
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "cannot LISTEN"),
                    },
                    Err(err) => tracing::warn!(error = %err, "cannot connect a listener"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
}
