//! Named policies that workspaces define through the API, one row each. A workspace holds at
//! most [`PolicyStore::MAX_PER_WORKSPACE`] of them.

use std::sync::Arc;

use pier_core::{Clock, Timestamp, WorkspaceId};
use pier_db::{Bind, Db, Statement, with_reader, with_tx, with_writer};

use crate::policy::{Algorithm, FailureMode, PolicySpec};

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

/// Policies on the configured database.
#[derive(Debug, Clone)]
pub struct PolicyStore {
    db: Db,
    clock: Arc<dyn Clock>,
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
        Self { db, clock }
    }

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
        let rows: Vec<PolicyRow> = policies_statement(workspace, after, limit)
            .fetch_all(&self.db)
            .await?;
        rows.into_iter().map(PolicyRecord::try_from).collect()
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
        let affected = with_writer!(&self.db, pool => {
            sqlx::query(
                "DELETE FROM rate_limit_policies WHERE workspace_id = $1 AND name = $2 \
                 AND ($3 IS NULL OR updated_at = $3)",
            )
            .bind(workspace.as_str())
            .bind(name)
            .bind(seen.map(|s| s.updated_at.as_micros()))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
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
