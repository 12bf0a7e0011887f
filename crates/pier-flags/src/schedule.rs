//! Scheduled changes ("turn this flag on at 09:00"): a JSON Merge Patch of a flag's definition
//! applied at `apply_at` by a job on Pier's internal queue `pier.flags`.
//!
//! The patch is checked against the definition when the change is scheduled, and again against
//! the definition as it is when the job runs: a patch that no longer makes a valid flag, or a
//! flag gone, fails the schedule (with the reason) and changes nothing. Applying is one
//! transaction that locks the flag, marks the schedule applied only while it is still pending
//! and updates the flag the way the API does (version, audit entry, `flag.updated`, cache), so a
//! cancel racing the job either wins (nothing applied) or loses (409), and a job that runs twice
//! applies once. A cancelled schedule's job is left to run: it finds nothing pending.

use std::time::Duration;

use pier_core::{Timestamp, ValidationErrors, WorkspaceId};
use pier_db::{Bind, Statement, Tx, with_reader, with_tx};
use pier_jobs::{JobContext, JobFailure, JobSpec, JobStore, QueueName, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Flag, FlagKey, FlagStore};

pier_core::define_id!(
    /// A scheduled change of a flag.
    ScheduleId,
    "sched"
);

/// The job kind that applies a scheduled change.
const KIND: &str = "flag.schedule";

/// The furthest ahead a change can be scheduled: a year and a day, so "this day next year"
/// fits while a typo in the year does not.
pub const MAX_AHEAD: Duration = Duration::from_secs(366 * 24 * 3600);

/// Pier's internal queue of scheduled flag changes.
pub fn queue() -> QueueName {
    QueueName::internal("flags")
}

/// Where a scheduled change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = FlagScheduleStatus)]
pub enum Status {
    /// Waiting for `apply_at`; can be cancelled.
    Pending,
    Applied,
    Cancelled,
    /// Not applied: `reason` says why.
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Applied => "applied",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

/// A scheduled change of a flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub id: ScheduleId,
    pub flag_key: String,
    pub apply_at: Timestamp,
    /// The merge patch of the flag's definition.
    pub patch: Value,
    pub status: Status,
    /// Why a schedule failed or was cancelled other than by hand.
    pub reason: Option<String>,
    /// The flag's version the change made, once applied.
    pub applied_version: Option<i64>,
    pub created_by: String,
    pub created_at: Timestamp,
    /// When it was applied, cancelled or failed.
    pub ended_at: Option<Timestamp>,
}

/// Why scheduling or cancelling was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("no such flag")]
    FlagNotFound,
    #[error("no such schedule")]
    NotFound,
    #[error("the schedule is {}: only a pending one can be cancelled", .0.as_str())]
    Ended(Status),
    #[error(transparent)]
    Invalid(ValidationErrors),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct ScheduleRow {
    id: String,
    flag_key: String,
    apply_at: i64,
    patch: String,
    status: String,
    reason: Option<String>,
    applied_version: Option<i64>,
    created_by: String,
    created_at: i64,
    ended_at: Option<i64>,
}

const COLUMNS: &str = "id, flag_key, apply_at, patch, status, reason, applied_version, \
                       created_by, created_at, ended_at";

impl TryFrom<ScheduleRow> for Schedule {
    type Error = sqlx::Error;

    fn try_from(row: ScheduleRow) -> Result<Self, sqlx::Error> {
        let status = match row.status.as_str() {
            "pending" => Status::Pending,
            "applied" => Status::Applied,
            "cancelled" => Status::Cancelled,
            "failed" => Status::Failed,
            other => return Err(sqlx::Error::Decode(format!("flag schedule {other}").into())),
        };
        Ok(Self {
            id: ScheduleId::from_trusted(row.id),
            flag_key: row.flag_key,
            apply_at: Timestamp::from_micros(row.apply_at),
            patch: serde_json::from_str(&row.patch).map_err(|e| sqlx::Error::Decode(e.into()))?,
            status,
            reason: row.reason,
            applied_version: row.applied_version,
            created_by: row.created_by,
            created_at: Timestamp::from_micros(row.created_at),
            ended_at: row.ended_at.map(Timestamp::from_micros),
        })
    }
}

/// What the job of a scheduled change carries (its workspace is the job's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleJob {
    pub schedule: String,
}

/// Scheduled changes of flags: scheduling (which enqueues the job), reading, cancelling, and
/// the job handler that applies them. Clones share the stores.
#[derive(Debug, Clone)]
pub struct FlagSchedules {
    flags: FlagStore,
    jobs: JobStore,
}

/// `definition` patched by `patch`, checked as `key`'s definition, faults named under `path`.
fn patched(
    key: &FlagKey,
    definition: Value,
    patch: &Value,
    path: &str,
) -> Result<Flag, ValidationErrors> {
    let mut definition = definition;
    crate::audit::apply(&mut definition, patch.clone());
    Flag::parse(key.clone(), &definition, path, &Map::new())
}

