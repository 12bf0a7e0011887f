//! Dispatching: the jobs of a commit's new deliveries, enqueued by one job instead of by the
//! publisher.
//!
//! A publication writes its event and its deliveries (so they are listed at once). When a
//! commit writes more than [`MAX_DIRECT`] new deliveries of a workspace (many publishers
//! gathered, or many endpoints), they get one dispatch job rather than a job each, which the
//! delivery workers turn into the delivery jobs. The publishers' commit then writes about one
//! row per delivery rather than two, which is what publishing to many endpoints costs; the
//! dispatch runs on the worker nodes, off the publishers' path. Fewer deliveries get their own
//! jobs at once, since there a dispatch would add a step and save little.
//!
//! A dispatch run twice (at-least-once) enqueues nothing twice: a delivery job's unique key is
//! its delivery and opening (see [`crate::publish::enqueue`]), and a delivery sent already is
//! not sent again.

use std::collections::BTreeMap;
use std::sync::Arc;

use pier_core::WorkspaceId;
use pier_db::Tx;
use pier_db::group::{self, Lane};
use pier_jobs::{JobContext, JobFailure, JobSpec, JobStore, NewJob, Worker};
use serde::{Deserialize, Serialize};

use crate::publish::{deliver_job, queue};
use crate::store::{WebhookStore, decode};

/// The job kind of a dispatch.
pub(crate) const DISPATCH: &str = "webhook.dispatch";

/// The most new deliveries of a commit that get their own jobs at once. A dispatch adds a step
/// before the first request (a claim and a commit: milliseconds on an idle node, tens on a busy
/// one), worth it only where it saves many rows: a publisher alone in its commit (light load)
/// gets the shortest path, while the commits of publishers queueing up (heavy load) grow past
/// this and take the cheaper one.
pub(crate) const MAX_DIRECT: usize = 16;
/// The most deliveries one dispatch job carries, so its payload and its enqueue stay small.
const MAX_PER_DISPATCH: usize = 1000;

/// A new delivery to enqueue, with the trace its job continues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dispatched {
    pub delivery: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
}

/// What a dispatch job carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DispatchJob {
    pub deliveries: Vec<Dispatched>,
}

/// Enqueues the jobs that send a commit's new deliveries of `workspace`: their own jobs when
/// they are few, else dispatch jobs carrying them.
pub(crate) async fn enqueue_new(
    jobs: &JobStore,
    tx: &mut Tx,
    workspace: &WorkspaceId,
    deliveries: Vec<Dispatched>,
) -> Result<(), sqlx::Error> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let specs: Vec<NewJob> = if deliveries.len() <= MAX_DIRECT {
        deliveries.iter().map(first_job).collect::<Result<_, _>>()?
    } else {
        deliveries
            .chunks(MAX_PER_DISPATCH)
            .map(dispatch_job)
            .collect::<Result<_, _>>()?
    };
    jobs.enqueue_in(tx, workspace, &specs).await?;
    Ok(())
}

/// The job of a delivery's first request, continuing its publisher's trace.
fn first_job(delivery: &Dispatched) -> Result<NewJob, sqlx::Error> {
    Ok(deliver_job(&delivery.delivery, 0)?.continuing(delivery.trace_parent.clone()))
}

fn dispatch_job(deliveries: &[Dispatched]) -> Result<NewJob, sqlx::Error> {
    let payload = serde_json::to_value(DispatchJob {
        deliveries: deliveries.to_vec(),
    })
    .map_err(decode)?;
    let mut spec = JobSpec::new(DISPATCH).payload(payload);
    // Only the database can fail a dispatch: it keeps trying as long as the engine allows.
    spec.max_attempts = Some(*pier_jobs::MAX_ATTEMPTS_RANGE.end());
    spec.build()
        .map(|job| job.on_queue(queue()))
        .map_err(|e| decode(format!("a dispatch job: {e:?}")))
}

/// The job handler that turns a dispatch into its deliveries' jobs. The dispatches that run
/// together share one commit (group commit), as the publications that made them did.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    lane: Lane<(WorkspaceId, Vec<Dispatched>), (), sqlx::Error>,
}

impl Dispatcher {
    /// Starts the task that commits dispatches, so it needs a Tokio runtime.
    pub fn new(store: WebhookStore) -> Self {
        let committers = group::committers(store.db.backend());
        let lane = Lane::start(
            store,
            committers,
            Arc::new(|store, items| Box::pin(dispatch_many(store, items))),
        );
        Self { lane }
    }
}

impl Worker for Dispatcher {
    const KIND: &'static str = DISPATCH;
    type Payload = DispatchJob;

    async fn run(&self, ctx: JobContext, job: DispatchJob) -> Result<(), JobFailure> {
        Ok(self.lane.call((ctx.workspace_id, job.deliveries)).await?)
    }
}

/// Enqueues the delivery jobs of several dispatches in one transaction, a statement per
/// workspace, in workspace order.
pub(crate) async fn dispatch_many(
    store: WebhookStore,
    dispatches: Arc<Vec<(WorkspaceId, Vec<Dispatched>)>>,
) -> Result<Vec<()>, sqlx::Error> {
    let mut by_workspace: BTreeMap<&WorkspaceId, Vec<NewJob>> = BTreeMap::new();
    for (workspace, deliveries) in dispatches.iter() {
        let jobs = by_workspace.entry(workspace).or_default();
        for delivery in deliveries {
            jobs.push(first_job(delivery)?);
        }
    }
    let mut tx = store.db.begin().await?;
    for (workspace, jobs) in by_workspace {
        store.jobs.enqueue_in(&mut tx, workspace, &jobs).await?;
    }
    tx.commit().await?;
    Ok(vec![(); dispatches.len()])
}
