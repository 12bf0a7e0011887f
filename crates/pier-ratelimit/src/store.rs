//! Named policies that workspaces define through the API, one row each. A workspace holds at
//! most [`PolicyStore::MAX_PER_WORKSPACE`] of them.
//!
//! A check needs its policy on every call, so [`PolicyStore::policy`] answers from a
//! [`pier_cache::Cache`] of ready-to-decide [`Policy`] values, "no such policy" included: a
//! check reads no database. Every write (create, replace, delete) forgets its policy when it
//! commits: on this node at once, on the others through a notification sent in the same
//! transaction (PostgreSQL `NOTIFY`; SQLite has one process). A node whose listener reconnects
//! forgets everything, since it may have missed some. The TTL bounds what is left.

use std::sync::Arc;
use std::time::Duration;

use pier_cache::{Cache, Settings};
use pier_core::{Clock, Timestamp, WorkspaceId};
use pier_db::{Bind, Db, Relay, Statement, Tx, with_reader, with_tx};

use crate::policy::{Algorithm, FailureMode, Policy, PolicySpec};

/// The notification channel of changed policies; the payload is the policy's cache key.
const CHANGED: &str = "pier_ratelimit";
/// Policies (and unknown names) remembered at most: a hundred workspaces' full sets.
const CACHE_CAPACITY: u64 = 100_000;
/// How long a policy, or a name known to be no policy, is served from the cache at most.
/// Writes invalidate at once; this only bounds what a missed invalidation could leave.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub name: String,
    pub spec: PolicySpec,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    name: String,
    algorithm: String,
    quota: i64,
    period_seconds: i64,
    burst: i64,
    failure_mode: String,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: &str =
    "name, algorithm, quota, period_seconds, burst, failure_mode, created_at, updated_at";

impl TryFrom<PolicyRow> for PolicyRecord {
    type Error = sqlx::Error;

    fn try_from(row: PolicyRow) -> Result<Self, sqlx::Error> {
        let corrupt = |what: &str| sqlx::Error::Decode(format!("stored policy: {what}").into());
        let algorithm = Algorithm::parse(&row.algorithm).ok_or_else(|| corrupt("algorithm"))?;
        let failure_mode =
            FailureMode::parse(&row.failure_mode).ok_or_else(|| corrupt("failure_mode"))?;
        let count = |n: i64| u64::try_from(n).map_err(|_| corrupt("negative count"));
        let spec = PolicySpec::new(
            algorithm,
            count(row.quota)?,
            count(row.period_seconds)?,
            Some(count(row.burst)?),
            failure_mode,
        )
        .map_err(|e| corrupt(&e.to_string()))?;
        Ok(Self {
            name: row.name,
            spec,
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
        })
    }
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a workspace holds at most {max} rate-limit policies")]
    TooMany { max: i64 },
    #[error("the policy changed since it was read")]
    Changed,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Policies on the configured database. Clones share one cache of policies by workspace and
/// name.
#[derive(Debug, Clone)]
pub struct PolicyStore {
    db: Db,
    clock: Arc<dyn Clock>,
    cache: Cache<Policy>,
}

/// What a policy is cached under: names cannot hold a `/` (see [`crate::check_name`]).
fn cache_key(workspace: &WorkspaceId, name: &str) -> String {
    format!("{workspace}/{name}")
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Binds `$1`–`$8` of a write: name, the spec's five columns, now, the workspace.
fn bind_policy<'q, DB, O>(
    query: sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>,
    (name, spec, now, workspace): (&'q str, PolicySpec, i64, &'q str),
) -> sqlx::query::QueryAs<'q, DB, O, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(name)
        .bind(spec.algorithm().as_str())
        .bind(int(spec.limit()))
        .bind(int(spec.period().as_secs()))
        .bind(int(spec.burst()))
        .bind(spec.failure_mode().as_str())
        .bind(now)
        .bind(workspace)
}

