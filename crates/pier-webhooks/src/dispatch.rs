//! Dispatching: the jobs of a commit's new deliveries, enqueued by one job instead of by the
//! publisher.
//!
//! A publication writes its event and its deliveries (so they are listed at once), but not a job
//! per delivery: each commit's new deliveries of a workspace get one dispatch job, which the
//! delivery workers turn into the delivery jobs. The publisher's commit then writes about one row
//! per delivery rather than two, which is what publishing to many endpoints costs; the
//! dispatch runs on the worker nodes, off the publishers' path. A commit with a single new
//! delivery enqueues that delivery's own job, since a dispatch would only add a step.
//!
//! A dispatch run twice (at-least-once) enqueues nothing twice: a delivery job's unique key is
//! its delivery and opening (see [`crate::publish::enqueue`]), and a delivery sent already is
//! not sent again.

use pier_core::WorkspaceId;
use pier_db::Tx;
use pier_jobs::{JobContext, JobFailure, JobSpec, JobStore, NewJob, Worker};
use serde::{Deserialize, Serialize};

use crate::publish::{deliver_job, queue};
use crate::store::{WebhookStore, decode};

/// The job kind of a dispatch.
pub(crate) const DISPATCH: &str = "webhook.dispatch";

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

/// Enqueues the jobs that send a commit's new deliveries of `workspace`: the delivery's own job
/// when there is one, else dispatch jobs carrying them.
pub(crate) async fn enqueue_new(
    jobs: &JobStore,
    tx: &mut Tx,
    workspace: &WorkspaceId,
    deliveries: Vec<Dispatched>,
) -> Result<(), sqlx::Error> {
    let specs: Vec<NewJob> = match deliveries.as_slice() {
        [] => return Ok(()),
        [one] => vec![first_job(one)?],
        _ => deliveries
            .chunks(MAX_PER_DISPATCH)
            .map(dispatch_job)
            .collect::<Result<_, _>>()?,
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

/// The job handler that turns a dispatch into its deliveries' jobs.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: WebhookStore,
}

impl Dispatcher {
    pub fn new(store: WebhookStore) -> Self {
        Self { store }
    }
}

impl Worker for Dispatcher {
    const KIND: &'static str = DISPATCH;
    type Payload = DispatchJob;

    async fn run(&self, ctx: JobContext, job: DispatchJob) -> Result<(), JobFailure> {
        Ok(enqueue_dispatched(&self.store, &ctx.workspace_id, &job.deliveries).await?)
    }
}

/// Enqueues the delivery jobs a dispatch carries, in one transaction.
pub(crate) async fn enqueue_dispatched(
    store: &WebhookStore,
    workspace: &WorkspaceId,
    deliveries: &[Dispatched],
) -> Result<(), sqlx::Error> {
    let specs = deliveries
        .iter()
        .map(first_job)
        .collect::<Result<Vec<_>, _>>()?;
    let mut tx = store.db.begin().await?;
    store.jobs.enqueue_in(&mut tx, workspace, &specs).await?;
    tx.commit().await
}
