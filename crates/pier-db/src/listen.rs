//! Notifications between nodes (PostgreSQL `LISTEN`), for wake-ups and cache invalidation.

/// A connection listening on one channel.
#[derive(Debug)]
pub struct Listener(sqlx::postgres::PgListener);

impl Listener {
    pub(crate) async fn connect(pool: &sqlx::PgPool, channel: &str) -> Result<Self, sqlx::Error> {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(channel).await?;
        Ok(Self(listener))
    }

    /// The next notification's payload. An error means the connection was lost: notifications
    /// sent meanwhile are gone, so callers reconnect and fall back on polling for the gap.
    pub async fn recv(&mut self) -> Result<String, sqlx::Error> {
        self.0.recv().await.map(|n| n.payload().to_owned())
    }
}
