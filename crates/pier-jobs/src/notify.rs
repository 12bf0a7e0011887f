//! Wake-ups for idle workers, keyed by workspace and queue. An enqueue wakes the waiters of its
//! workspace's queue in this process at once; on PostgreSQL, a `NOTIFY pier_jobs` sent inside the
//! enqueuing transaction (one per queue per transaction, however many jobs it adds) reaches the
//! other nodes on commit. Waiters also poll, so a lost notification delays a job by at most the
//! poll interval, never forever.
//!
//! The registry holds an entry only while someone waits on it, and it counts long-poll waiters
//! so that one workspace cannot hold every slot of a node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use pier_core::WorkspaceId;
use pier_db::{Notice, Relay, Tx};
use tokio::sync::watch;

use crate::model::QueueName;

pub(crate) const CHANNEL: &str = "pier_jobs";

/// Completes once `flag` is true (or its sender is gone).
pub(crate) async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// Whose jobs a waiter wants: one workspace's queue, or (for Pier's own queues) every
/// workspace's.
type Key = (Option<String>, String);

/// How many long-poll waiters may wait at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaiterLimits {
    pub per_workspace: usize,
    pub per_node: usize,
}

impl Default for WaiterLimits {
    fn default() -> Self {
        Self {
            per_workspace: 100,
            per_node: 1000,
        }
    }
}

/// Why a long-poll waiter was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitRefused {
    #[error("this workspace already has {0} claims waiting for jobs")]
    Workspace(usize),
    #[error("this node already has {0} claims waiting for jobs")]
    Node(usize),
}

#[derive(Debug, Default)]
struct Registry {
    signals: HashMap<Key, watch::Sender<u64>>,
    waiting: HashMap<String, usize>,
    waiting_total: usize,
}

/// The registry, usable even after a panic elsewhere poisoned it (its counts stay consistent:
/// every change is one short critical section).
fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Per-queue wake-up signals and waiter counts, shared by everything in one process.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    registry: Arc<Mutex<Registry>>,
    limits: WaiterLimits,
}

