//! The flags evaluation reads: every flag of a workspace, compiled, held in this node's memory
//! (a [`pier_cache::Cache`] by workspace), so an evaluation costs no database read. Every change
//! forgets the workspace when it commits, on this node at once and on the others through a
//! notification sent in the same transaction (PostgreSQL `NOTIFY`; SQLite has one process), as
//! the links' redirect cache does; a node whose listener reconnects forgets every workspace. The
//! TTL bounds anything left. The same signals wake this node's change streams ([`Wakeup`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pier_cache::{Cache, Settings};
use pier_core::{Clock, WorkspaceId};
use pier_db::{Notice, Relay, Tx};
use tokio::sync::broadcast;

use crate::Flag;

/// The notification channel of workspaces whose flags changed; the payload is the workspace id.
const CHANNEL: &str = "pier_flags";

/// How many wake-ups a slow stream may fall behind before it is told to look at everything.
const WAKEUPS_QUEUED: usize = 1024;

/// What wakes a change stream: one workspace's flags changed, or any may have (the listener
/// reconnected, or the stream fell behind on wake-ups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    Workspace(Arc<str>),
    Any,
}

impl Wakeup {
    pub fn concerns(&self, workspace: &WorkspaceId) -> bool {
        match self {
            Self::Workspace(changed) => **changed == *workspace.as_str(),
            Self::Any => true,
        }
    }
}

/// The flags of one workspace, by key, as one load read them.
#[derive(Debug)]
pub struct WorkspaceFlags {
    pub flags: BTreeMap<String, Arc<Flag>>,
    /// Unique to this load on this node: answers computed from these flags may be kept under
    /// it, and a change (which makes the next reader load again) moves it.
    pub generation: u64,
    /// Whether some flag's answer can change with time alone (see [`Flag::reads_clock`]).
    pub reads_clock: bool,
}

impl WorkspaceFlags {
    pub fn new(flags: BTreeMap<String, Arc<Flag>>) -> Self {
        static LOADS: AtomicU64 = AtomicU64::new(0);
        Self {
            reads_clock: flags.values().any(|flag| flag.reads_clock()),
            generation: LOADS.fetch_add(1, Ordering::Relaxed),
            flags,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Flag> {
        self.flags.get(key).map(Arc::as_ref)
    }
}

impl Default for WorkspaceFlags {
    fn default() -> Self {
        Self::new(BTreeMap::new())
    }
}

/// This node's copy of each workspace's flags. Clones share it.
#[derive(Debug, Clone)]
pub(crate) struct LiveFlags {
    cache: Cache<Arc<WorkspaceFlags>>,
    wakeups: broadcast::Sender<Wakeup>,
}

impl LiveFlags {
    pub fn new(settings: Settings, clock: Arc<dyn Clock>) -> Self {
        Self {
            cache: Cache::new("flags", settings, clock),
            wakeups: broadcast::channel(WAKEUPS_QUEUED).0,
        }
    }

    /// This node's wake-ups from now on.
    pub fn wakeups(&self) -> broadcast::Receiver<Wakeup> {
        self.wakeups.subscribe()
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

    /// Makes every node forget `workspace`'s flags, and wakes their streams, once `tx`
    /// commits.
    pub async fn forget_on_commit(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
    ) -> Result<(), sqlx::Error> {
        let key = workspace.as_str().to_owned();
        let (wakeups, changed) = (self.wakeups.clone(), Arc::from(key.as_str()));
        self.cache.forget_on_commit(tx, CHANNEL, key).await?;
        // No receiver (no stream open) is not a failure.
        tx.after_commit(move || drop(wakeups.send(Wakeup::Workspace(changed))));
        Ok(())
    }

    /// Adds the channel of changed workspaces to `relay` (PostgreSQL).
    pub fn listen(&self, relay: Relay) -> Relay {
        let wakeups = self.wakeups.clone();
        self.cache
            .listen(relay, CHANNEL)
            .on(CHANNEL, move |notice| {
                let wakeup = match notice {
                    Notice::Message(workspace) => Wakeup::Workspace(Arc::from(workspace)),
                    Notice::Connected => Wakeup::Any,
                };
                drop(wakeups.send(wakeup));
            })
    }
}
