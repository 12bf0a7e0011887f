//! A write transaction on either backend. Capabilities take `&mut Tx` so that a state change and
//! the jobs or events it causes commit together (the transactional outbox, invariant 2).

use sqlx::{Postgres, Sqlite, Transaction};

/// The connection of an open transaction; reach it through [`on_tx!`](crate::on_tx).
#[derive(Debug)]
pub enum TxConn {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

type Hook = Box<dyn FnOnce() + Send>;

pub struct Tx {
    pub conn: TxConn,
    after_commit: Vec<Hook>,
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Tx {
    pub(crate) fn new(conn: TxConn) -> Self {
        Self {
            conn,
            after_commit: Vec::new(),
        }
    }

    /// Runs `hook` once the transaction has committed (never on rollback), e.g. to wake
    /// in-process workers for jobs the transaction enqueued.
    pub fn after_commit(&mut self, hook: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(hook));
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.conn {
            TxConn::Sqlite(tx) => tx.commit().await?,
            TxConn::Postgres(tx) => tx.commit().await?,
        }
        for hook in self.after_commit {
            hook();
        }
        Ok(())
    }

    /// Rolls back explicitly; dropping an uncommitted `Tx` rolls back too.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.conn {
            TxConn::Sqlite(tx) => tx.rollback().await,
            TxConn::Postgres(tx) => tx.rollback().await,
        }
    }
}
