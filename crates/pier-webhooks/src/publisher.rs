//! Group commit ([`pier_db::group`]) of publications: concurrent publishers (an HTTP request
//! each) share commits, as single job enqueues do, so a publish costs about what an enqueue
//! does rather than a commit of its own. Each publisher is answered after the commit that
//! carried its event, with its own outcome: its event, the first event of a repeated event id,
//! or its own error. What can be refused before writing (size, schema, a reused event id) is
//! refused before the publication joins a commit; a commit that fails as a whole is retried
//! publication by publication, so one failing publication never fails the others. Pier's own
//! events keep their path: they are written in the transaction of the change they announce.

use std::sync::Arc;

use tracing::Instrument;

use pier_core::WorkspaceId;
use pier_db::group::{self, Lane};

use crate::model::Event;
use crate::publish::{Checked, NewEvent, Prepared, Published};
use crate::store::{WebhookError, WebhookStore};

/// Publishes through group commit. Cheap to clone; its committers end when the last clone is
/// dropped.
#[derive(Debug, Clone)]
pub struct Publisher {
    store: WebhookStore,
    lane: Lane<Arc<Checked>, Option<Event>, sqlx::Error>,
}

impl Publisher {
    /// Starts the committers (so it needs a Tokio runtime).
    pub fn start(store: &WebhookStore) -> Self {
        let lane = Lane::start(
            store.clone(),
            group::committers(store.db.backend()),
            Arc::new(|store: WebhookStore, publications| {
                Box::pin(async move { store.write_events(&publications).await })
            }),
        );
        Self {
            store: store.clone(),
            lane,
        }
    }

    /// Publishes an event of the workspace to every enabled endpoint that wants it; answered
    /// once the event, its deliveries and the job that sends them are committed.
    pub async fn publish(
        &self,
        workspace: &WorkspaceId,
        event: NewEvent,
    ) -> Result<Published, WebhookError> {
        let mut checked = match self.store.prepare(workspace, event).await? {
            Prepared::Write(checked) => checked,
            Prepared::Published(first) => return Ok(first),
        };
        // The committer writes away from this span: its delivery jobs carry the trace.
        let span = pier_jobs::enqueue_span(&crate::queue());
        checked.trace_parent = pier_core::trace::traceparent(&span);
        let checked = Arc::new(checked);
        let written = self.lane.call(checked.clone()).instrument(span).await?;
        self.store.settle(&checked, written).await
    }
}
