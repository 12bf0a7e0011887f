//! Queue settings (pause, concurrency limit) and statistics.

use std::collections::BTreeMap;

use pier_core::validation::range_message;
use pier_core::{Patch, Timestamp, ValidationErrors, WorkspaceId};
use pier_db::{Tx, with_reader, with_tx};

use super::{JobStore, WAITING};
use crate::model::{JobError, JobState, QueueName};
use crate::notify::wake_after_commit;

/// How many queues of one workspace may have settings of their own. Settings rows exist only
/// while they differ from the defaults, so this bounds what arbitrary names can create.
pub const MAX_QUEUE_SETTINGS: i64 = 1000;

/// A queue's settings and statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    pub name: String,
    pub paused: bool,
    /// The most jobs of this queue that may run at once, across all nodes.
    pub concurrency_limit: Option<u32>,
    /// Jobs per state, from counters every state change keeps current: reading them never
    /// counts rows, however long the queue.
    pub counts: BTreeMap<&'static str, u64>,
    /// Seconds the job at the head of the queue (the next to be claimed) has been due; 0 when
    /// none is due.
    pub oldest_available_age_secs: f64,
}

/// The bounds of a queue's concurrency limit (`null` removes the limit).
pub const CONCURRENCY_LIMIT: std::ops::RangeInclusive<u32> = 1..=100_000;

/// A change to a queue's settings: `None` leaves a setting as it is (JSON Merge Patch). Built
/// only through [`QueuePatch::new`] or [`QueuePatch::paused`], so it holds no limit out of bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueuePatch {
    paused: Option<bool>,
    /// `Some(None)` removes the limit.
    concurrency_limit: Option<Option<u32>>,
}

impl QueuePatch {
    /// Pauses (`true`) or resumes (`false`) a queue, leaving its limit as it is.
    pub fn paused(paused: bool) -> Self {
        Self {
            paused: Some(paused),
            concurrency_limit: None,
        }
    }

