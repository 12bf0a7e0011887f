//! The flags evaluation reads: every flag of a workspace, compiled, held in this node's memory
//! (a [`pier_cache::Cache`] by workspace), so an evaluation costs no database read. Every change
//! forgets the workspace when it commits, on this node at once and on the others through a
//! notification sent in the same transaction (PostgreSQL `NOTIFY`; SQLite has one process), as
//! the links' redirect cache does; a node whose listener reconnects forgets every workspace. The
//! TTL bounds anything left.

use std::collections::BTreeMap;
use std::sync::Arc;

use pier_cache::{Cache, Settings};
use pier_core::{Clock, WorkspaceId};
use pier_db::{Relay, Tx};

use crate::Flag;

/// The notification channel of workspaces whose flags changed; the payload is the workspace id.
const CHANNEL: &str = "pier_flags";

/// The flags of one workspace, by key.
#[derive(Debug, Default)]
pub struct WorkspaceFlags {
    pub flags: BTreeMap<String, Arc<Flag>>,
}

impl WorkspaceFlags {
    pub fn get(&self, key: &str) -> Option<&Flag> {
        self.flags.get(key).map(Arc::as_ref)
    }
}

/// This node's copy of each workspace's flags. Clones share it.
#[derive(Debug, Clone)]
pub(crate) struct LiveFlags {
    cache: Cache<Arc<WorkspaceFlags>>,
}

impl LiveFlags {
    pub fn new(settings: Settings, clock: Arc<dyn Clock>) -> Self {
        Self {
            cache: Cache::new("flags", settings, clock),
        }
    }

    pub async fn get_or_load<F, Fut>(
        &self,
        workspace: &WorkspaceId,
        load: F,
    ) -> Result<Arc<WorkspaceFlags>, sqlx::Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<Arc<WorkspaceFlags>>, sqlx::Error>>,
    {
        let found = self
            .cache
            .get_or_load(workspace.as_str(), load)
            .await
            .map_err(pier_db::unshare)?;
        Ok(found.unwrap_or_default())
    }

    /// Makes every node forget `workspace`'s flags once `tx` commits.
    pub async fn forget_on_commit(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
    ) -> Result<(), sqlx::Error> {
        let key = workspace.as_str().to_owned();
        self.cache.forget_on_commit(tx, CHANNEL, key).await
    }

    /// Adds the channel of changed workspaces to `relay` (PostgreSQL).
    pub fn listen(&self, relay: Relay) -> Relay {
        self.cache.listen(relay, CHANNEL)
    }
}
