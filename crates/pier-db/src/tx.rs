//! A write transaction on either backend. Capabilities take `&mut Tx` so that a state change and
//! the jobs or events it causes commit together (the transactional outbox; see
//! `docs/architecture.md`, invariant 2).

use sqlx::{PgConnection, Postgres, Sqlite, SqliteConnection, Transaction};

use crate::{Db, Pools};

enum Conn {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// A transaction's connection, borrowed; reached through [`with_tx!`](crate::with_tx).
#[doc(hidden)]
#[derive(Debug)]
pub enum ConnRef<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

type Hook = Box<dyn FnOnce() + Send>;

/// An open write transaction; dropping it uncommitted rolls it back.
///
/// Its span (`db.transaction`, a child of the request or job span that began it) lasts from the connection's
/// acquisition to the commit or rollback, so a trace shows each transaction of a request or
/// job. Waiting for a pooled connection is measured in `pier_db_acquire_duration_seconds`.
pub struct Tx {
    conn: Conn,
    after_commit: Vec<Hook>,
    _span: tracing::Span,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl Tx {
    pub(crate) async fn begin(db: &Db, durable: bool) -> Result<Self, sqlx::Error> {
        // Only inside a request's or job's span: background loops' transactions would each
        // start a trace of their own.
        let span = match tracing::Span::current().is_none() {
            true => tracing::Span::none(),
            false => tracing::info_span!("db.transaction", db.system = db.backend().otel_name()),
        };
        let started = std::time::Instant::now();
        let conn = match &db.0 {
            // The writer runs `synchronous = FULL`: every commit is on disk when it returns.
            Pools::Sqlite { writer, .. } => Conn::Sqlite(writer.begin().await?),
            // One round trip either way: a relaxed transaction's setting travels with its BEGIN.
            Pools::Postgres { pool, .. } if durable => Conn::Postgres(pool.begin().await?),
            Pools::Postgres { pool, .. } => Conn::Postgres(
                pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off")
                    .await?,
            ),
        };
        metrics::histogram!("pier_db_acquire_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(Self {
            conn,
            after_commit: Vec::new(),
            _span: span,
        })
    }

    pub fn backend(&self) -> crate::Backend {
        match self.conn {
            Conn::Sqlite(_) => crate::Backend::Sqlite,
            Conn::Postgres(_) => crate::Backend::Postgres,
        }
    }

    #[doc(hidden)]
    pub fn __conn(&mut self) -> ConnRef<'_> {
        match &mut self.conn {
            Conn::Sqlite(tx) => ConnRef::Sqlite(&mut *tx),
            Conn::Postgres(tx) => ConnRef::Postgres(&mut *tx),
        }
    }

    /// Sends each of `payloads` on `channel` to every listener (PostgreSQL `NOTIFY`, in one
    /// statement) when, and only if, the transaction commits. A no-op on SQLite, where every
    /// writer is in this process; pair it with an [`after_commit`](Self::after_commit) hook for
    /// local listeners.
    pub async fn notify(&mut self, channel: &str, payloads: &[String]) -> Result<(), sqlx::Error> {
        if let (Conn::Postgres(tx), false) = (&mut self.conn, payloads.is_empty()) {
            sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
                .bind(channel)
                .bind(payloads)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Deletes the row `id` of `table` if it belongs to `workspace` and, with a `version`, only
    /// while its `version` column still has it (a delete conditional on what the caller read);
    /// `false` when there was none (another workspace's row included) or it had moved on.
    pub async fn delete_owned(
        &mut self,
        table: &str,
        workspace: &str,
        id: &str,
        version: Option<i64>,
    ) -> Result<bool, sqlx::Error> {
        let unchanged = if version.is_some() {
            " AND version = $3"
        } else {
            ""
        };
        let sql = format!("DELETE FROM {table} WHERE workspace_id = $1 AND id = $2{unchanged}");
        crate::with_tx!(self, conn => {
            let query = sqlx::query(&sql).bind(workspace).bind(id);
            let query = match version {
                Some(version) => query.bind(version),
                None => query,
            };
            query.execute(conn).await.map(|done| done.rows_affected() > 0)
        })
    }

    /// Runs `hook` once the transaction has committed (never on rollback), e.g. to wake
    /// in-process workers for jobs the transaction enqueued.
    pub fn after_commit(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(hook));
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.conn {
            Conn::Sqlite(tx) => tx.commit().await?,
            Conn::Postgres(tx) => tx.commit().await?,
        }
        for hook in self.after_commit {
            hook();
        }
        Ok(())
    }

    /// Rolls back explicitly; dropping an uncommitted `Tx` rolls back too.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.conn {
            Conn::Sqlite(tx) => tx.rollback().await,
            Conn::Postgres(tx) => tx.rollback().await,
        }
    }
}
