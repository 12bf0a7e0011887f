//! The HTTP server: one task per connection, with the limits a server that may face the internet
//! needs. A client gets `header_read_timeout` to send each request's headers (so connections that
//! send nothing, or trickle a header a byte at a time, are closed, and idle keep-alive
//! connections with them); at most `max_connections` are served at once (further ones wait in
//! the listen backlog). Shutdown stops accepting, closes at once every connection that is not in
//! the middle of a request (idle, stalled, or silent), lets requests in flight finish within the
//! grace period, and then closes whatever is left.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tower::ServiceExt;

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight.
    pub grace: Duration,
}

/// A response body that marks its connection busy until it has been sent (hyper drops it after
/// the last frame), so shutdown knows which connections are in the middle of a request.
struct Tracked {
    body: Body,
    busy: Arc<AtomicBool>,
}

impl hyper::body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then shuts down as the module docs
/// describe. With the API's `state`, plain redirects are answered before the router (see
/// [`pier_api::redirect_shortcut`]).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shortcut: Option<pier_api::AppState>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut connections = JoinSet::new();
    let mut open: HashMap<tokio::task::Id, (Arc<AtomicBool>, AbortHandle)> = HashMap::new();
    tokio::pin!(shutdown);
    loop {
        while let Some(Ok((id, ()))) = connections.try_join_next_with_id() {
            open.remove(&id);
        }
        // A slot first, then a connection: beyond the limit, clients wait in the backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (stream, peer) = stream;
        let _ = stream.set_nodelay(true);
        let busy = Arc::new(AtomicBool::new(false));
        let (router, shortcut, flag) = (router.clone(), shortcut.clone(), busy.clone());
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            flag.store(true, Ordering::Release);
            // The client's address, for limits per client IP.
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let (router, shortcut, busy) = (router.clone(), shortcut.clone(), flag.clone());
            async move {
                if let Some(state) = shortcut {
                    if let Some(response) = pier_api::redirect_shortcut(&state, &req).await {
                        return Ok(response.map(|body| Tracked { body, busy }));
                    }
                }
                let response = router.oneshot(req).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, busy }))
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let handle = connections.spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            drop(slot);
        });
        open.insert(handle.id(), (busy, handle));
    }
    drop(listener);
    for (busy, handle) in open.values() {
        if !busy.load(Ordering::Acquire) {
            handle.abort();
        }
    }
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = limits.grace.as_secs(),
            "requests still in flight after the grace period; closing their connections"
        );
    }
    connections.shutdown().await;
}
