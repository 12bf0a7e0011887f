//! The receiving end: every endpoint is a path of one local server (`/hook/<n>`), which answers
//! each delivery `200 ok` at once and notes when it arrived.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What arrived, by event id and endpoint number.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// When each (event id, endpoint) pair first arrived.
    pub first: HashMap<(String, usize), Instant>,
    /// Requests for a pair that had arrived before (at-least-once delivery allows them).
    pub duplicates: usize,
    /// Requests without a `webhook-id` header.
    pub unlabelled: usize,
}

impl Arrivals {
    /// Notes one request; true when its pair is new.
    fn note(&mut self, id: Option<&str>, endpoint: usize, at: Instant) -> bool {
        let Some(id) = id else {
            self.unlabelled += 1;
            return false;
        };
        match self.first.entry((id.to_owned(), endpoint)) {
            Entry::Vacant(entry) => {
                entry.insert(at);
                true
            }
            Entry::Occupied(_) => {
                self.duplicates += 1;
                false
            }
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    arrivals: Mutex<Arrivals>,
    /// `arrivals.first.len()`, readable without the lock while deliveries pour in.
    distinct: AtomicUsize,
}

/// A running receiver; it stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/hook/{endpoint}", post(receive))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("the receiver stopped: {err}");
            }
        });
        Ok(Self {
            shared,
            addr,
            server,
        })
    }

    /// The URL of endpoint number `n`.
    pub fn url(&self, n: usize) -> String {
        format!("http://{}/hook/{n}", self.addr)
    }

    /// Distinct deliveries received so far.
    /// When event `id` first arrived at endpoint `n`, if it has.
    pub fn arrived(&self, id: &str, n: usize) -> Option<Instant> {
        let arrivals = self
            .shared
            .arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        arrivals.first.get(&(id.to_owned(), n)).copied()
    }

    pub fn received(&self) -> usize {
        self.shared.distinct.load(Ordering::Relaxed)
    }

    /// Waits until `expected` distinct deliveries have arrived; false if `timeout` passes first.
    pub async fn wait_for(&self, expected: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.received() < expected {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Stops the receiver; returns everything that arrived.
    pub fn stop(self) -> Arrivals {
        std::mem::take(
            &mut *self
                .shared
                .arrivals
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Answers a delivery. The body is read (and ignored) so that the connection can be reused.
async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(endpoint): Path<usize>,
    headers: HeaderMap,
    _body: Bytes,
) -> &'static str {
    let at = Instant::now();
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
    let new = shared
        .arrivals
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .note(id, endpoint, at);
    if new {
        shared.distinct.fetch_add(1, Ordering::Relaxed);
    }
    "ok"
}
