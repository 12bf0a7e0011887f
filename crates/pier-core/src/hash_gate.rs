//! A bound on the password hashes one node computes at once.
//!
//! Each Argon2id hash or check holds 19 MiB for tens of milliseconds of CPU. Unbounded, a burst
//! of sign-ins (or link-password guesses) from many addresses runs hundreds at once and takes
//! the process's memory to gigabytes. The gate admits as many as the machine has cores (more
//! would only queue for CPU); the rest wait up to [`HashGate::wait`] and are then refused with
//! [`Busy`], which the API answers `503` with `Retry-After` (ASVS 5.0 V6.3.1: the defences
//! against guessing must not become a denial of service).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};

use crate::password::Memory;

/// How long a hash waits for its turn by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(3);

/// The node is busy hashing: try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many passwords are being checked on this node: try again in a moment")]
pub struct Busy;

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// Admits a bounded number of password hashes at once and runs them on threads of its own;
/// clones share both.
///
/// The threads are fixed, not the async runtime's blocking pool, and each keeps Argon2id's
/// working memory from one hash to the next: hashes that each allocate and free 19 MiB on a
/// growing pool of threads fragment the allocator's arenas (measured: 550 MiB after 200
/// concurrent sign-ins, against under 90 MiB this way).
#[derive(Debug, Clone)]
pub struct HashGate {
    permits: Arc<Semaphore>,
    jobs: Sender<Job>,
    wait: Duration,
}

impl HashGate {
    /// `concurrent` hashes at once (at least one), each on one of as many threads; the rest
    /// wait up to `wait`. The threads end when the last clone of the gate is dropped.
    pub fn new(concurrent: usize, wait: Duration) -> Self {
        let concurrent = concurrent.max(1);
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..concurrent {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("pier-hash-{n}"))
                .spawn(move || work(&queue));
            if let Err(err) = spawned {
                tracing::error!(error = %err, "could not start a password-hashing thread");
            }
        }
        Self {
            permits: Arc::new(Semaphore::new(concurrent)),
            jobs,
            wait,
        }
    }

    /// As many hashes at once as this machine has cores.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(cores, DEFAULT_WAIT)
    }

    /// Whether `password` matches `phc` (see [`crate::password::verify`]).
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, Busy> {
        let (password, phc) = (password.to_owned(), phc.to_owned());
        self.run(move |memory| crate::password::verify_in(&password, &phc, memory))
            .await
    }

    /// A new hash of `password` (see [`crate::password::hash`]); the inner error is the
    /// hasher's.
    pub async fn hash(&self, password: &str) -> Result<Result<String, String>, Busy> {
        let password = password.to_owned();
        self.run(move |memory| crate::password::hash_in(&password, memory))
            .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| Busy)?
            // The semaphore is never closed.
            .map_err(|_| Busy)?;
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let done = catch_unwind(AssertUnwindSafe(|| work(memory)));
            // Released when the work is done, not when the caller stops waiting (a client that
            // hangs up): no more jobs are ever queued than there are threads.
            drop(permit);
            let _ = answer.send(done);
        });
        self.jobs.send(job).map_err(|_| Busy)?;
        match answered.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // No thread took the job: they could not be started.
            Err(_) => Err(Busy),
        }
    }
}

/// A hashing thread: runs jobs, in memory of its own, until the gate is gone.
fn work(queue: &Mutex<Receiver<Job>>) {
    let mut memory = Memory::default();
    loop {
        let next = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        match next {
            Ok(job) => job(&mut memory),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_beyond_the_bound_are_refused_once_their_wait_is_over() {
        let gate = HashGate::new(1, Duration::from_millis(1));
        let held = gate.permits.acquire().await.expect("permit");
        assert_eq!(gate.verify("pw", "not a hash").await, Err(Busy));
        drop(held);
        assert_eq!(gate.verify("pw", "not a hash").await, Ok(false));
        let phc = gate.hash("pw").await.expect("admitted").expect("hashed");
        assert_eq!(gate.verify("pw", &phc).await, Ok(true));
    }
}
