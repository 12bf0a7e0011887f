//! The flags' slice of the state: the store (with the evaluation cache), scheduled changes and
//! the document limit.

use std::sync::Arc;

use pier_flags::{FlagSchedules, FlagStore};

/// The flags' settings block of [`crate::AppStateParts`].
#[derive(Debug)]
pub struct FlagsParts {
    /// Flags, their audit trail and each node's evaluation cache.
    pub store: FlagStore,
    /// Changes scheduled for later, applied by the job queue.
    pub schedules: FlagSchedules,
    /// The largest flagd document an import takes, in bytes (as compact JSON).
    pub max_document_bytes: usize,
}

/// What the flag routes take as `State<FlagsState>`.
#[derive(Debug, Clone)]
pub struct FlagsState(Arc<FlagsParts>);

impl FlagsState {
    pub(crate) fn new(parts: FlagsParts) -> Self {
        Self(Arc::new(parts))
    }

    pub fn store(&self) -> &FlagStore {
        &self.0.store
    }

    pub fn schedules(&self) -> &FlagSchedules {
        &self.0.schedules
    }

    pub fn max_document_bytes(&self) -> usize {
        self.0.max_document_bytes
    }
}
