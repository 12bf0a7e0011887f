//! Workspaces: the tenant boundary. Every tenant-owned row carries a `workspace_id`.

use std::sync::Arc;
use std::time::Duration;

use pier_cache::{Cache, Settings};
use pier_core::{Clock, Label, Timestamp, WorkspaceId};
use pier_db::{Db, Tx, with_reader, with_tx};

use crate::KeySecret;
use crate::api_keys::{ApiKey, ApiKeyStore, NewApiKey};

/// A workspace's name (see [`Label`]).
pub type WorkspaceName = Label;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub created_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct WorkspaceRow {
    id: String,
    name: String,
    created_at: i64,
}

impl From<WorkspaceRow> for Workspace {
    fn from(row: WorkspaceRow) -> Self {
        Self {
            id: WorkspaceId::from_trusted(row.id),
            name: row.name,
            created_at: Timestamp::from_micros(row.created_at),
        }
    }
}

/// Workspaces on the configured database. Every authenticated request reads its workspace, so
/// reads are served from a cache (shared by clones): a workspace never changes once created (no
/// route or command renames or deletes one), so an entry cannot go stale; the TTL only returns
/// the memory of workspaces no longer used. Whatever starts changing workspaces must invalidate.
#[derive(Debug, Clone)]
pub struct WorkspaceStore {
    db: Db,
    clock: Arc<dyn Clock>,
    cache: Cache<Workspace>,
}

impl WorkspaceStore {
    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        let settings = Settings {
            capacity: 10_000,
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(1),
            jitter: 0.2,
        };
        Self {
            db,
            cache: Cache::new("workspaces", settings, clock.clone()),
            clock,
        }
    }

    /// Creates a workspace and its first owner key in one transaction.
    pub async fn create_with_owner_key(
        &self,
        name: WorkspaceName,
    ) -> Result<(Workspace, ApiKey, KeySecret), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let created = self.create_in(&mut tx, name, KeySecret::generate()).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Creates a workspace with an owner key holding `secret`, inside the caller's transaction.
    pub(crate) async fn create_in(
        &self,
        tx: &mut Tx,
        name: WorkspaceName,
        secret: KeySecret,
    ) -> Result<(Workspace, ApiKey, KeySecret), sqlx::Error> {
        let now = self.clock.now();
        let workspace = Workspace {
            id: WorkspaceId::new(now),
            name: name.into_string(),
            created_at: now,
        };
        with_tx!(tx, conn => {
            sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(workspace.id.as_str())
                .bind(&workspace.name)
                .bind(now.as_micros())
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })?;
        let owner_key = NewApiKey::owner();
        let key = ApiKeyStore::new(self.db.clone(), self.clock.clone())
            .insert_in(tx, &workspace.id, owner_key, &secret)
            .await?;
        Ok((workspace, key, secret))
    }

    pub async fn get(&self, id: &WorkspaceId) -> Result<Option<Workspace>, sqlx::Error> {
        self.cache
            .get_or_load(id.as_str(), || self.read(id))
            .await
            .map_err(pier_db::unshare)
    }

    async fn read(&self, id: &WorkspaceId) -> Result<Option<Workspace>, sqlx::Error> {
        let row: Option<WorkspaceRow> = with_reader!(&self.db, pool => {
            sqlx::query_as("SELECT id, name, created_at FROM workspaces WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(Workspace::from))
    }

    /// Every workspace, oldest first: for operators on the command line, not for the API.
    pub async fn list_all(&self) -> Result<Vec<Workspace>, sqlx::Error> {
        let rows: Vec<WorkspaceRow> = with_reader!(&self.db, pool => {
            sqlx::query_as("SELECT id, name, created_at FROM workspaces ORDER BY created_at, id")
                .fetch_all(pool)
                .await
        })?;
        Ok(rows.into_iter().map(Workspace::from).collect())
    }
}
