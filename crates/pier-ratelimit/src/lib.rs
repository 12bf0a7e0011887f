//! Rate limiting for Pier's API and for any capability that needs it (webhook throttles,
//! failed-login limits): GCRA, sliding window and fixed window (see [`algorithm`]) behind one
//! [`Limiter`], on a bounded in-process store ([`LocalStore`]) or on Redis shared by every node
//! ([`RedisStore`]), with a failure mode per policy for when Redis cannot answer in time.
//!
//! ```text
//! let policy = Policy::server("login", "gcra 5/60s burst=5 local".parse()?);
//! let decision = limiter.check(&policy, "user:42", 1).await?;
//! if !decision.allowed { /* 429, Retry-After: decision.retry_after */ }
//! ```
//!
//! Named policies that workspaces define through the API are kept by [`PolicyStore`].

pub mod algorithm;
mod breaker;
mod limiter;
mod local;
mod policy;
mod redis;
mod store;

pub use algorithm::Decision;
pub use limiter::{DEFAULT_TIMEOUT, FAIL_CLOSED_RETRY, LimitError, Limiter, Verdict};
pub use local::LocalStore;
pub use policy::{
    Algorithm, FailureMode, Policy, PolicyName, PolicySpec, SpecError, bounds, check_name,
};
pub use redis::RedisStore;
pub use store::{PolicyRecord, PolicyStore, StoreError, policies_statement};

/// The table this crate owns, for [`pier_db::Db::migrate`].
pub const MIGRATIONS: &[pier_db::Migration] = pier_db::migrations!(6 => "0006_rate_limit_policies");