impl PolicyStore {
    pub const MAX_PER_WORKSPACE: i64 = 1000;

    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        let settings = Settings {
            capacity: CACHE_CAPACITY,
            ttl: CACHE_TTL,
            negative_ttl: CACHE_TTL,
            jitter: 0.2,
        };
        Self {
            cache: Cache::new("rate_limit_policies", settings, clock.clone()),
            db,
            clock,
        }
    }

    /// Adds the channel of changed policies to `relay` (PostgreSQL; on SQLite every write
    /// happens in this process).
    #[must_use]
    pub fn listen(&self, relay: Relay) -> Relay {
        self.cache.listen(relay, CHANGED)
    }

    /// The policy `name` of `workspace`, ready to decide with, from the cache when it can be.
    pub async fn policy(
        &self,
        workspace: &WorkspaceId,
        name: &str,
    ) -> Result<Option<Policy>, sqlx::Error> {
        let load = || async {
            let record = self.get(workspace, name).await?;
            Ok(record.map(|r| Policy::workspace(workspace, name, r.spec)))
        };
        self.cache
            .get_or_load(&cache_key(workspace, name), load)
            .await
            .map_err(pier_db::unshare)
    }

    /// Makes every node forget the policy once `tx` commits: this one at once, the others by
    /// `NOTIFY` (PostgreSQL).
    async fn forget_on_commit(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        name: &str,
    ) -> Result<(), sqlx::Error> {
        self.cache
            .forget_on_commit(tx, CHANGED, cache_key(workspace, name))
            .await
    }

    /// The stored policy, read from the database (for reads that show or compare it).
    pub async fn get(
        &self,
        workspace: &WorkspaceId,
        name: &str,
    ) -> Result<Option<PolicyRecord>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM rate_limit_policies WHERE workspace_id = $1 AND name = $2"
        );
        let row: Option<PolicyRow> = with_reader!(&self.db, pool => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(name)
                .fetch_optional(pool)
                .await
        })?;
        row.map(PolicyRecord::try_from).transpose()
    }

    /// By name; `after` is the last name of the previous page.
    pub async fn list(
        &self,
        workspace: &WorkspaceId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<PolicyRecord>, sqlx::Error> {
        policies_statement(workspace, after, limit)
            .fetch_decoded::<PolicyRow, PolicyRecord>(&self.db)
            .await
    }

    /// Creates or replaces a policy; with `seen`, only a policy still as it was read (else
    /// [`StoreError::Changed`]). Returns the policy and whether it was created.
    pub async fn put(
        &self,
        workspace: &WorkspaceId,
        name: &str,
        spec: PolicySpec,
        seen: Option<&PolicyRecord>,
    ) -> Result<(PolicyRecord, bool), StoreError> {
        let now = self.clock.now().as_micros();
        let mut tx = self.db.begin().await?;
        let values = (name, spec, now, workspace.as_str());
        // Insert unless it exists (a concurrent insert of the same name makes this one a
        // replacement), then replace, compare-and-set on `updated_at` when `seen` is given.
        let inserted = match seen {
            Some(_) => None,
            None => {
                let count: i64 = with_tx!(&mut tx, conn => {
                    sqlx::query_scalar(
                        "SELECT count(*) FROM rate_limit_policies WHERE workspace_id = $1",
                    )
                    .bind(workspace.as_str())
                    .fetch_one(conn)
                    .await
                })?;
                let sql = format!(
                    "INSERT INTO rate_limit_policies ({COLUMNS}, workspace_id) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $7, $8 WHERE $9 \
                     ON CONFLICT (workspace_id, name) DO NOTHING RETURNING {COLUMNS}"
                );
                with_tx!(&mut tx, conn => {
                    bind_policy(sqlx::query_as::<_, PolicyRow>(&sql), values)
                        .bind(count < Self::MAX_PER_WORKSPACE)
                        .fetch_optional(conn)
                        .await
                })?
            }
        };
        let (row, created) = match inserted {
            Some(row) => (row, true),
            None => {
                let sql = format!(
                    "UPDATE rate_limit_policies SET algorithm = $2, quota = $3, \
                     period_seconds = $4, burst = $5, failure_mode = $6, updated_at = $7 \
                     WHERE workspace_id = $8 AND name = $1 AND ($9 IS NULL OR updated_at = $9) \
                     RETURNING {COLUMNS}"
                );
                let updated = with_tx!(&mut tx, conn => {
                    bind_policy(sqlx::query_as::<_, PolicyRow>(&sql), values)
                        .bind(seen.map(|s| s.updated_at.as_micros()))
                        .fetch_optional(conn)
                        .await
                })?;
                match (updated, seen) {
                    (Some(row), _) => (row, false),
                    (None, Some(_)) => return Err(StoreError::Changed),
                    // Neither inserted nor there: the workspace is full.
                    (None, None) => {
                        return Err(StoreError::TooMany {
                            max: Self::MAX_PER_WORKSPACE,
                        });
                    }
                }
            }
        };
        self.forget_on_commit(&mut tx, workspace, name).await?;
        tx.commit().await?;
        Ok((PolicyRecord::try_from(row)?, created))
    }

    /// Deletes a policy; with `seen`, only if it is still what was read. Returns whether one
    /// was deleted.
    pub async fn delete(
        &self,
        workspace: &WorkspaceId,
        name: &str,
        seen: Option<&PolicyRecord>,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let affected = with_tx!(&mut tx, conn => {
            sqlx::query(
                "DELETE FROM rate_limit_policies WHERE workspace_id = $1 AND name = $2 \
                 AND ($3 IS NULL OR updated_at = $3)",
            )
            .bind(workspace.as_str())
            .bind(name)
            .bind(seen.map(|s| s.updated_at.as_micros()))
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
        })?;
        if affected > 0 {
            self.forget_on_commit(&mut tx, workspace, name).await?;
        }
        tx.commit().await?;
        Ok(affected > 0)
    }
}

/// The statement [`PolicyStore::list`] runs, along the primary key.
pub fn policies_statement(workspace: &WorkspaceId, after: Option<&str>, limit: u32) -> Statement {
    Statement::keyset_page(
        &format!("SELECT {COLUMNS} FROM rate_limit_policies"),
        workspace.as_str(),
        Vec::new(),
        (&["name"], false),
        after.map(|name| vec![Bind::Text(name.to_owned())]),
        limit,
    )
}
