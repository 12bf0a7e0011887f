//! Wake-ups for idle workers. Enqueues wake the queue's waiters in this process at once; on
//! PostgreSQL, a `NOTIFY pier_jobs` sent inside the enqueuing transaction (one per queue per
//! transaction, however many jobs it adds) reaches the other nodes on commit. Waiters also poll,
//! so a lost notification delays a job by at most the poll interval, never forever.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pier_db::{Backend, Db};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) const CHANNEL: &str = "pier_jobs";

/// Completes once `flag` is true (or its sender is gone).
pub(crate) async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// Per-queue wake-up signals, shared by everything in one process.
#[derive(Debug, Clone, Default)]
pub struct Notifier(Arc<Mutex<HashMap<String, watch::Sender<u64>>>>);

impl Notifier {
    pub fn new() -> Self {
        Self::default()
    }

    fn sender(&self, queue: &str) -> watch::Sender<u64> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(queue.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// Signals that `queue` may have jobs.
    pub fn wake(&self, queue: &str) {
        self.sender(queue).send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every wake of `queue` after this call (or after its last
    /// `borrow_and_update`), so a wake between "found nothing" and "wait" is never missed.
    pub fn subscribe(&self, queue: &str) -> watch::Receiver<u64> {
        self.sender(queue).subscribe()
    }

    /// Relays wake-ups sent by other nodes (PostgreSQL `NOTIFY pier_jobs`) to local waiters
    /// until aborted; `None` on SQLite, where every enqueue happens in this process. Reconnects
    /// after errors; waiters poll meanwhile.
    pub fn relay(&self, db: &Db) -> Option<JoinHandle<()>> {
        if db.backend() == Backend::Sqlite {
            return None;
        }
        let (notifier, db) = (self.clone(), db.clone());
        Some(tokio::spawn(async move {
            loop {
                match db.listen(CHANNEL).await {
                    Some(Ok(mut listener)) => loop {
                        match listener.recv().await {
                            Ok(queue) => notifier.wake(&queue),
                            Err(err) => {
                                tracing::warn!(error = %err, "job wake-up listener lost");
                                break;
                            }
                        }
                    },
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "cannot LISTEN for job wake-ups");
                    }
                    None => return,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_before_waiting_is_not_lost() {
        let notifier = Notifier::new();
        let mut rx = notifier.subscribe("q");
        rx.borrow_and_update();
        notifier.wake("q");
        notifier.wake("other");
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .expect("woken")
            .expect("open");
    }
}
