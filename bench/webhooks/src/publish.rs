//! Publishing events: closed-loop (a fixed number of publishers, each sending its next event as
//! soon as the last is accepted) and open-loop (one event per tick of a schedule, whatever the
//! earlier ones are doing, so a slow response cannot hide latency by delaying the next event).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::api::{Api, Published};

/// Failures shown on stderr; the rest are only counted.
const FAILURES_SHOWN: usize = 3;

/// What the publishers achieved, shared by them and the samplers.
#[derive(Debug, Default)]
pub struct Log {
    published: Mutex<Vec<Published>>,
    accepted: AtomicUsize,
    failed: AtomicUsize,
}

impl Log {
    fn note(&self, outcome: anyhow::Result<Published>) {
        match outcome {
            Ok(event) => {
                self.lock().push(event);
                self.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) < FAILURES_SHOWN {
                    eprintln!("publishing failed: {err:#}");
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Published>> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Events accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Publications that failed (an error or a status other than 202).
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }

    /// The accepted events, leaving the log empty.
    pub fn take(&self) -> Vec<Published> {
        std::mem::take(&mut *self.lock())
    }
}

/// Publishes `events` events from `publishers` concurrent loops.
pub async fn as_fast_as_possible(api: &Arc<Api>, events: usize, publishers: usize) -> Arc<Log> {
    let log = Arc::new(Log::default());
    let next = Arc::new(AtomicUsize::new(0));
    let mut loops = JoinSet::new();
    for _ in 0..publishers {
        let (api, log, next) = (api.clone(), log.clone(), next.clone());
        loops.spawn(async move {
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= events {
                    break;
                }
                log.note(api.publish(seq).await);
            }
        });
    }
    loops.join_all().await;
    log
}

/// Publishes `per_second` events a second for `duration`, each on its own task so that none
/// waits for another's response; returns once every publication has ended.
pub async fn at_rate(api: &Arc<Api>, per_second: u32, duration: Duration, log: &Arc<Log>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    // A tick missed while this task was not scheduled is sent at once, keeping the rate.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let events = (u128::from(per_second) * duration.as_millis() / 1000) as usize;
    let mut publications = JoinSet::new();
    for seq in 0..events {
        tick.tick().await;
        let (api, log) = (api.clone(), log.clone());
        publications.spawn(async move { log.note(api.publish(seq).await) });
    }
    publications.join_all().await;
}
