//! A write transaction on either backend. Capabilities take `&mut Tx` so that a state change and
//! the jobs or events it causes commit together (the transactional outbox, invariant 2).

use sqlx::{Postgres, Sqlite, Transaction};

#[derive(Debug)]
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }

    /// Rolls back explicitly; dropping an uncommitted `Tx` rolls back too.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx) => tx.rollback().await,
            Self::Postgres(tx) => tx.rollback().await,
        }
    }
}
