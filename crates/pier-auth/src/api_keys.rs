//! API keys: creation, lookup, keyset-paginated listing and revocation.

use std::sync::Arc;
use std::time::Duration;

use pier_cache::{Cache, Settings};
use pier_core::{Clock, Label, Timestamp, ValidationErrors, define_id};
use pier_db::{Bind, Db, Relay, Statement, Tx, with_reader, with_tx};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::key_use::{self, KeyUses};
use crate::{KeySecret, Permission, PermissionSet, Role, WorkspaceId};

define_id!(
    /// An API key id, `key_…`. Not secret: the key itself is never stored.
    ApiKeyId,
    "key"
);

/// A key's label (see [`Label`]).
pub type KeyName = Label;

/// A key as a caller asked for it, as sent; [`NewApiKey::new`] checks it.
#[derive(Debug, Clone, Default)]
pub struct KeyRequest {
    pub name: String,
    /// `member` when `None`.
    pub role: Option<String>,
    /// Narrows the role; `None` grants everything the role allows.
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<Timestamp>,
}

/// What a new key is made from, only built valid by [`NewApiKey::new`]; the secret is generated
/// by the store. Whether a caller may hand it out is [`Principal::may_manage`](crate::Principal::may_manage).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    name: KeyName,
    role: Role,
    scopes: Option<PermissionSet>,
    expires_at: Option<Timestamp>,
}

impl NewApiKey {
    /// Checks a request: a valid name and role, scopes that only narrow the role, and an
    /// expiry after `now`.
    pub fn new(request: KeyRequest, now: Timestamp) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let name = errors.check("name", "invalid", KeyName::parse(&request.name));
        let role = match request.role {
            None => Some(Role::Member),
            Some(r) => errors.check("role", "invalid", r.parse::<Role>()),
        };
        let mut scopes = None;
        if let Some(list) = request.scopes {
            let mut set = Vec::with_capacity(list.len());
            for (i, text) in list.iter().enumerate() {
                let field = format!("scopes[{i}]");
                if let Some(p) = errors.check(&field, "invalid", text.parse::<Permission>()) {
                    match role {
                        Some(r) if !r.permissions().contains(p) => errors.add(
                            &field,
                            "scope_exceeds_role",
                            format!(
                                "the {r} role does not include `{p}`; scopes can only narrow a role"
                            ),
                        ),
                        _ => set.push(p),
                    }
                }
            }
            scopes = Some(set.into_iter().collect());
        }
        if request.expires_at.is_some_and(|t| t <= now) {
            errors.add("expires_at", "in_past", "must be in the future");
        }
        errors.into_result()?;
        match (name, role) {
            (Some(name), Some(role)) => Ok(Self {
                name,
                role,
                scopes,
                expires_at: request.expires_at,
            }),
            _ => Err(ValidationErrors::single("body", "invalid", "invalid key")),
        }
    }

    /// A new workspace's first key: everything, for good.
    pub(crate) fn owner() -> Self {
        Self {
            name: KeyName::parse("owner").unwrap_or_else(|_| unreachable!("valid literal")),
            role: Role::Owner,
            scopes: None,
            expires_at: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn permissions(&self) -> PermissionSet {
        effective(self.role, self.scopes)
    }
}

fn effective(role: Role, scopes: Option<PermissionSet>) -> PermissionSet {
    scopes.map_or(role.permissions(), |s| s.intersect(role.permissions()))
}

/// An API key as stored, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    pub role: Role,
    /// The permissions this key is limited to; `null` means everything its role allows.
    pub scopes: Option<Vec<Permission>>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    /// The role's permissions narrowed by the key's scopes.
    pub fn permissions(&self) -> PermissionSet {
        effective(
            self.role,
            self.scopes.as_ref().map(|s| s.iter().copied().collect()),
        )
    }
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    workspace_id: String,
    name: String,
    prefix: String,
    role: String,
    scopes: Option<String>,
    created_at: i64,
    last_used_at: Option<i64>,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct StoredKey {
    #[sqlx(flatten)]
    key: ApiKeyRow,
    secret_hash: String,
}

const COLUMNS: &str = "id, workspace_id, name, prefix, role, scopes, created_at, last_used_at, \
                       expires_at, revoked_at";

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = sqlx::Error;
    fn try_from(row: ApiKeyRow) -> Result<Self, sqlx::Error> {
        let role = row
            .role
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?;
        Ok(Self {
            id: ApiKeyId::from_trusted(row.id),
            workspace_id: WorkspaceId::from_trusted(row.workspace_id),
            name: row.name,
            prefix: row.prefix,
            role,
            scopes: row
                .scopes
                .map(|s| PermissionSet::from_names(&s).iter().collect()),
            created_at: Timestamp::from_micros(row.created_at),
            last_used_at: row.last_used_at.map(Timestamp::from_micros),
            expires_at: row.expires_at.map(Timestamp::from_micros),
            revoked_at: row.revoked_at.map(Timestamp::from_micros),
        })
    }
}

fn convert(rows: Vec<ApiKeyRow>) -> Result<Vec<ApiKey>, sqlx::Error> {
    rows.into_iter().map(ApiKey::try_from).collect()
}

