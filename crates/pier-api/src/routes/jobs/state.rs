//! The jobs' slice of the state.

use std::sync::Arc;

use pier_jobs::{GroupCommit, JobStore};

/// The jobs' settings block of [`crate::AppStateParts`].
#[derive(Debug)]
pub struct JobsParts {
    /// The job queue (shares the database and clock).
    pub store: JobStore,
    /// How many bytes of payloads one claim may hand out (at least one job is always handed).
    pub claim_budget_bytes: u64,
    /// How many steps one workflow may have.
    pub max_workflow_steps: usize,
}

/// What the job routes take as `State<JobsState>`.
#[derive(Debug, Clone)]
pub struct JobsState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    settings: JobsParts,
    group_commit: GroupCommit,
}

impl JobsState {
    pub(crate) fn new(settings: JobsParts) -> Self {
        Self(Arc::new(Inner {
            group_commit: GroupCommit::start(&settings.store),
            settings,
        }))
    }

    pub fn store(&self) -> &JobStore {
        &self.0.settings.store
    }

    pub fn claim_budget_bytes(&self) -> u64 {
        self.0.settings.claim_budget_bytes
    }

    pub fn max_workflow_steps(&self) -> usize {
        self.0.settings.max_workflow_steps
    }

    /// Single enqueues and reports, committed in groups (see [`GroupCommit`]).
    pub fn group_commit(&self) -> &GroupCommit {
        &self.0.group_commit
    }
}