    /// A merge patch of both settings; a limit outside [`CONCURRENCY_LIMIT`] is refused.
    pub fn new(
        paused: Option<bool>,
        concurrency_limit: Patch<u32>,
    ) -> Result<Self, ValidationErrors> {
        if let Patch::Set(limit) = concurrency_limit
            && !CONCURRENCY_LIMIT.contains(&limit)
        {
            return Err(ValidationErrors::single(
                "concurrency_limit",
                "out_of_range",
                format!("{}, or null", range_message(&CONCURRENCY_LIMIT)),
            ));
        }
        Ok(Self {
            paused,
            concurrency_limit: concurrency_limit.sent(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct QueueRow {
    name: String,
    paused: Option<bool>,
    concurrency_limit: Option<i64>,
    pending: i64,
    scheduled: i64,
    available: i64,
    running: i64,
    retryable: i64,
    completed: i64,
    discarded: i64,
    cancelled: i64,
    head_run_at: Option<i64>,
}

impl QueueRow {
    fn into_info(self, now: Timestamp) -> Result<QueueInfo, sqlx::Error> {
        let counts = [
            (JobState::Pending, self.pending),
            (JobState::Scheduled, self.scheduled),
            (JobState::Available, self.available),
            (JobState::Running, self.running),
            (JobState::Retryable, self.retryable),
            (JobState::Completed, self.completed),
            (JobState::Discarded, self.discarded),
            (JobState::Cancelled, self.cancelled),
        ];
        let counts = counts
            .into_iter()
            .map(|(state, n)| {
                // Every transition keeps the counters exact; a negative one is a bug to report,
                // never a value to clamp.
                u64::try_from(n).map(|n| (state.as_str(), n)).map_err(|_| {
                    super::decode_error(
                        "counter",
                        format!("queue {} has {n} {state} jobs", self.name),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(QueueInfo {
            name: self.name,
            paused: self.paused.unwrap_or(false),
            concurrency_limit: self.concurrency_limit.and_then(|l| u32::try_from(l).ok()),
            counts,
            oldest_available_age_secs: self.head_run_at.map_or(0.0, |at| {
                now.duration_since(Timestamp::from_micros(at)).as_secs_f64()
            }),
        })
    }
}

fn count(state: JobState) -> String {
    format!(
        "CAST(COALESCE(SUM(CASE WHEN c.state = '{0}' THEN c.n END), 0) AS BIGINT) AS {0}",
        state.as_str()
    )
}

impl JobStore {
    /// A page of the workspace's queues (those with jobs or settings), by name after `after`,
    /// in one statement: counters summed, the head's age read from one index probe each.
    /// Pier's own queues are not listed.
    pub async fn queues(
        &self,
        workspace: &WorkspaceId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<QueueInfo>, sqlx::Error> {
        self.read_queues(workspace, after, None, limit).await
    }

    /// One queue of the workspace; `None` when it has neither jobs nor settings.
    pub async fn queue(
        &self,
        workspace: &WorkspaceId,
        queue: &QueueName,
    ) -> Result<Option<QueueInfo>, sqlx::Error> {
        let mut found = self
            .read_queues(workspace, None, Some(queue.as_str()), 1)
            .await?;
        Ok(found.pop())
    }

    async fn read_queues(
        &self,
        workspace: &WorkspaceId,
        after: Option<&str>,
        only: Option<&str>,
        limit: u32,
    ) -> Result<Vec<QueueInfo>, sqlx::Error> {
        let now = self.clock.now();
        let counts: Vec<String> = JobState::ALL.into_iter().map(count).collect();
        let sql = format!(
            "WITH page AS (SELECT name FROM (SELECT queue AS name FROM job_counts \
             WHERE workspace_id = $1 UNION SELECT name FROM queues WHERE workspace_id = $1) AS n \
             WHERE ($2 IS NULL OR name > $2) AND ($5 IS NULL OR name = $5) \
             AND name NOT LIKE 'pier.%' ORDER BY name LIMIT $3) \
             SELECT page.name, s.paused, s.concurrency_limit, {}, \
             (SELECT j.run_at FROM jobs j WHERE j.workspace_id = $1 AND j.queue = page.name \
             AND j.state IN {WAITING} AND j.run_at <= $4 ORDER BY j.priority, j.run_at, j.id \
             LIMIT 1) AS head_run_at \
             FROM page LEFT JOIN queues s ON s.workspace_id = $1 AND s.name = page.name \
             LEFT JOIN job_counts c ON c.workspace_id = $1 AND c.queue = page.name \
             GROUP BY page.name, s.paused, s.concurrency_limit ORDER BY page.name",
            counts.join(", ")
        );
        let rows: Vec<QueueRow> = with_reader!(&self.db, pool => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(after)
                .bind(i64::from(limit))
                .bind(now.as_micros())
                .bind(only)
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter().map(|row| row.into_info(now)).collect()
    }

    /// Changes a queue's settings (pause, concurrency limit) and returns it. A paused queue hands
    /// out no jobs (running ones finish); the limit caps how many run at once across all nodes.
    pub async fn update_queue(
        &self,
        workspace: &WorkspaceId,
        queue: &QueueName,
        patch: QueuePatch,
    ) -> Result<QueueInfo, JobError> {
        let mut tx = self.db.begin().await?;
        self.write_settings(&mut tx, workspace, queue, patch)
            .await?;
        if patch.paused == Some(false) {
            wake_after_commit(
                &self.notifier,
                &mut tx,
                [(workspace.clone(), queue.to_string())],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(self
            .queue(workspace, queue)
            .await?
            .unwrap_or_else(|| QueueInfo::empty(queue)))
    }

    async fn write_settings(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        queue: &QueueName,
        patch: QueuePatch,
    ) -> Result<(), JobError> {
        let current: Option<(bool, Option<i64>)> = with_tx!(tx, conn => {
            sqlx::query_as(
                "SELECT paused, concurrency_limit FROM queues WHERE workspace_id = $1 AND name = $2",
            )
            .bind(workspace.as_str())
            .bind(queue.as_str())
            .fetch_optional(conn)
            .await
        })?;
        let (paused, limit) = current.unwrap_or((false, None));
        let paused = patch.paused.unwrap_or(paused);
        let limit = patch.concurrency_limit.map_or(limit, |l| l.map(i64::from));
        if !paused && limit.is_none() {
            // Back to the defaults: no row needed.
            with_tx!(tx, conn => {
                sqlx::query("DELETE FROM queues WHERE workspace_id = $1 AND name = $2")
                    .bind(workspace.as_str())
                    .bind(queue.as_str())
                    .execute(conn)
                    .await
                    .map(drop)
            })?;
            return Ok(());
        }
        if current.is_none() {
            let rows: i64 = with_tx!(tx, conn => {
                sqlx::query_scalar("SELECT COUNT(*) FROM queues WHERE workspace_id = $1")
                    .bind(workspace.as_str())
                    .fetch_one(conn)
                    .await
            })?;
            if rows >= MAX_QUEUE_SETTINGS {
                return Err(JobError::TooManyQueues(MAX_QUEUE_SETTINGS));
            }
        }
        let now = self.clock.now().as_micros();
        with_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO queues (workspace_id, name, paused, concurrency_limit, updated_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_id, name) DO UPDATE SET \
                 paused = excluded.paused, concurrency_limit = excluded.concurrency_limit, \
                 updated_at = excluded.updated_at",
            )
            .bind(workspace.as_str())
            .bind(queue.as_str())
            .bind(paused)
            .bind(limit)
            .bind(now)
            .execute(conn)
            .await
            .map(drop)
        })?;
        Ok(())
    }
}

impl QueueInfo {
    /// A queue with no jobs and default settings.
    fn empty(queue: &QueueName) -> Self {
        Self {
            name: queue.as_str().to_owned(),
            paused: false,
            concurrency_limit: None,
            counts: JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
            oldest_available_age_secs: 0.0,
        }
    }
}
