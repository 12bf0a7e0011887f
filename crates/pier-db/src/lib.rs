//! Storage plumbing shared by every capability: the [`Db`] handle that picks SQLite or PostgreSQL,
//! the migration runner, transactions, the dialect seam and the server's own settings.
//!
//! Capability crates own their SQL (and their migrations, see [`Migration`]). Statements are
//! written once in the dialect both engines share (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`, row-value comparisons, `->>` on JSON) and run through [`with_reader!`],
//! [`with_writer!`] or [`with_tx!`], which expand the same code once per backend so each is
//! compiled against its native driver. The few places where the dialects differ are methods of
//! [`Backend`] (row locks, reading a JSON list as rows) and of [`Db`] / [`Tx`] (relaxed commits,
//! notifications); capability code never sees a pool or a connection type of its own choosing.

mod connect;
mod dialect;
pub mod group;
mod listen;
mod migrate;
mod outbox;
mod settings;
mod statement;
mod tx;

use std::time::Duration;

pub use connect::{DatabaseUrl, InvalidDatabaseUrl};
pub use dialect::{Backend, JsonList, OwnedKeys, ids_in};
pub use listen::{LISTENER_APPLICATION_NAME, Notice, Relay};
pub use migrate::Migration;
pub use outbox::{Outbox, Publishing};
pub use settings::server_secret;
pub use statement::{Bind, Statement};
pub use tx::Tx;

pub use sqlx;

/// The foundation tables (settings, workspaces, API keys, idempotency records). Migration 1
/// predates per-capability schemas and, since a merged migration is never edited, stays whole
/// here; later changes to those tables are migrations of the crates that own them.
pub const MIGRATIONS: &[Migration] = migrations!(1 => "0001_foundation");

/// A cheap-to-clone handle to the configured database.
#[derive(Debug, Clone)]
pub struct Db(Pools);

/// An embedded SQLite database has one writer connection (SQLite allows one writer at a time, so
/// in-process writers queue here instead of spinning on `SQLITE_BUSY`) and a pool of read-only
/// connections that WAL lets run beside it.
#[derive(Debug, Clone)]
enum Pools {
    Sqlite {
        writer: sqlx::SqlitePool,
        reader: sqlx::SqlitePool,
    },
    Postgres {
        pool: sqlx::PgPool,
        /// How the notification listener connects, outside `pool` (see [`Relay`]).
        listen: listen::ListenOptions,
    },
}

impl Db {
    pub fn backend(&self) -> Backend {
        match &self.0 {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres { .. } => Backend::Postgres,
        }
    }

