//! Flags on the configured database: create, read, list by key, conditional replace and
//! delete, and the import of a whole flagd document; each change is recorded in the audit trail
//! ([`crate::audit`]), announced through the outbox (`flag.created`, `flag.updated`,
//! `flag.deleted`) and forgotten by every node's evaluation cache ([`crate::live`]), all in the
//! transaction that makes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pier_cache::Settings;
use pier_core::{Clock, Timestamp, WorkspaceId};
use pier_db::{Backend, Bind, Db, Outbox, Relay, Statement, Tx, with_reader, with_tx};
use serde_json::{Map, Value, json};

use crate::audit::{self, Action, Change, Record};
use crate::live::{LiveFlags, WorkspaceFlags};
use crate::schedule;
use crate::{Document, Flag, FlagKey};

/// A stored flag.
#[derive(Debug, Clone)]
pub struct StoredFlag {
    pub flag: Arc<Flag>,
    /// Moves on every change: the flag's ETag.
    pub version: i64,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("a flag with the key `{0}` exists")]
    Exists(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"created": ["new-checkout"], "updated": ["banner"], "deleted": [], "unchanged": 12}))]
pub struct Imported {
    /// Keys of the flags created, updated and deleted, and how many were left as they were.
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub deleted: Vec<String>,
    pub unchanged: usize,
}

#[derive(sqlx::FromRow)]
struct FlagRow {
    key: String,
    definition: String,
    version: i64,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: &str = "key, definition, version, created_by, created_at, updated_at";

impl TryFrom<FlagRow> for StoredFlag {
    type Error = sqlx::Error;

    fn try_from(row: FlagRow) -> Result<Self, sqlx::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        let key = FlagKey::parse(&row.key).map_err(decode)?;
        let definition: Value =
            serde_json::from_str(&row.definition).map_err(|e| decode(e.to_string()))?;
        let flag =
            Flag::parse(key, &definition, "", &Map::new()).map_err(|e| decode(e.to_string()))?;
        Ok(Self {
            flag: Arc::new(flag),
            version: row.version,
            created_by: row.created_by,
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
        })
    }
}

/// Flags, and the evaluation cache their writes keep current. Clones share both.
#[derive(Clone)]
pub struct FlagStore {
    pub(crate) db: Db,
    pub(crate) clock: Arc<dyn Clock>,
    outbox: Option<Arc<dyn Outbox>>,
    live: LiveFlags,
    /// How long the audit trail is kept (see [`FlagStore::prune`]); forever unless set.
    pub(crate) history: Duration,
}

impl std::fmt::Debug for FlagStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagStore").finish_non_exhaustive()
    }
}

impl FlagStore {
    pub fn new(db: Db, clock: Arc<dyn Clock>, cache: Settings) -> Self {
        Self {
            live: LiveFlags::new(cache, clock.clone()),
            db,
            clock,
            outbox: None,
            history: Duration::MAX,
        }
    }

    /// Keeps the audit trail (and ended schedules) for `retention`: [`FlagStore::prune`]
    /// forgets what is older, and change streams resume only from a change younger than it.
    #[must_use]
    pub fn with_history(mut self, retention: Duration) -> Self {
        self.history = retention;
        self
    }

