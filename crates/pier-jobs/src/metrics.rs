//! The job metrics: a counter per state change (`pier_jobs_*_total`), pickup-latency and
//! run-time histograms, and the per-state depth gauges [`JobStore::sample_metrics`] sets.
//!
//! Queue names are chosen by tenants, so the `queue` label is bounded: the first
//! [`MAX_QUEUE_LABELS`] names this process sees keep their own series, later ones share
//! `_other`. (Pier's own queues always keep theirs.)

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::SharedString;
use pier_db::with_reader;

use crate::model::{JobState, RESERVED_PREFIX};
use crate::store::{JobStore, WAITING};

/// How many tenant queue names get series of their own.
pub const MAX_QUEUE_LABELS: usize = 100;
const OTHER: &str = "_other";

/// The `queue` label of `queue`: its name while fewer than [`MAX_QUEUE_LABELS`] names are
/// known, `_other` after.
pub(crate) fn queue_label(queue: &str) -> SharedString {
    static KNOWN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut known = KNOWN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if known.contains(queue) {
        return SharedString::from(queue.to_owned());
    }
    if known.len() < MAX_QUEUE_LABELS || queue.starts_with(RESERVED_PREFIX) {
        known.insert(queue.to_owned());
        return SharedString::from(queue.to_owned());
    }
    SharedString::const_str(OTHER)
}

/// What a state change counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Event {
    Enqueued,
    Claimed,
    Completed,
    /// A failed attempt that will be retried.
    Failed,
    Discarded,
    /// A lease that expired; the job also counts as failed, discarded or cancelled.
    Rescued,
}

impl Event {
    /// The event a move from `from` to `to` is, if it is one that is counted.
    pub(crate) fn of(from: Option<JobState>, to: Option<JobState>) -> Option<Self> {
        use JobState::{Completed, Discarded, Retryable, Running};
        match (from, to?) {
            (None, _) => Some(Self::Enqueued),
            (Some(from), Running) if from != Running => Some(Self::Claimed),
            (Some(Running), Completed) => Some(Self::Completed),
            (Some(Running), Retryable) => Some(Self::Failed),
            (Some(Running), Discarded) => Some(Self::Discarded),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Enqueued => "pier_jobs_enqueued_total",
            Self::Claimed => "pier_jobs_claimed_total",
            Self::Completed => "pier_jobs_completed_total",
            Self::Failed => "pier_jobs_failed_total",
            Self::Discarded => "pier_jobs_discarded_total",
            Self::Rescued => "pier_jobs_rescued_total",
        }
    }
}

pub(crate) fn count(queue: &str, event: Event, n: u64) {
    metrics::counter!(event.name(), "queue" => queue_label(queue)).increment(n);
}

/// How long jobs of `queue` waited between becoming due and being claimed (record each job's
/// wait in it; one handle serves a whole claim).
pub(crate) fn pickup_latency(queue: &str) -> metrics::Histogram {
    metrics::histogram!("pier_jobs_pickup_latency_seconds", "queue" => queue_label(queue))
}

/// How long an attempt ran, from its claim to its end, and how it ended.
pub(crate) fn ran(queue: &str, outcome: JobState, took: Duration) {
    let outcome = match outcome {
        JobState::Completed => "completed",
        JobState::Discarded => "discarded",
        JobState::Cancelled => "cancelled",
        _ => "failed",
    };
    metrics::histogram!("pier_jobs_run_duration_seconds",
        "queue" => queue_label(queue), "outcome" => outcome)
    .record(took.as_secs_f64());
}

/// The micros between two stored times, as a duration (zero if the clock went back).
pub(crate) fn between(start_micros: i64, end_micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(end_micros - start_micros).unwrap_or(0))
}

