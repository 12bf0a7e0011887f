//! The rate limits' slice of the state.

use std::sync::Arc;

use pier_core::Clock;
use pier_db::Db;
use pier_ratelimit::{PolicySpec, PolicyStore};

/// The rate limits' settings block of [`crate::AppStateParts`].
#[derive(Debug)]
pub struct RateLimitsParts {
    /// Policies from the configuration file, by name: every workspace may check them (each
    /// with its own counts); the API cannot change them.
    pub configured: Vec<(String, PolicySpec)>,
}

/// What the rate-limit routes take as `State<RateLimitsState>`.
#[derive(Debug, Clone)]
pub struct RateLimitsState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    configured: Vec<(String, PolicySpec)>,
    policies: PolicyStore,
}

impl RateLimitsState {
    pub(crate) fn new(parts: RateLimitsParts, db: &Db, clock: &Arc<dyn Clock>) -> Self {
        Self(Arc::new(Inner {
            configured: parts.configured,
            policies: PolicyStore::new(db.clone(), clock.clone()),
        }))
    }

    /// Policies workspaces defined through the API.
    pub fn policies(&self) -> &PolicyStore {
        &self.0.policies
    }

    /// The configuration file's policy named `name`, if any.
    pub fn configured_policy(&self, name: &str) -> Option<&PolicySpec> {
        self.0
            .configured
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, spec)| spec)
    }

    pub fn configured_policies(&self) -> &[(String, PolicySpec)] {
        &self.0.configured
    }
}
