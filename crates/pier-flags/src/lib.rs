//! Feature flags in flagd's format: [`Flag`] definitions checked with the path of every fault,
//! whole flagd documents ([`document`]), and evaluation by flagd's rules ([`Flag::evaluate`])
//! through a bounded JSON Logic interpreter with flagd's `fractional`, `sem_ver`, `starts_with`
//! and `ends_with` ([`logic`]). The behaviour matched is the flagd daemon v0.16.1
//! (`open-feature/flagd` `core/pkg/evaluator`, commit bbb05d4); the HTTP side lives in
//! `pier-api`. [`FlagStore`] keeps flags per workspace on either backend, with an audit trail
//! ([`audit`]), a per-node evaluation cache kept current across nodes, and a change feed for
//! clients that keep their own copy ([`Follower`]); [`schedule`] applies changes at a set time
//! on the job queue, and [`FlagStore::prune`] forgets old history.

pub mod audit;
mod definition;
pub mod document;
mod evaluate;
mod feed;
mod live;
pub mod logic;
mod murmur3;
mod retention;
pub mod schedule;
mod semver;
mod store;

pub use definition::{Flag, FlagKey, VariantKind};
pub use document::Document;
pub use evaluate::{Context, ErrorCode, Reason, Resolution};
pub use feed::{FeedChange, Follower, Snapshot};
pub use live::WorkspaceFlags;
pub use schedule::{FlagSchedules, Schedule, ScheduleError, ScheduleId};
pub use store::{FlagError, FlagStore, Imported, StoredFlag, flags_statement};

/// The flags table, its audit trail, scheduled changes and the change feed.
pub const MIGRATIONS: &[pier_db::Migration] = pier_db::migrations!(
    25 => "0025_flags",
    28 => "0028_flag_schedules",
    29 => "0029_flag_feed"
);