impl Notifier {
    pub fn new(limits: WaiterLimits) -> Self {
        Self {
            registry: Arc::default(),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Signals that `queue` of `workspace` may have jobs. Only existing waiters are signalled;
    /// nothing is recorded for queues nobody waits on.
    pub fn wake(&self, workspace: &WorkspaceId, queue: &str) {
        let registry = self.lock();
        let mut keys = vec![(Some(workspace.as_str().to_owned()), queue.to_owned())];
        if queue.starts_with(crate::model::RESERVED_PREFIX) {
            keys.push((None, queue.to_owned()));
        }
        for key in keys {
            if let Some(signal) = registry.signals.get(&key) {
                signal.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// A subscription that sees every wake of the queue after this call (or after its last
    /// `borrow_and_update`), so a wake between "found nothing" and "wait" is never missed.
    /// `workspace: None` follows one of Pier's own queues across every workspace.
    pub fn subscribe(&self, workspace: Option<&WorkspaceId>, queue: &QueueName) -> Subscription {
        let key = (
            workspace.map(|w| w.as_str().to_owned()),
            queue.as_str().to_owned(),
        );
        let receiver = self
            .lock()
            .signals
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Subscription {
            receiver,
            key,
            registry: self.registry.clone(),
        }
    }

    /// Takes a long-poll waiter slot for `workspace`, held until the slot is dropped.
    pub fn wait_slot(&self, workspace: &WorkspaceId) -> Result<WaitSlot, WaitRefused> {
        let mut registry = self.lock();
        if registry.waiting_total >= self.limits.per_node {
            return Err(WaitRefused::Node(self.limits.per_node));
        }
        let mine = registry
            .waiting
            .entry(workspace.as_str().to_owned())
            .or_default();
        if *mine >= self.limits.per_workspace {
            return Err(WaitRefused::Workspace(self.limits.per_workspace));
        }
        *mine += 1;
        registry.waiting_total += 1;
        Ok(WaitSlot {
            workspace: workspace.as_str().to_owned(),
            registry: self.registry.clone(),
        })
    }

    /// How many wake-up entries exist; they exist only while someone waits.
    pub fn entries(&self) -> usize {
        self.lock().signals.len()
    }

    /// Adds this notifier's channel to `relay`: wake-ups sent by other nodes (PostgreSQL
    /// `NOTIFY pier_jobs`) reach local waiters. Waiters also poll, which covers what is lost
    /// while the listener reconnects.
    #[must_use]
    pub fn listen(&self, relay: Relay) -> Relay {
        let notifier = self.clone();
        relay.on(CHANNEL, move |notice| {
            if let Notice::Message(payload) = notice
                && let Some((workspace, queue)) = payload.split_once(' ')
                && let Ok(workspace) = WorkspaceId::parse(workspace)
            {
                notifier.wake(&workspace, queue);
            }
        })
    }
}

/// Wakes the waiters of each `(workspace, queue)` (here, and on other nodes through the
/// database) once `tx` commits, and never if it rolls back.
pub(crate) async fn wake_after_commit(
    notifier: &Notifier,
    tx: &mut Tx,
    queues: impl IntoIterator<Item = (WorkspaceId, String)>,
) -> Result<(), sqlx::Error> {
    let queues: Vec<(WorkspaceId, String)> = queues.into_iter().collect();
    let payloads: Vec<String> = queues
        .iter()
        .map(|(workspace, queue)| format!("{workspace} {queue}"))
        .collect();
    tx.notify(CHANNEL, &payloads).await?;
    let notifier = notifier.clone();
    tx.after_commit(move || {
        for (workspace, queue) in &queues {
            notifier.wake(workspace, queue);
        }
    });
    Ok(())
}

/// A waiter's view of one queue's wake-ups; its registry entry goes when the last one drops.
#[derive(Debug)]
pub struct Subscription {
    receiver: watch::Receiver<u64>,
    key: Key,
    registry: Arc<Mutex<Registry>>,
}

impl Subscription {
    /// Marks every wake so far as seen.
    pub fn mark_seen(&mut self) {
        self.receiver.borrow_and_update();
    }

    /// True when a wake arrived since the last `mark_seen`.
    pub fn has_changed(&self) -> bool {
        self.receiver.has_changed().unwrap_or(true)
    }

    /// Completes at the next wake.
    pub async fn changed(&mut self) {
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut registry = lock(&self.registry);
        // This receiver still counts until it drops, after this function.
        if registry
            .signals
            .get(&self.key)
            .is_some_and(|signal| signal.receiver_count() <= 1)
        {
            registry.signals.remove(&self.key);
        }
    }
}

/// A long-poll waiter slot (see [`Notifier::wait_slot`]).
#[derive(Debug)]
pub struct WaitSlot {
    workspace: String,
    registry: Arc<Mutex<Registry>>,
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut registry = lock(&self.registry);
        registry.waiting_total = registry.waiting_total.saturating_sub(1);
        if let Some(n) = registry.waiting.get_mut(&self.workspace) {
            *n -= 1;
            if *n == 0 {
                registry.waiting.remove(&self.workspace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pier_core::Timestamp;

    use super::*;

    fn workspace() -> WorkspaceId {
        WorkspaceId::new(Timestamp::from_micros(0))
    }

    #[tokio::test]
    async fn wakes_reach_only_their_workspace_and_queue() {
        let notifier = Notifier::default();
        let (mine, theirs) = (workspace(), workspace());
        let queue = QueueName::default_queue();
        let mut sub = notifier.subscribe(Some(&mine), &queue);
        sub.mark_seen();
        notifier.wake(&theirs, "default");
        notifier.wake(&mine, "other");
        assert!(!sub.has_changed());
        notifier.wake(&mine, "default");
        tokio::time::timeout(Duration::from_secs(1), sub.changed())
            .await
            .expect("woken");
    }

    #[tokio::test]
    async fn internal_queues_wake_cross_workspace_waiters() {
        let notifier = Notifier::default();
        let queue = QueueName::internal("webhooks");
        let mut sub = notifier.subscribe(None, &queue);
        sub.mark_seen();
        notifier.wake(&workspace(), queue.as_str());
        assert!(sub.has_changed());
    }

    #[test]
    fn entries_live_only_while_someone_waits() {
        let notifier = Notifier::default();
        let ws = workspace();
        for i in 0..1000 {
            notifier.wake(&ws, &format!("q{i}"));
            drop(notifier.subscribe(Some(&ws), &QueueName::default_queue()));
        }
        let kept = notifier.subscribe(Some(&ws), &QueueName::default_queue());
        let also = notifier.subscribe(Some(&ws), &QueueName::default_queue());
        drop(kept);
        assert_eq!(
            notifier.entries(),
            1,
            "one entry while one subscriber is left"
        );
        drop(also);
        assert_eq!(notifier.entries(), 0);
    }

    #[test]
    fn waiters_are_capped_per_workspace_and_per_node() {
        let notifier = Notifier::new(WaiterLimits {
            per_workspace: 2,
            per_node: 3,
        });
        let (a, b) = (workspace(), workspace());
        let a1 = notifier.wait_slot(&a).expect("slot");
        let _a2 = notifier.wait_slot(&a).expect("slot");
        assert_eq!(
            notifier.wait_slot(&a).err(),
            Some(WaitRefused::Workspace(2))
        );
        let _b1 = notifier.wait_slot(&b).expect("slot");
        assert_eq!(notifier.wait_slot(&b).err(), Some(WaitRefused::Node(3)));
        drop(a1);
        assert!(notifier.wait_slot(&b).is_ok());
    }
}
