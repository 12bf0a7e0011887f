//! Storage plumbing shared by every capability: the [`Db`] handle that picks SQLite or PostgreSQL,
//! migrations, transactions and the server's own settings.
//!
//! Capability crates own their SQL. Most statements are written once in the common dialect both
//! backends accept (`$1` placeholders, `RETURNING`, `ON CONFLICT`, row-value comparisons) and run
//! through [`on_reader!`], [`on_writer!`] or [`on_tx!`], which expand the same code once per
//! backend so each is compiled against its native driver. Where the dialects differ (e.g.
//! `FOR UPDATE SKIP LOCKED`), the capability matches on [`Db`] itself; callers never see it.

mod connect;
mod migrate;
mod settings;
mod tx;

use std::time::Duration;

pub use connect::{DatabaseUrl, InvalidDatabaseUrl};
pub use settings::server_secret;
pub use tx::{Tx, TxConn};

pub use sqlx;

/// Which engine a [`Db`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// An embedded SQLite database: one writer connection (SQLite allows one writer at a time, so
/// in-process writers queue here instead of spinning on `SQLITE_BUSY`) and a pool of read-only
/// connections that WAL lets run beside it.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    pub writer: sqlx::SqlitePool,
    pub reader: sqlx::SqlitePool,
}

/// A cheap-to-clone handle to the configured database.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(sqlx::PgPool),
}

impl Db {
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Self::Sqlite(db) => Tx::new(TxConn::Sqlite(db.writer.begin().await?)),
            Self::Postgres(pool) => Tx::new(TxConn::Postgres(pool.begin().await?)),
        })
    }

    /// Checks the database answers, for readiness probes.
    pub async fn ping(&self, timeout: Duration) -> Result<(), sqlx::Error> {
        let probe = async {
            on_reader!(self, |pool| sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(drop))
        };
        tokio::time::timeout(timeout, probe)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite(db) => {
                db.reader.close().await;
                db.writer.close().await;
            }
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// Runs `$body` with `$pool` bound to a pool for reads on whichever backend `$db` is.
#[macro_export]
macro_rules! on_reader {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::Db::Sqlite(sqlite) => {
                let $pool = &sqlite.reader;
                $body
            }
            $crate::Db::Postgres(pg) => {
                let $pool = pg;
                $body
            }
        }
    };
}

/// Runs `$body` with `$pool` bound to a pool for single-statement writes.
#[macro_export]
macro_rules! on_writer {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::Db::Sqlite(sqlite) => {
                let $pool = &sqlite.writer;
                $body
            }
            $crate::Db::Postgres(pg) => {
                let $pool = pg;
                $body
            }
        }
    };
}

/// Runs `$body` with `$conn` bound to the connection of the open transaction `$tx`.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match &mut $tx.conn {
            $crate::TxConn::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::TxConn::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

/// True when `err` is a unique-constraint violation, which callers map to a domain conflict.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