    /// Starts a durable write transaction: once `commit` returns, the change survives a crash
    /// of the process, the operating system or the machine.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Tx::begin(self, true).await
    }

    /// Starts a write transaction whose commit does not wait for the disk. Only for records
    /// whose loss in a crash the caller's protocol absorbs (a lost claim or completion of a job
    /// means it runs again, which at-least-once delivery already allows).
    pub async fn begin_relaxed(&self) -> Result<Tx, sqlx::Error> {
        Tx::begin(self, false).await
    }

    /// The row of a tenant-owned `table` whose `key_column` (`id`, or another key unique within
    /// a workspace: a link's slug, an event type's name) is `key`, if it belongs to `workspace`:
    /// the one lookup every capability makes, written once with its workspace filter
    /// (invariant 1). `table`, `columns` and `key_column` are the caller's constants, never
    /// input.
    pub async fn find_owned<T>(
        &self,
        table: &str,
        columns: &str,
        workspace: &str,
        key_column: &str,
        key: &str,
    ) -> Result<Option<T>, sqlx::Error>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        let sql =
            format!("SELECT {columns} FROM {table} WHERE workspace_id = $1 AND {key_column} = $2");
        with_reader!(self, pool => {
            sqlx::query_as(&sql)
                .bind(workspace)
                .bind(key)
                .fetch_optional(pool)
                .await
        })
    }

    /// [`Tx::delete_owned`], whatever the version, in its own transaction.
    pub async fn delete_owned(
        &self,
        table: &str,
        workspace: &str,
        id: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        let deleted = tx.delete_owned(table, workspace, id, None).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// Checks the database answers, for readiness probes.
    pub async fn ping(&self, timeout: Duration) -> Result<(), sqlx::Error> {
        let probe = async {
            with_reader!(self, pool => sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(drop))
        };
        tokio::time::timeout(timeout, probe)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// Writes a consistent copy of the SQLite database to `path` with `VACUUM INTO`: one read
    /// transaction, so writers carry on meanwhile. PostgreSQL has its own tools (`pg_dump`).
    pub async fn copy_sqlite_to(&self, path: &str) -> Result<(), sqlx::Error> {
        match &self.0 {
            Pools::Sqlite { reader, .. } => sqlx::query("VACUUM INTO $1")
                .bind(path)
                .execute(reader)
                .await
                .map(drop),
            Pools::Postgres { .. } => Err(sqlx::Error::Configuration(
                "only an SQLite database can be copied this way".into(),
            )),
        }
    }

    /// Sets `pier_db_connections{state}` (in use, idle; over every pool) and
    /// `pier_db_connections_max`, for a metrics scrape.
    pub fn sample_metrics(&self) {
        let (size, idle, max) = match &self.0 {
            Pools::Sqlite { writer, reader } => (
                writer.size() + reader.size(),
                writer.num_idle() + reader.num_idle(),
                writer.options().get_max_connections() + reader.options().get_max_connections(),
            ),
            Pools::Postgres { pool, .. } => (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            ),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
        metrics::gauge!("pier_db_connections", "state" => "in_use").set(f64::from(size - idle));
        metrics::gauge!("pier_db_connections", "state" => "idle").set(f64::from(idle));
        metrics::gauge!("pier_db_connections_max").set(f64::from(max));
    }

    pub async fn close(&self) {
        match &self.0 {
            Pools::Sqlite { writer, reader } => {
                reader.close().await;
                writer.close().await;
            }
            Pools::Postgres { pool, .. } => {
                pool.close().await;
            }
        }
    }
}

/// What the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::tx::ConnRef;

    /// A pool of one backend, borrowed.
    #[derive(Debug)]
    pub enum PoolRef<'a> {
        Sqlite(&'a sqlx::SqlitePool),
        Postgres(&'a sqlx::PgPool),
    }

    pub fn reader(db: &crate::Db) -> PoolRef<'_> {
        match &db.0 {
            crate::Pools::Sqlite { reader, .. } => PoolRef::Sqlite(reader),
            crate::Pools::Postgres { pool, .. } => PoolRef::Postgres(pool),
        }
    }

    pub fn writer(db: &crate::Db) -> PoolRef<'_> {
        match &db.0 {
            crate::Pools::Sqlite { writer, .. } => PoolRef::Sqlite(writer),
            crate::Pools::Postgres { pool, .. } => PoolRef::Postgres(pool),
        }
    }
}

/// `with_reader!(db, pool => expr)` evaluates `expr` once per backend, with `pool` bound to that
/// backend's pool for reads (SQLite's read-only connections, or the PostgreSQL pool).
#[macro_export]
macro_rules! with_reader {
    ($db:expr, $pool:ident => $body:expr) => {
        match $crate::__private::reader($db) {
            $crate::__private::PoolRef::Sqlite($pool) => $body,
            $crate::__private::PoolRef::Postgres($pool) => $body,
        }
    };
}

/// `with_writer!(db, pool => expr)`: like [`with_reader!`], for single-statement writes (SQLite's
/// writer connection).
#[macro_export]
macro_rules! with_writer {
    ($db:expr, $pool:ident => $body:expr) => {
        match $crate::__private::writer($db) {
            $crate::__private::PoolRef::Sqlite($pool) => $body,
            $crate::__private::PoolRef::Postgres($pool) => $body,
        }
    };
}

/// `with_tx!(tx, conn => expr)` evaluates `expr` with `conn` bound to the connection of the open
/// transaction `tx` (a `&mut Tx`).
#[macro_export]
macro_rules! with_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $crate::Tx::__conn($tx) {
            $crate::__private::ConnRef::Sqlite($conn) => $body,
            $crate::__private::ConnRef::Postgres($conn) => $body,
        }
    };
}

/// The error of one database operation that several callers awaited together (a cache's single
/// load): the error itself for the last holder, else a protocol error that describes it.
pub fn unshare(shared: std::sync::Arc<sqlx::Error>) -> sqlx::Error {
    std::sync::Arc::try_unwrap(shared).unwrap_or_else(|e| sqlx::Error::Protocol(e.to_string()))
}

/// True when `err` is a unique-constraint violation, which callers map to a domain conflict.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Whether `err` is a row naming another that does not exist, on either backend.
pub fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}