    /// Announces every change through `outbox`, in the transaction of the change.
    #[must_use]
    pub fn with_outbox(mut self, outbox: Arc<dyn Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Adds the channel of changed workspaces to `relay`, so this node hears of other nodes'
    /// changes (PostgreSQL).
    #[must_use]
    pub fn listen(&self, relay: Relay) -> Relay {
        self.live.listen(relay)
    }

    pub async fn create(
        &self,
        workspace: &WorkspaceId,
        actor: &str,
        flag: Flag,
    ) -> Result<StoredFlag, FlagError> {
        let key = flag.key().to_string();
        let mut tx = self.begin_write(workspace).await?;
        let stored = self
            .insert(&mut tx, workspace, actor, flag)
            .await
            .map_err(|e| match pier_db::is_unique_violation(&e) {
                true => FlagError::Exists(key),
                false => FlagError::Db(e),
            })?;
        self.live.forget_on_commit(&mut tx, workspace).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// A transaction for changing `workspace`'s flags. On PostgreSQL it first takes the
    /// workspace's advisory lock, so the workspace's changes commit one at a time and their
    /// audit rows take their `seq` in commit order: the change feed ([`crate::feed`]) reads
    /// "everything after seq N" and must never see a lower seq appear later. (It also keeps two
    /// imports from interleaving.) SQLite has one writer at a time anyway.
    pub async fn begin_write(&self, workspace: &WorkspaceId) -> Result<Tx, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        if tx.backend() == Backend::Postgres {
            with_tx!(&mut tx, conn => {
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pier_flags/' || $1))")
                    .bind(workspace.as_str())
                    .execute(conn)
                    .await
                    .map(drop)
            })?;
        }
        Ok(tx)
    }

    async fn insert(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        actor: &str,
        flag: Flag,
    ) -> Result<StoredFlag, sqlx::Error> {
        let now = self.clock.now();
        let definition = flag.definition();
        let sql = format!(
            "INSERT INTO flags (workspace_id, key, definition, version, created_by, created_at, \
             updated_at) VALUES ($1, $2, $3, 1, $4, $5, $5) RETURNING {COLUMNS}"
        );
        let row: FlagRow = with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(flag.key().as_str())
                .bind(definition.to_string())
                .bind(actor)
                .bind(now.as_micros())
                .fetch_one(conn)
                .await
        })?;
        let stored = StoredFlag::try_from(row)?;
        let diff = audit::diff(&Value::Null, &definition);
        self.changed(tx, workspace, actor, Action::Created, &stored, diff)
            .await?;
        Ok(stored)
    }

    /// Records `action` on `stored` in the audit trail and announces it.
    async fn changed(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        actor: &str,
        action: Action,
        stored: &StoredFlag,
        diff: Value,
    ) -> Result<(), sqlx::Error> {
        let key = stored.flag.key();
        let definition = (action != Action::Deleted).then(|| stored.flag.definition());
        let record = Record {
            workspace,
            key,
            action,
            actor,
            diff,
            definition: definition.as_ref(),
            version: stored.version,
            at: self.clock.now(),
        };
        audit::record(tx, record).await?;
        let Some(outbox) = &self.outbox else {
            return Ok(());
        };
        let payload = match definition {
            None => json!({"key": key.as_str(), "version": stored.version}),
            Some(definition) => json!({
                "key": key.as_str(),
                "version": stored.version,
                "definition": definition,
            }),
        };
        outbox
            .publish(tx, workspace.as_str(), action.event_type(), payload)
            .await
    }

    pub async fn get(
        &self,
        workspace: &WorkspaceId,
        key: &FlagKey,
    ) -> Result<Option<StoredFlag>, sqlx::Error> {
        let row: Option<FlagRow> = self
            .db
            .find_owned("flags", COLUMNS, workspace.as_str(), "key", key.as_str())
            .await?;
        row.map(StoredFlag::try_from).transpose()
    }

    /// By key, after the key `after` (the last of the previous page), along the primary key.
    pub async fn list(
        &self,
        workspace: &WorkspaceId,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<StoredFlag>, sqlx::Error> {
        flags_statement(workspace, after, limit)
            .fetch_decoded::<FlagRow, StoredFlag>(&self.db)
            .await
    }

    /// Replaces `seen`'s definition with `flag`'s unless the flag changed since it was read
    /// (its version moved, or it is gone): then `Ok(None)`.
    pub async fn replace(
        &self,
        workspace: &WorkspaceId,
        actor: &str,
        seen: &StoredFlag,
        flag: Flag,
    ) -> Result<Option<StoredFlag>, sqlx::Error> {
        let mut tx = self.begin_write(workspace).await?;
        let stored = self
            .replace_in(&mut tx, workspace, actor, seen, flag)
            .await?;
        if stored.is_some() {
            tx.commit().await?;
        }
        Ok(stored)
    }

    async fn update(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        actor: &str,
        seen: &StoredFlag,
        flag: Flag,
    ) -> Result<Option<StoredFlag>, sqlx::Error> {
        let definition = flag.definition();
        let sql = format!(
            "UPDATE flags SET definition = $1, version = version + 1, updated_at = $2 \
             WHERE workspace_id = $3 AND key = $4 AND version = $5 RETURNING {COLUMNS}"
        );
        let row: Option<FlagRow> = with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .bind(definition.to_string())
                .bind(self.clock.now().as_micros())
                .bind(workspace.as_str())
                .bind(seen.flag.key().as_str())
                .bind(seen.version)
                .fetch_optional(conn)
                .await
        })?;
        let Some(row) = row else { return Ok(None) };
        let stored = StoredFlag::try_from(row)?;
        let diff = audit::diff(&seen.flag.definition(), &definition);
        self.changed(tx, workspace, actor, Action::Updated, &stored, diff)
            .await?;
        Ok(Some(stored))
    }

    /// Flag `key` read in `tx`, locked against other writers until it ends (PostgreSQL; the
    /// one SQLite writer is alone already).
    pub(crate) async fn locked(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        key: &FlagKey,
    ) -> Result<Option<StoredFlag>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM flags WHERE workspace_id = $1 AND key = $2 {}",
            self.db.backend().for_update()
        );
        let row: Option<FlagRow> = with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(key.as_str())
                .fetch_optional(conn)
                .await
        })?;
        row.map(StoredFlag::try_from).transpose()
    }

    /// [`replace`](Self::replace) within `tx`, the caller committing.
    pub(crate) async fn replace_in(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        actor: &str,
        seen: &StoredFlag,
        flag: Flag,
    ) -> Result<Option<StoredFlag>, sqlx::Error> {
        let stored = self.update(tx, workspace, actor, seen, flag).await?;
        if stored.is_some() {
            self.live.forget_on_commit(tx, workspace).await?;
        }
        Ok(stored)
    }

    /// Deletes `seen` unless its version moved (`Ok(false)`), cancelling its pending
    /// schedules. Its audit trail stays.
    pub async fn delete(
        &self,
        workspace: &WorkspaceId,
        actor: &str,
        seen: &StoredFlag,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin_write(workspace).await?;
        if !self.remove(&mut tx, workspace, actor, seen).await? {
            return Ok(false);
        }
        self.live.forget_on_commit(&mut tx, workspace).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn remove(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        actor: &str,
        seen: &StoredFlag,
    ) -> Result<bool, sqlx::Error> {
        let deleted = with_tx!(tx, conn => {
            sqlx::query("DELETE FROM flags WHERE workspace_id = $1 AND key = $2 AND version = $3")
                .bind(workspace.as_str())
                .bind(seen.flag.key().as_str())
                .bind(seen.version)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
        })? == 1;
        if deleted {
            self.changed(tx, workspace, actor, Action::Deleted, seen, Value::Null)
                .await?;
            schedule::cancel_pending(tx, workspace, seen.flag.key(), self.clock.now()).await?;
        }
        Ok(deleted)
    }

    /// Makes the workspace's flags those of `document`, in one transaction: new keys created,
    /// changed definitions updated, keys the document lacks deleted, each change audited and
    /// announced.
    pub async fn import(
        &self,
        workspace: &WorkspaceId,
        actor: &str,
        document: Document,
    ) -> Result<Imported, sqlx::Error> {
        let mut tx = self.begin_write(workspace).await?;
        let sql = format!("SELECT {COLUMNS} FROM flags WHERE workspace_id = $1");
        let rows: Vec<FlagRow> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql).bind(workspace.as_str()).fetch_all(conn).await
        })?;
        let mut current: BTreeMap<String, StoredFlag> = BTreeMap::new();
        for row in rows {
            let stored = StoredFlag::try_from(row)?;
            current.insert(stored.flag.key().to_string(), stored);
        }
        let mut imported = Imported::default();
        for flag in document.flags {
            let key = flag.key().to_string();
            match current.remove(&key) {
                None => {
                    self.insert(&mut tx, workspace, actor, flag).await?;
                    imported.created.push(key);
                }
                Some(seen) if seen.flag.definition() == flag.definition() => {
                    imported.unchanged += 1
                }
                Some(seen) => {
                    let updated = self.update(&mut tx, workspace, actor, &seen, flag).await?;
                    debug_assert!(updated.is_some(), "read in this transaction");
                    imported.updated.push(key);
                }
            }
        }
        for (key, seen) in current {
            self.remove(&mut tx, workspace, actor, &seen).await?;
            imported.deleted.push(key);
        }
        self.live.forget_on_commit(&mut tx, workspace).await?;
        tx.commit().await?;
        Ok(imported)
    }

    /// A flag's audit trail, newest first.
    pub async fn changes(
        &self,
        workspace: &WorkspaceId,
        key: &FlagKey,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Change>, sqlx::Error> {
        audit::list(&self.db, workspace, key, after, limit).await
    }

    /// Every flag of `workspace`, from this node's memory when it holds them.
    pub async fn live(&self, workspace: &WorkspaceId) -> Result<Arc<WorkspaceFlags>, sqlx::Error> {
        self.live
            .get_or_load(workspace, || async {
                self.load(workspace)
                    .await
                    .map(|flags| Some(Arc::new(flags)))
            })
            .await
    }

    /// Every flag of `workspace`, read from the database.
    pub(crate) async fn load(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<WorkspaceFlags, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM flags WHERE workspace_id = $1");
        let rows: Vec<FlagRow> = with_reader!(&self.db, pool => {
            sqlx::query_as(&sql).bind(workspace.as_str()).fetch_all(pool).await
        })?;
        let mut flags = BTreeMap::new();
        for row in rows {
            let stored = StoredFlag::try_from(row)?;
            flags.insert(stored.flag.key().to_string(), stored.flag);
        }
        Ok(WorkspaceFlags::new(flags))
    }

    pub(crate) fn live_flags(&self) -> &LiveFlags {
        &self.live
    }
}

/// The statement [`FlagStore::list`] runs, along the primary key `(workspace_id, key)`.
pub fn flags_statement(workspace: &WorkspaceId, after: Option<String>, limit: u32) -> Statement {
    Statement::keyset_page(
        &format!("SELECT {COLUMNS} FROM flags"),
        workspace.as_str(),
        Vec::new(),
        (&["key"], false),
        after.map(|key| vec![Bind::Text(key)]),
        limit,
    )
}