/// Filters for listing keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeyFilter {
    pub role: Option<Role>,
}

/// The notification channel of revocations; the payload is the revoked key's secret hash, the
/// key it is cached under.
const REVOKED: &str = "pier_auth";
/// Keys remembered at most.
const CACHE_CAPACITY: u64 = 10_000;
/// How long a secret that matches no key is remembered as unknown (at most the TTL).
const UNKNOWN_TTL: Duration = Duration::from_secs(1);

/// API keys on the configured database. Clones share one cache of recently authenticated keys
/// and one record of their uses.
///
/// The cache (a [`pier_cache::Cache`] by secret hash) means most requests learn who is calling
/// without a database read. Revoking a key invalidates it at once on the node that revokes it
/// and, on PostgreSQL, on every other node through a notification sent in the revoking
/// transaction; a node whose listener reconnects clears the cache, since it may have missed
/// some. The TTL bounds what is left: a key revoked with the offline `pier keys revoke` on
/// SQLite, while the server runs, stops working within it. Expiry needs nothing: it is checked
/// on every use, from the cached key. Uses are written off the request path (see
/// [`crate::key_use`]).
#[derive(Debug, Clone)]
pub struct ApiKeyStore {
    db: Db,
    clock: Arc<dyn Clock>,
    cache: Cache<ApiKey>,
    uses: Arc<KeyUses>,
}