impl FlagSchedules {
    pub fn new(flags: FlagStore, jobs: JobStore) -> Self {
        Self { flags, jobs }
    }

    /// Schedules `patch` (a merge patch of the definition) for flag `key` at `apply_at`, which
    /// must be in the future and at most [`MAX_AHEAD`]; the patch must make a valid flag of
    /// the current definition (faults named under `patch`).
    pub async fn create(
        &self,
        workspace: &WorkspaceId,
        actor: &str,
        key: &FlagKey,
        apply_at: Timestamp,
        patch: Map<String, Value>,
    ) -> Result<Schedule, ScheduleError> {
        let now = self.flags.clock.now();
        let mut errors = ValidationErrors::new();
        if apply_at <= now {
            errors.add("apply_at", "in_past", "must be in the future");
        } else if apply_at > now.saturating_add(MAX_AHEAD) {
            errors.add("apply_at", "too_far", "must be at most 366 days ahead");
        }
        let stored = self
            .flags
            .get(workspace, key)
            .await?
            .ok_or(ScheduleError::FlagNotFound)?;
        let patch = Value::Object(patch);
        if let Err(faults) = patched(key, stored.flag.definition(), &patch, "patch") {
            faults
                .into_vec()
                .into_iter()
                .for_each(|f| errors.add(&f.field, &f.code, f.message));
        }
        errors.into_result().map_err(ScheduleError::Invalid)?;

        let id = ScheduleId::new(now);
        let payload = ScheduleJob {
            schedule: id.to_string(),
        };
        let payload = serde_json::to_value(payload).map_err(|e| sqlx::Error::Decode(e.into()))?;
        let job = JobSpec::new(KIND)
            .payload(payload)
            .unique_key(id.as_str())
            .run_at(apply_at)
            .build()
            .map(|job| job.on_queue(queue()))
            .map_err(|e| sqlx::Error::Protocol(format!("a flag schedule's job: {e}")))?;
        let sql = format!(
            "INSERT INTO flag_schedules (workspace_id, id, flag_key, apply_at, patch, status, \
             created_by, created_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7) \
             RETURNING {COLUMNS}"
        );
        let mut tx = self.flags.db.begin().await?;
        let row: ScheduleRow = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(id.as_str())
                .bind(key.as_str())
                .bind(apply_at.as_micros())
                .bind(patch.to_string())
                .bind(actor)
                .bind(now.as_micros())
                .fetch_one(conn)
                .await
        })?;
        self.jobs.enqueue_in(&mut tx, workspace, &[job]).await?;
        tx.commit().await?;
        Ok(Schedule::try_from(row)?)
    }

    pub async fn get(
        &self,
        workspace: &WorkspaceId,
        key: &FlagKey,
        id: &ScheduleId,
    ) -> Result<Option<Schedule>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM flag_schedules WHERE workspace_id = $1 AND id = $2 \
             AND flag_key = $3"
        );
        let row: Option<ScheduleRow> = with_reader!(&self.flags.db, pool => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(id.as_str())
                .bind(key.as_str())
                .fetch_optional(pool)
                .await
        })?;
        row.map(Schedule::try_from).transpose()
    }

    /// A flag's schedules, newest first, after the schedule `after` (the id of the last of the
    /// previous page).
    pub async fn list(
        &self,
        workspace: &WorkspaceId,
        key: &FlagKey,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Schedule>, sqlx::Error> {
        schedules_statement(workspace, key, after, limit)
            .fetch_decoded::<ScheduleRow, Schedule>(&self.flags.db)
            .await
    }

    /// Cancels a pending schedule; one that ended already is [`ScheduleError::Ended`].
    pub async fn cancel(
        &self,
        workspace: &WorkspaceId,
        key: &FlagKey,
        id: &ScheduleId,
    ) -> Result<Schedule, ScheduleError> {
        let sql = format!(
            "UPDATE flag_schedules SET status = 'cancelled', ended_at = $1 \
             WHERE workspace_id = $2 AND id = $3 AND flag_key = $4 AND status = 'pending' \
             RETURNING {COLUMNS}"
        );
        let mut tx = self.flags.db.begin().await?;
        let row: Option<ScheduleRow> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .bind(self.flags.clock.now().as_micros())
                .bind(workspace.as_str())
                .bind(id.as_str())
                .bind(key.as_str())
                .fetch_optional(conn)
                .await
        })?;
        tx.commit().await?;
        match row {
            Some(row) => Ok(Schedule::try_from(row)?),
            None => match self.get(workspace, key, id).await? {
                Some(schedule) => Err(ScheduleError::Ended(schedule.status)),
                None => Err(ScheduleError::NotFound),
            },
        }
    }

    /// Applies schedule `id` if it is still pending: see the module's docs.
    pub async fn apply(&self, workspace: &WorkspaceId, id: &ScheduleId) -> Result<(), sqlx::Error> {
        // Through the workspace's write lock, as every change of its flags (see the feed).
        let mut tx = self.flags.begin_write(workspace).await?;
        let sql =
            format!("SELECT {COLUMNS} FROM flag_schedules WHERE workspace_id = $1 AND id = $2");
        let row: Option<ScheduleRow> = with_tx!(&mut tx, conn => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(id.as_str())
                .fetch_optional(conn)
                .await
        })?;
        let Some(schedule) = row.map(Schedule::try_from).transpose()? else {
            return Ok(());
        };
        if schedule.status != Status::Pending {
            return Ok(());
        }
        let key = FlagKey::parse(&schedule.flag_key).map_err(|e| sqlx::Error::Decode(e.into()))?;
        let Some(seen) = self.flags.locked(&mut tx, workspace, &key).await? else {
            return self.fail(tx, workspace, id, "the flag was deleted").await;
        };
        let flag = match patched(&key, seen.flag.definition(), &schedule.patch, "patch") {
            Ok(flag) => flag,
            Err(faults) => {
                let reason = format!("the patch no longer makes a valid flag: {faults}");
                return self.fail(tx, workspace, id, &reason).await;
            }
        };
        let applied = Ended {
            status: Status::Applied,
            reason: None,
            version: Some(seen.version + 1),
        };
        if !self.end(&mut tx, workspace, id, applied).await? {
            return Ok(());
        }
        let actor = format!("schedule:{id} (by {})", schedule.created_by);
        let updated = self
            .flags
            .replace_in(&mut tx, workspace, &actor, &seen, flag)
            .await?;
        if updated.is_none() {
            return Err(sqlx::Error::Protocol("a locked flag changed".into()));
        }
        tx.commit().await
    }

    async fn fail(
        &self,
        mut tx: Tx,
        workspace: &WorkspaceId,
        id: &ScheduleId,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        let failed = Ended {
            status: Status::Failed,
            reason: Some(reason),
            version: None,
        };
        if self.end(&mut tx, workspace, id, failed).await? {
            tx.commit().await?;
        }
        Ok(())
    }

    /// Ends schedule `id` if it is still pending; false if it is not.
    async fn end(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        id: &ScheduleId,
        ended: Ended<'_>,
    ) -> Result<bool, sqlx::Error> {
        let changed = with_tx!(tx, conn => {
            sqlx::query(
                "UPDATE flag_schedules SET status = $1, reason = $2, applied_version = $3, \
                 ended_at = $4 WHERE workspace_id = $5 AND id = $6 AND status = 'pending'",
            )
            .bind(ended.status.as_str())
            .bind(ended.reason)
            .bind(ended.version)
            .bind(self.flags.clock.now().as_micros())
            .bind(workspace.as_str())
            .bind(id.as_str())
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(changed == 1)
    }
}

/// How a schedule ends.
struct Ended<'a> {
    status: Status,
    reason: Option<&'a str>,
    version: Option<i64>,
}

