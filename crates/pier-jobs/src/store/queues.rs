//! Queue settings (pause, concurrency limit) and statistics.

use std::collections::BTreeMap;

use pier_core::Timestamp;
use pier_core::WorkspaceId;
use pier_db::{with_reader, with_writer};
use serde::Serialize;

use super::JobStore;
use crate::model::{JobState, QueueName};

/// A queue as `GET /v1/queues` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QueueInfo {
    pub name: String,
    pub paused: bool,
    /// The most jobs of this queue that may run at once, across all nodes.
    pub concurrency_limit: Option<u32>,
    /// Jobs per state, from counters every state change keeps current: reading them never
    /// counts rows, however long the queue.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub counts: BTreeMap<&'static str, u64>,
    /// Seconds the job at the head of the queue (the next to be claimed) has been due; 0 when
    /// none is due.
    pub oldest_available_age_secs: f64,
}

/// A queue setting with its new value.
enum Setting {
    Paused(bool),
    ConcurrencyLimit(Option<u32>),
}

impl Setting {
    fn column(&self) -> &'static str {
        match self {
            Self::Paused(_) => "paused",
            Self::ConcurrencyLimit(_) => "concurrency_limit",
        }
    }
}

#[derive(sqlx::FromRow)]
struct StateCount {
    queue: String,
    state: String,
    n: i64,
}

/// The queue's entry, created with zero counts on first sight.
fn queue_entry<'a>(queues: &'a mut BTreeMap<String, QueueInfo>, name: &str) -> &'a mut QueueInfo {
    queues.entry(name.to_owned()).or_insert_with(|| QueueInfo {
        name: name.to_owned(),
        paused: false,
        concurrency_limit: None,
        counts: JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
        oldest_available_age_secs: 0.0,
    })
}

impl JobStore {
    /// Statistics for every queue of the workspace that has jobs or settings.
    pub async fn queues(&self, workspace: &WorkspaceId) -> Result<Vec<QueueInfo>, sqlx::Error> {
        let now = self.clock.now();
        let counts: Vec<StateCount> = with_reader!(&self.db, pool => {
            sqlx::query_as(
                "SELECT queue, state, CAST(SUM(n) AS BIGINT) AS n FROM job_counts \
                 WHERE workspace_id = $1 GROUP BY queue, state",
            )
            .bind(workspace.as_str())
            .fetch_all(pool)
            .await
        })?;
        let settings: Vec<(String, bool, Option<i64>)> = with_reader!(&self.db, pool => {
            sqlx::query_as(
                "SELECT name, paused, concurrency_limit FROM queues WHERE workspace_id = $1",
            )
            .bind(workspace.as_str())
            .fetch_all(pool)
            .await
        })?;

        let mut queues: BTreeMap<String, QueueInfo> = BTreeMap::new();
        for (name, paused, limit) in settings {
            let info = queue_entry(&mut queues, &name);
            info.paused = paused;
            info.concurrency_limit = limit.and_then(|l| u32::try_from(l).ok());
        }
        for row in counts {
            let info = queue_entry(&mut queues, &row.queue);
            if let Some(state) = JobState::ALL.iter().find(|s| s.as_str() == row.state) {
                *info.counts.entry(state.as_str()).or_default() +=
                    u64::try_from(row.n).unwrap_or(0);
            }
        }
        for info in queues.values_mut() {
            let waiting = ["available", "scheduled", "retryable"];
            if waiting
                .iter()
                .any(|s| info.counts.get(s).is_some_and(|n| *n > 0))
            {
                info.oldest_available_age_secs = self.head_age(workspace, &info.name, now).await?;
            }
        }
        Ok(queues.into_values().collect())
    }

    /// How long the job at the head of the queue (the next one a claim takes) has been due:
    /// one index probe, never a scan.
    async fn head_age(
        &self,
        workspace: &WorkspaceId,
        queue: &str,
        now: Timestamp,
    ) -> Result<f64, sqlx::Error> {
        let head: Option<i64> = with_reader!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT run_at FROM jobs WHERE queue = $1 AND workspace_id = $2 \
                 AND state IN ('available', 'scheduled', 'retryable') AND run_at <= $3 \
                 ORDER BY priority, run_at, id LIMIT 1",
            )
            .bind(queue)
            .bind(workspace.as_str())
            .bind(now.as_micros())
            .fetch_optional(pool)
            .await
        })?;
        Ok(head.map_or(0.0, |at| {
            now.duration_since(Timestamp::from_micros(at)).as_secs_f64()
        }))
    }

    async fn upsert_setting(
        &self,
        workspace: &WorkspaceId,
        queue: &QueueName,
        setting: Setting,
    ) -> Result<(), sqlx::Error> {
        let now = self.clock.now().as_micros();
        let column = setting.column();
        let sql = format!(
            "INSERT INTO queues (workspace_id, name, {column}, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (workspace_id, name) DO UPDATE SET {column} = excluded.{column}, \
             updated_at = excluded.updated_at"
        );
        with_writer!(&self.db, pool => {
            let query = sqlx::query(&sql)
                .bind(workspace.as_str())
                .bind(queue.as_str());
            let query = match setting {
                Setting::Paused(paused) => query.bind(paused),
                Setting::ConcurrencyLimit(limit) => query.bind(limit.map(i64::from)),
            };
            query
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Pauses or resumes a queue: a paused queue hands out no jobs; running ones finish.
    pub async fn set_paused(
        &self,
        workspace: &WorkspaceId,
        queue: &QueueName,
        paused: bool,
    ) -> Result<(), sqlx::Error> {
        self.upsert_setting(workspace, queue, Setting::Paused(paused))
            .await?;
        if !paused {
            self.notifier.wake(queue.as_str());
        }
        Ok(())
    }

    /// Sets (or clears) how many jobs of the queue may run at once across all nodes.
    pub async fn set_concurrency_limit(
        &self,
        workspace: &WorkspaceId,
        queue: &QueueName,
        limit: Option<u32>,
    ) -> Result<(), sqlx::Error> {
        self.upsert_setting(workspace, queue, Setting::ConcurrencyLimit(limit))
            .await
    }
}
