//! Noisy neighbour: does another workspace's backlog slow this workspace's claims?
//!
//! Workspace A holds `--backlog` jobs in its queue `default`, all at the most urgent priority
//! (-1,000,000), and that queue is paused, so nothing drains it. Workspace B enqueues one job into
//! its own `default` and claims it, `--claims` times; each claim is timed, and so is the
//! completion that follows (the enqueue is not). The same loop runs, each time in a fresh
//! workspace:
//!
//! - `empty`: first, on the empty table;
//! - `loaded`: next to A's backlog, on the same connection pool, as a server that has been up
//!   since the table was small would run it;
//! - `loaded_fresh`: next to A's backlog, on a new connection pool, so no statement was prepared
//!   (and no PostgreSQL plan cached) before the backlog existed.
//!
//! Claims read an index that leads with the workspace, so A's backlog should cost B nothing; an
//! index that led with the queue name would make every B claim step over A's million more urgent
//! jobs first.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use pier_core::{Clock, SystemClock, WorkspaceId};
use pier_jobs::{
    ClaimLimits, ClaimTarget, Completion, Held, JobSpec, JobStore, Notifier, QueueName, QueuePatch,
};
use serde_json::json;

use crate::{Bench, mean_ms, micros, percentile_ms, report};

/// The most urgent priority a job can have.
const MOST_URGENT: i32 = -1_000_000;

/// Timings of one loop, in microseconds, sorted.
#[derive(Debug)]
struct Rounds {
    claim_us: Vec<u64>,
    complete_us: Vec<u64>,
}

impl Rounds {
    /// `{prefix}_p50_ms`, … for claims and `{prefix}_complete_p50_ms`, … for completions.
    fn fields(&self, prefix: &str) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = serde_json::Map::new();
        for (what, us) in [("", &self.claim_us), ("_complete", &self.complete_us)] {
            fields.insert(
                format!("{prefix}{what}_p50_ms"),
                json!(percentile_ms(us, 0.50)),
            );
            fields.insert(
                format!("{prefix}{what}_p99_ms"),
                json!(percentile_ms(us, 0.99)),
            );
            fields.insert(format!("{prefix}{what}_mean_ms"), json!(mean_ms(us)));
        }
        fields
    }

    /// This loop's claim quantile `p` over `base`'s; 0 when `base` has none.
    fn ratio(&self, base: &Self, p: f64) -> f64 {
        let base = percentile_ms(&base.claim_us, p);
        if base > 0.0 {
            percentile_ms(&self.claim_us, p) / base
        } else {
            0.0
        }
    }
}

impl Bench {
    pub(crate) async fn noisy_neighbour(&self) -> anyhow::Result<()> {
        let queue = QueueName::default_queue();
        let backlog = self.args.backlog;

        self.checkpoint().await;
        let empty = self
            .claim_rounds(&self.store, &queue, "on the empty table")
            .await?;

        let noisy = WorkspaceId::new(self.store.now());
        let paused = QueuePatch::paused(true);
        self.store
            .update_queue(&noisy, &queue, paused)
            .await
            .context("pause the noisy workspace's queue")?;
        eprintln!("noisy neighbour: enqueueing a backlog of {backlog} jobs in a paused queue");
        let started = Instant::now();
        let mut left = backlog;
        while left > 0 {
            let batch = left.min(1000);
            let job = JobSpec {
                priority: Some(MOST_URGENT),
                ..JobSpec::new("noop")
            }
            .queue(queue.as_str())
            .build()?;
            self.store.enqueue(&noisy, vec![job; batch]).await?;
            left -= batch;
        }
        let fill = started.elapsed();
        let waiting = self
            .store
            .queue(&noisy, &queue)
            .await?
            .and_then(|q| q.counts.get("available").copied())
            .unwrap_or(0);
        if waiting != backlog as u64 {
            bail!("the noisy workspace has {waiting} available jobs, expected {backlog}");
        }

        self.checkpoint().await;
        let loaded = self
            .claim_rounds(&self.store, &queue, "next to the backlog")
            .await?;

        let fresh_db = self.url.connect(16).await.context("connect a fresh pool")?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let fresh_store = JobStore::new(fresh_db.clone(), clock, Notifier::default());
        let fresh = self
            .claim_rounds(&fresh_store, &queue, "next to the backlog, on a fresh pool")
            .await;
        fresh_db.close().await;
        let fresh = fresh?;

        let mut fields = serde_json::Map::new();
        fields.insert("backlog".into(), json!(backlog));
        fields.insert("backlog_priority".into(), json!(MOST_URGENT));
        fields.insert("claims".into(), json!(self.args.claims));
        fields.insert("backlog_enqueue_seconds".into(), json!(fill.as_secs_f64()));
        fields.extend(empty.fields("empty"));
        fields.extend(loaded.fields("loaded"));
        fields.extend(fresh.fields("loaded_fresh"));
        fields.insert("p50_ratio".into(), json!(loaded.ratio(&empty, 0.50)));
        fields.insert("p99_ratio".into(), json!(loaded.ratio(&empty, 0.99)));
        fields.insert("fresh_p50_ratio".into(), json!(fresh.ratio(&empty, 0.50)));
        fields.insert("fresh_p99_ratio".into(), json!(fresh.ratio(&empty, 0.99)));
        report("noisy_neighbour", self.backend, fields.into());
        Ok(())
    }

    /// In a fresh workspace, `--claims` rounds (after a short untimed warm-up) of: enqueue one
    /// job, claim it (timed), complete it (timed).
    async fn claim_rounds(
        &self,
        store: &JobStore,
        queue: &QueueName,
        label: &str,
    ) -> anyhow::Result<Rounds> {
        let workspace = WorkspaceId::new(store.now());
        let target = ClaimTarget::workspace(workspace.clone(), queue.clone());
        let limits = ClaimLimits {
            max: 1,
            budget_bytes: 4 * 1024 * 1024,
        };
        let claims = self.args.claims;
        let warm_up = (claims / 10).min(100);
        eprintln!("noisy neighbour: {claims} claims {label} (after {warm_up} untimed)");
        let mut rounds = Rounds {
            claim_us: Vec::with_capacity(claims),
            complete_us: Vec::with_capacity(claims),
        };
        for round in 0..warm_up + claims {
            let job = JobSpec::new("noop")
                .queue(queue.as_str())
                .payload(json!({ "round": round }))
                .build()?;
            store.enqueue(&workspace, vec![job]).await?;
            let started = Instant::now();
            let claimed = store.claim(&target, limits, None, None).await?;
            let claim_took = started.elapsed();
            let [job] = claimed.as_slice() else {
                bail!(
                    "claim {round} {label} took {} jobs, expected 1",
                    claimed.len()
                );
            };
            if job.workspace_id != workspace {
                bail!(
                    "claim {round} {label} took job {} of another workspace",
                    job.id
                );
            }
            let held = Held::new(workspace.clone(), job.id.clone(), &job.lease_token)
                .map_err(anyhow::Error::msg)?;
            let started = Instant::now();
            store.complete(Completion::new(held)).await?;
            let complete_took = started.elapsed();
            if round >= warm_up {
                rounds.claim_us.push(micros(claim_took));
                rounds.complete_us.push(micros(complete_took));
            }
        }
        rounds.claim_us.sort_unstable();
        rounds.complete_us.sort_unstable();
        Ok(rounds)
    }
}
