//! Notifications between nodes (PostgreSQL `LISTEN`/`NOTIFY`), for wake-ups and cache
//! invalidation. A transaction sends with [`Tx::notify`](crate::Tx::notify); every node relays
//! what arrives with [`Db::relay`].

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::{Backend, Db};

/// What a relay hands its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice<'a> {
    /// A payload sent on the channel.
    Message(&'a str),
    /// The listener (re)connected: anything sent while it was away is lost, so state derived
    /// from notifications should be refreshed.
    Connected,
}

impl Db {
    /// Hands every notification on `channel` to `handle` until the task is aborted; `None` on
    /// SQLite, where every writer is in this process and needs no relay. The listener reconnects
    /// after errors, announcing each (re)connection.
    pub fn relay(
        &self,
        channel: &'static str,
        handle: impl Fn(Notice<'_>) + Send + 'static,
    ) -> Option<JoinHandle<()>> {
        let crate::Pools::Postgres(pool) = &self.0 else {
            return None;
        };
        debug_assert_eq!(self.backend(), Backend::Postgres);
        let pool = pool.clone();
        Some(tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut listener) => match listener.listen(channel).await {
                        Ok(()) => {
                            handle(Notice::Connected);
                            loop {
                                match listener.recv().await {
                                    Ok(message) => handle(Notice::Message(message.payload())),
                                    Err(err) => {
                                        tracing::warn!(channel, error = %err, "notification listener lost");
                                        break;
                                    }
                                }
                            }
                        }
                        Err(err) => tracing::warn!(channel, error = %err, "cannot LISTEN"),
                    },
                    Err(err) => tracing::warn!(channel, error = %err, "cannot connect a listener"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
}
