//! Queue settings (pause, concurrency limit) and statistics.

use std::collections::BTreeMap;

use pier_auth::WorkspaceId;
use pier_core::Timestamp;
use pier_db::{on_reader, on_writer};
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
    /// Jobs per state. Waiting and running jobs are counted live; finished ones come from
    /// counters kept as jobs finish and are pruned, so this never scans finished jobs.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub counts: BTreeMap<&'static str, u64>,
    /// Seconds the oldest available job has waited; 0 when none waits.
    pub oldest_available_age_secs: f64,
}

#[derive(sqlx::FromRow)]
struct LiveCount {
    queue: String,
    state: String,
    n: i64,
    oldest: Option<i64>,
}

impl JobStore {
    /// Statistics for every queue of the workspace that has jobs or settings.
    pub async fn queues(&self, workspace: &WorkspaceId) -> Result<Vec<QueueInfo>, sqlx::Error> {
        let now = self.clock.now();
        // Each branch reads one partial index: the waiting set, the running set, the counters.
        let live: Vec<LiveCount> = on_reader!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT queue, CASE WHEN state = 'available' OR run_at <= $2 THEN 'available' \
                 ELSE state END AS state, COUNT(*) AS n, \
                 MIN(CASE WHEN state = 'available' OR run_at <= $2 THEN run_at END) AS oldest \
                 FROM jobs WHERE workspace_id = $1 AND state IN ('available', 'scheduled', 'retryable') \
                 GROUP BY 1, 2 \
                 UNION ALL SELECT queue, 'running', COUNT(*), NULL FROM jobs \
                 WHERE workspace_id = $1 AND state = 'running' GROUP BY 1 \
                 UNION ALL SELECT queue, state, CAST(SUM(n) AS BIGINT), NULL FROM job_counts WHERE workspace_id = $1 \
                 GROUP BY queue, state",
            )
            .bind(workspace.as_str())
            .bind(now.as_micros())
            .fetch_all(pool)
            .await
        })?;
        let settings: Vec<(String, bool, Option<i64>)> = on_reader!(&self.db, |pool| {
            sqlx::query_as(
                "SELECT name, paused, concurrency_limit FROM queues WHERE workspace_id = $1",
            )
            .bind(workspace.as_str())
            .fetch_all(pool)
            .await
        })?;

        let mut queues: BTreeMap<String, QueueInfo> = BTreeMap::new();
        let entry = |queues: &mut BTreeMap<String, QueueInfo>, name: &str| {
            queues
                .entry(name.to_owned())
                .or_insert_with(|| QueueInfo {
                    name: name.to_owned(),
                    paused: false,
                    concurrency_limit: None,
                    counts: JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect(),
                    oldest_available_age_secs: 0.0,
                })
                .clone()
        };
        for (name, paused, limit) in settings {
            let mut info = entry(&mut queues, &name);
            info.paused = paused;
            info.concurrency_limit = limit.and_then(|l| u32::try_from(l).ok());
            queues.insert(name, info);
        }
        for row in live {
            let mut info = entry(&mut queues, &row.queue);
            if let Some(state) = JobState::ALL.iter().find(|s| s.as_str() == row.state) {
                *info.counts.entry(state.as_str()).or_default() +=
                    u64::try_from(row.n).unwrap_or(0);
            }
            if let Some(oldest) = row.oldest {
                let age = now
                    .duration_since(Timestamp::from_micros(oldest))
                    .as_secs_f64();
                info.oldest_available_age_secs = info.oldest_available_age_secs.max(age);
            }
            queues.insert(row.queue, info);
        }
        Ok(queues.into_values().collect())
    }

    async fn upsert_setting(
        &self,
        workspace: &WorkspaceId,
        queue: &QueueName,
        column: &str,
        value: Option<i64>,
    ) -> Result<(), sqlx::Error> {
        let now = self.clock.now().as_micros();
        let sql = format!(
            "INSERT INTO queues (workspace_id, name, {column}, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (workspace_id, name) DO UPDATE SET {column} = excluded.{column}, \
             updated_at = excluded.updated_at"
        );
        on_writer!(&self.db, |pool| {
            let query = sqlx::query(&sql)
                .bind(workspace.as_str())
                .bind(queue.as_str());
            let query = if column == "paused" {
                query.bind(value == Some(1))
            } else {
                query.bind(value)
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
        self.upsert_setting(workspace, queue, "paused", Some(i64::from(paused)))
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
        self.upsert_setting(workspace, queue, "concurrency_limit", limit.map(i64::from))
            .await
    }
}
