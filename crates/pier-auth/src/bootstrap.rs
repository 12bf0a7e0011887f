//! First start: a default workspace and an owner key, created exactly once per database.

use std::sync::Arc;

use pier_core::Clock;
use pier_db::{Db, with_tx};

use crate::{ApiKey, KeySecret, Workspace, WorkspaceName, WorkspaceStore};

/// What the first start created; the secret is shown once and never again.
#[derive(Debug)]
pub struct Bootstrap {
    pub workspace: Workspace,
    pub key: ApiKey,
    pub secret: KeySecret,
}

/// Creates the default workspace and owner key unless this database was bootstrapped before.
/// `chosen` lets automation pick the key. A marker row in `settings` makes this safe when several
/// nodes start at once: only the transaction that inserts the marker creates anything.
pub async fn bootstrap(
    db: &Db,
    clock: Arc<dyn Clock>,
    chosen: Option<KeySecret>,
) -> Result<Option<Bootstrap>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let claimed = with_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ('bootstrapped', 'true') \
             ON CONFLICT (name) DO NOTHING",
        )
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })? == 1;
    if !claimed {
        return Ok(None);
    }
    let name = WorkspaceName::parse("default").unwrap_or_else(|_| unreachable!("valid literal"));
    let (workspace, key, secret) = WorkspaceStore::new(db.clone(), clock)
        .create_in(&mut tx, name, chosen.unwrap_or_else(KeySecret::generate))
        .await?;
    tx.commit().await?;
    Ok(Some(Bootstrap {
        workspace,
        key,
        secret,
    }))
}
