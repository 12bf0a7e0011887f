//! The flags' slice of the state: the store (with the evaluation cache), scheduled changes, the
//! document limit, the open change streams and the bulk answers kept.

use std::sync::Arc;
use std::time::Duration;

use pier_flags::{FlagSchedules, FlagStore};

use super::answers::BulkAnswers;
use super::stream::StreamSlots;

/// The flags' settings block of [`crate::AppStateParts`].
#[derive(Debug)]
pub struct FlagsParts {
    /// Flags, their audit trail and each node's evaluation cache.
    pub store: FlagStore,
    /// Changes scheduled for later, applied by the job queue.
    pub schedules: FlagSchedules,
    /// The largest flagd document an import takes, in bytes (as compact JSON).
    pub max_document_bytes: usize,
    /// The change streams (`GET /v1/flags/stream`) this node keeps open at most.
    pub max_streams: usize,
    /// ... and at most for one workspace.
    pub max_streams_per_workspace: usize,
    /// How long a change stream lasts before its client reconnects (and authenticates again).
    pub stream_max_age: Duration,
    /// The bytes of bulk OFREP answers this node keeps for clients that poll again.
    pub answer_cache_bytes: u64,
}

/// What the flag routes take as `State<FlagsState>`.
#[derive(Debug, Clone)]
pub struct FlagsState(Arc<Flags>);

#[derive(Debug)]
struct Flags {
    parts: FlagsParts,
    streams: Arc<StreamSlots>,
    answers: BulkAnswers,
}

impl FlagsState {
    pub(crate) fn new(parts: FlagsParts) -> Self {
        let streams = StreamSlots::new(parts.max_streams, parts.max_streams_per_workspace);
        Self(Arc::new(Flags {
            answers: BulkAnswers::new(parts.answer_cache_bytes),
            parts,
            streams: Arc::new(streams),
        }))
    }

    pub fn store(&self) -> &FlagStore {
        &self.0.parts.store
    }

    pub(crate) fn answers(&self) -> &BulkAnswers {
        &self.0.answers
    }

    pub(crate) fn streams(&self) -> &Arc<StreamSlots> {
        &self.0.streams
    }

    pub fn stream_max_age(&self) -> Duration {
        self.0.parts.stream_max_age
    }

    pub fn schedules(&self) -> &FlagSchedules {
        &self.0.parts.schedules
    }

    pub fn max_document_bytes(&self) -> usize {
        self.0.parts.max_document_bytes
    }
}