/// Cancels the pending schedules of flag `key`, which is being deleted in `tx`.
pub(crate) async fn cancel_pending(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    key: &FlagKey,
    at: Timestamp,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE flag_schedules SET status = 'cancelled', reason = 'the flag was deleted', \
             ended_at = $1 WHERE workspace_id = $2 AND flag_key = $3 AND status = 'pending'",
        )
        .bind(at.as_micros())
        .bind(workspace.as_str())
        .bind(key.as_str())
        .execute(conn)
        .await
        .map(drop)
    })
}

impl Worker for FlagSchedules {
    const KIND: &'static str = KIND;
    type Payload = ScheduleJob;

    async fn run(&self, ctx: JobContext, job: ScheduleJob) -> Result<(), JobFailure> {
        let id = ScheduleId::parse(&job.schedule)
            .map_err(|e| JobFailure::new(format!("a flag schedule job: {e}")))?;
        Ok(self.apply(&ctx.workspace_id, &id).await?)
    }
}

/// The statement [`FlagSchedules::list`] runs, along `(workspace_id, flag_key, id)`.
pub fn schedules_statement(
    workspace: &WorkspaceId,
    key: &FlagKey,
    after: Option<String>,
    limit: u32,
) -> Statement {
    Statement::keyset_page(
        &format!("SELECT {COLUMNS} FROM flag_schedules"),
        workspace.as_str(),
        vec![("flag_key", Bind::Text(key.as_str().to_owned()))],
        (&["id"], true),
        after.map(|id| vec![Bind::Text(id)]),
        limit,
    )
}
