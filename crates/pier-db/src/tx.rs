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
pub struct Tx {
    conn: Conn,
    after_commit: Vec<Hook>,
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
        let conn = match &db.0 {
            // The writer runs `synchronous = FULL`: every commit is on disk when it returns.
            Pools::Sqlite { writer, .. } => Conn::Sqlite(writer.begin().await?),
            Pools::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                if !durable {
                    sqlx::query("SET LOCAL synchronous_commit = off")
                        .execute(&mut *tx)
                        .await?;
                }
                Conn::Postgres(tx)
            }
        };
        Ok(Self {
            conn,
            after_commit: Vec::new(),
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

    /// Sends `payload` on `channel` to every listener (PostgreSQL `NOTIFY`) when, and only if,
    /// the transaction commits. A no-op on SQLite, where every writer is in this process; pair it
    /// with an [`after_commit`](Self::after_commit) hook for local listeners.
    pub async fn notify(&mut self, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
        if let Conn::Postgres(tx) = &mut self.conn {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
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