/// The `(queue, state)` series the last sample set, so a queue that empties reads zero rather
/// than its last depth.
static SAMPLED: Mutex<BTreeSet<(SharedString, &'static str)>> = Mutex::new(BTreeSet::new());

impl JobStore {
    /// Sets `pier_jobs{queue,state}` (jobs per state, summed over workspaces, from the counters
    /// every state change keeps, so no job row is counted) and
    /// `pier_jobs_oldest_available_age_seconds{queue}` (how long the job at the head of each
    /// queue has been due; one indexed lookup per queue that has due jobs).
    pub async fn sample_metrics(&self) -> Result<(), sqlx::Error> {
        let now = self.now().as_micros();
        let depths: Vec<(String, String, i64)> = with_reader!(self.db(), pool => {
            sqlx::query_as(
                "SELECT queue, state, CAST(SUM(n) AS BIGINT) FROM job_counts \
                 GROUP BY queue, state",
            )
            .fetch_all(pool)
            .await
        })?;
        let heads_sql = format!(
            "SELECT c.queue, MIN((SELECT j.run_at FROM jobs j WHERE j.workspace_id = c.workspace_id \
             AND j.queue = c.queue AND j.state IN {WAITING} AND j.run_at <= $1 \
             ORDER BY j.priority, j.run_at, j.id LIMIT 1)) \
             FROM (SELECT workspace_id, queue FROM job_counts WHERE state IN {WAITING} \
             GROUP BY workspace_id, queue HAVING SUM(n) > 0) AS c GROUP BY c.queue"
        );
        let heads: Vec<(String, Option<i64>)> = with_reader!(self.db(), pool => {
            sqlx::query_as(&heads_sql).bind(now).fetch_all(pool).await
        })?;

        let mut totals: BTreeMap<(SharedString, &'static str), f64> = BTreeMap::new();
        for (queue, state, n) in depths {
            let Ok(state) = state.parse::<JobState>() else {
                continue;
            };
            *totals
                .entry((queue_label(&queue), state.as_str()))
                .or_default() += n.max(0) as f64;
        }
        let mut sampled = SAMPLED.lock().unwrap_or_else(|e| e.into_inner());
        for gone in sampled.iter().filter(|key| !totals.contains_key(*key)) {
            metrics::gauge!("pier_jobs", "queue" => gone.0.clone(), "state" => gone.1).set(0.0);
        }
        for ((queue, state), n) in &totals {
            metrics::gauge!("pier_jobs", "queue" => queue.clone(), "state" => *state).set(*n);
        }
        // Every queue that ever had a series keeps it (at zero); the labels are bounded.
        sampled.extend(totals.into_keys());

        let mut ages: BTreeMap<SharedString, f64> = sampled
            .iter()
            .map(|(queue, _)| (queue.clone(), 0.0))
            .collect();
        for (queue, head) in heads {
            let age = head.map_or(0.0, |at| between(at, now).as_secs_f64());
            let entry = ages.entry(queue_label(&queue)).or_default();
            *entry = entry.max(age);
        }
        for (queue, age) in ages {
            metrics::gauge!("pier_jobs_oldest_available_age_seconds", "queue" => queue).set(age);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_labels_are_bounded() {
        // Other tests of this process may have named queues already; these names are new.
        let names: Vec<String> = (0..MAX_QUEUE_LABELS + 50)
            .map(|n| format!("label-test-{n}"))
            .collect();
        let labels: Vec<SharedString> = names.iter().map(|n| queue_label(n)).collect();
        let own = labels
            .iter()
            .zip(&names)
            .filter(|(l, n)| l.as_ref() == n.as_str());
        assert!(own.count() <= MAX_QUEUE_LABELS);
        assert_eq!(queue_label("label-test-late").as_ref(), OTHER);
        // A name that got its own series keeps it; Pier's own queues always get theirs.
        assert_eq!(queue_label(&names[0]).as_ref(), labels[0].as_ref());
        assert_eq!(queue_label("pier.label-test").as_ref(), "pier.label-test");
    }

    #[test]
    fn moves_count_as_the_events_they_are() {
        use JobState::*;
        let of = |from, to| Event::of(from, Some(to));
        assert_eq!(of(None, Available), Some(Event::Enqueued));
        assert_eq!(of(None, Scheduled), Some(Event::Enqueued));
        assert_eq!(of(Some(Retryable), Running), Some(Event::Claimed));
        assert_eq!(of(Some(Running), Completed), Some(Event::Completed));
        assert_eq!(of(Some(Running), Retryable), Some(Event::Failed));
        assert_eq!(of(Some(Running), Discarded), Some(Event::Discarded));
        assert_eq!(
            of(Some(Scheduled), Available),
            None,
            "promotion is not an event"
        );
        assert_eq!(of(Some(Available), Cancelled), None);
        assert_eq!(
            Event::of(Some(Running), None),
            None,
            "pruning is not an event"
        );
    }
}