impl ApiKeyStore {
    /// How long a key found by its secret is remembered unless revoked sooner.
    pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);

    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        Self::with_cache_ttl(db, clock, Self::DEFAULT_CACHE_TTL)
    }

    pub fn with_cache_ttl(db: Db, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        let settings = Settings {
            capacity: CACHE_CAPACITY,
            ttl,
            negative_ttl: UNKNOWN_TTL.min(ttl),
            jitter: 0.2,
        };
        Self {
            db,
            cache: Cache::new("api_keys", settings, clock.clone()),
            clock,
            uses: Arc::default(),
        }
    }

    /// Adds the revocation channel to `relay`: keys revoked on other nodes leave this node's
    /// cache (PostgreSQL; on SQLite every revocation through the API happens in this process).
    #[must_use]
    pub fn listen(&self, relay: Relay) -> Relay {
        self.cache.listen(relay, REVOKED)
    }

    /// How many keys the cache holds (for tests and metrics).
    pub async fn cached_keys(&self) -> u64 {
        self.cache.sync().await;
        self.cache.len()
    }

    /// Creates a key with a fresh secret, returned once and never stored.
    pub async fn create(
        &self,
        workspace: &WorkspaceId,
        new: NewApiKey,
    ) -> Result<(ApiKey, KeySecret), sqlx::Error> {
        let secret = KeySecret::generate();
        let mut tx = self.db.begin().await?;
        let key = self.insert_in(&mut tx, workspace, new, &secret).await?;
        tx.commit().await?;
        Ok((key, secret))
    }

    pub(crate) async fn insert_in(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        new: NewApiKey,
        secret: &KeySecret,
    ) -> Result<ApiKey, sqlx::Error> {
        let now = self.clock.now();
        let key = ApiKey {
            id: ApiKeyId::new(now),
            workspace_id: workspace.clone(),
            name: new.name.into_string(),
            prefix: secret.display_prefix(),
            role: new.role,
            scopes: new.scopes.map(|s| s.iter().collect()),
            created_at: now,
            last_used_at: None,
            expires_at: new.expires_at,
            revoked_at: None,
        };
        with_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO api_keys (id, workspace_id, name, prefix, secret_hash, role, scopes, \
                 created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(key.id.as_str())
            .bind(workspace.as_str())
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(secret.hash())
            .bind(key.role.as_str())
            .bind(new.scopes.map(PermissionSet::to_names))
            .bind(now.as_micros())
            .bind(key.expires_at.map(Timestamp::as_micros))
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(key)
    }

    pub async fn get(
        &self,
        workspace: &WorkspaceId,
        id: &ApiKeyId,
    ) -> Result<Option<ApiKey>, sqlx::Error> {
        let row: Option<ApiKeyRow> = self
            .db
            .find_owned("api_keys", COLUMNS, workspace.as_str(), "id", id.as_str())
            .await?;
        row.map(ApiKey::try_from).transpose()
    }

    /// Looks a presented key up by its hash, in any workspace. The index finds the row; the
    /// stored hash is then compared in constant time, so no comparison in our code leaks how
    /// much of a guess matched. Served from the cache when it can be.
    pub async fn find_by_secret(&self, secret: &KeySecret) -> Result<Option<ApiKey>, sqlx::Error> {
        let hash = secret.hash();
        self.cache
            .get_or_load(&hash, || self.read_by_hash(&hash))
            .await
            .map_err(pier_db::unshare)
    }

    async fn read_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS}, secret_hash FROM api_keys WHERE secret_hash = $1");
        let row: Option<StoredKey> = with_reader!(&self.db, pool => {
            sqlx::query_as(&sql).bind(hash).fetch_optional(pool).await
        })?;
        row.filter(|r| bool::from(r.secret_hash.as_bytes().ct_eq(hash.as_bytes())))
            .map(|r| ApiKey::try_from(r.key))
            .transpose()
    }

    /// Newest first. `after` is the `(created_at, id)` of the last key of the previous page;
    /// `(created_at, id)` is unique, so keys sharing a timestamp are neither skipped nor repeated.
    pub async fn list(
        &self,
        workspace: &WorkspaceId,
        filter: &ApiKeyFilter,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<ApiKey>, sqlx::Error> {
        let rows: Vec<ApiKeyRow> = api_keys_statement(workspace, filter, after, limit)
            .fetch_all(&self.db)
            .await?;
        convert(rows)
    }

    /// Every key of a workspace, newest first: for the offline CLI.
    pub async fn list_all(&self, workspace: &WorkspaceId) -> Result<Vec<ApiKey>, sqlx::Error> {
        self.list(workspace, &ApiKeyFilter::default(), None, u32::MAX >> 1)
            .await
    }

    /// Revokes `seen` unless it changed since it was read (compare-and-set on the fields that
    /// move), so a conditional `DELETE` with `If-Match` cannot act on a stale view. Returns the
    /// revoked key, or `None` when the key changed or was revoked meanwhile.
    pub async fn revoke(&self, seen: &ApiKey) -> Result<Option<ApiKey>, sqlx::Error> {
        let now = self.clock.now();
        let sql = format!(
            "UPDATE api_keys SET revoked_at = $1 WHERE workspace_id = $2 AND id = $3 \
             AND revoked_at IS NULL AND last_used_at IS NOT DISTINCT FROM $4 \
             RETURNING {COLUMNS}, secret_hash"
        );
        let mut tx = self.db.begin().await?;
        let row: Option<StoredKey> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .bind(now.as_micros())
                .bind(seen.workspace_id.as_str())
                .bind(seen.id.as_str())
                .bind(seen.last_used_at.map(Timestamp::as_micros))
                .fetch_optional(conn)
                .await
        })?;
        if let Some(row) = &row {
            // Every node forgets the key when this commits: this one at once, the others when
            // the notification reaches them.
            self.cache
                .forget_on_commit(&mut tx, REVOKED, row.secret_hash.clone())
                .await?;
        }
        tx.commit().await?;
        row.map(|r| ApiKey::try_from(r.key)).transpose()
    }

    /// Notes that `key` was used now; [`record_uses`](Self::record_uses) writes it. A key whose
    /// stored use is already within the resolution needs nothing, which most requests learn
    /// from the cached key without taking the shared lock.
    pub(crate) fn note_use(&self, key: &ApiKey) {
        let now = self.clock.now();
        if key
            .last_used_at
            .is_some_and(|last| now.duration_since(last) < key_use::RESOLUTION)
        {
            return;
        }
        self.uses.note(key.id.as_str(), now);
    }

    /// Writes the noted key uses every [`key_use::FLUSH_EVERY`] until `stop`; the caller writes
    /// the last ones with [`write_uses`](Self::write_uses) once requests have finished.
    pub async fn record_uses(&self, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(key_use::FLUSH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            if let Err(err) = self.write_uses().await {
                tracing::warn!(error = %err, "could not record key uses");
            }
        }
    }

    /// Writes the key uses noted so far, in one transaction; uses that fail to be written wait
    /// for the next pass (within the bound on pending uses).
    pub async fn write_uses(&self) -> Result<(), sqlx::Error> {
        let uses = self.uses.take();
        if uses.is_empty() {
            return Ok(());
        }
        match self.write_noted(&uses).await {
            Ok(()) => {
                self.uses.wrote(uses, self.clock.now());
                Ok(())
            }
            Err(err) => {
                self.uses.put_back(uses);
                Err(err)
            }
        }
    }

    /// Writes `uses`, which are in key id order: nodes writing the same keys lock their rows in
    /// one order and cannot deadlock each other.
    async fn write_noted(&self, uses: &[(String, Timestamp)]) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        for (id, at) in uses {
            with_tx!(&mut tx, conn => {
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
                     AND (last_used_at IS NULL OR last_used_at < $1)",
                )
                .bind(at.as_micros())
                .bind(id)
                .execute(conn)
                .await
                .map(|r| r.rows_affected())
            })?;
        }
        tx.commit().await
    }
}

/// The statement [`ApiKeyStore::list`] runs: along `api_keys_by_workspace`, or
/// `api_keys_by_role` (migration 23) for one role.
pub fn api_keys_statement(
    workspace: &WorkspaceId,
    filter: &ApiKeyFilter,
    after: Option<(i64, String)>,
    limit: u32,
) -> Statement {
    let role = filter
        .role
        .map(|r| ("role", Bind::Text(r.as_str().to_owned())));
    Statement::keyset_page(
        &format!("SELECT {COLUMNS} FROM api_keys"),
        workspace.as_str(),
        role.into_iter().collect(),
        (&["created_at", "id"], true),
        after.map(|(at, id)| vec![Bind::Int(at), Bind::Text(id)]),
        limit,
    )
}
