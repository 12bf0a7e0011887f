//! `GET /v1/flags/stream`: the workspace's flags as server-sent events, for a server-side SDK
//! that evaluates locally. The first event is the whole flagd document (`document`), then one
//! `change` per change in commit order; every event's `id` is its place in the workspace's
//! feed, so a client that reconnects with `Last-Event-ID` gets what it missed (or, once the
//! audit retention pruned that far, a new `document`). Open streams are bounded per node and
//! per workspace, and end when the node starts draining, so clients reconnect elsewhere, and
//! after `[flags] stream_max_secs`, so a client authenticates again: a revoked key or an
//! expired token stops receiving changes within that time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use pier_core::WorkspaceId;
use pier_flags::{Document, FeedChange, Follower, Snapshot};
use tokio::sync::watch;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

use super::FlagsState;
use crate::AppState;
use crate::extract::{Authed, perm};
use crate::problem::{ApiError, ApiResult};

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a client waits before reconnecting after the stream ends (the `retry` field).
const RECONNECT_AFTER: Duration = Duration::from_secs(2);

/// The open streams of this node, bounded in all and per workspace: each holds a connection
/// and a wake-up receiver, and one tenant must not take every slot.
#[derive(Debug)]
pub struct StreamSlots {
    max: usize,
    max_per_workspace: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Only workspaces with a stream open: an entry goes with its last stream.
    by_workspace: HashMap<WorkspaceId, usize>,
}

/// One open stream's place; given back when dropped.
#[derive(Debug)]
struct Slot {
    slots: Arc<StreamSlots>,
    workspace: WorkspaceId,
}

impl StreamSlots {
    pub fn new(max: usize, max_per_workspace: usize) -> Self {
        Self {
            max,
            max_per_workspace,
            open: Mutex::default(),
        }
    }

    fn take(self: &Arc<Self>, workspace: &WorkspaceId) -> Result<Slot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.by_workspace.get(workspace).copied().unwrap_or(0);
        if mine >= self.max_per_workspace {
            return Err(too_many_streams(format!(
                "this workspace has {mine} flag streams open on this node, the most it may"
            )));
        }
        if open.total >= self.max {
            return Err(too_many_streams(
                "this node has as many flag streams open as it serves; try another node or later",
            ));
        }
        open.total += 1;
        *open.by_workspace.entry(workspace.clone()).or_insert(0) += 1;
        metrics::gauge!("pier_flags_streams_open").set(open.total as f64);
        Ok(Slot {
            slots: self.clone(),
            workspace: workspace.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(mine) = open.by_workspace.get_mut(&self.workspace) {
            *mine -= 1;
            if *mine == 0 {
                open.by_workspace.remove(&self.workspace);
            }
        }
        metrics::gauge!("pier_flags_streams_open").set(open.total as f64);
    }
}

/// One server-sent event of the stream, as its fields: `event` names it, `id` is its place in
/// the feed, `data` is its JSON text.
pub struct StreamEvent;

impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> RefOr<Schema> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("event", text().enum_values(Some(["document", "change"])))
            .property(
                "id",
                text()
                    .pattern(Some("^[0-9]+$"))
                    .description(Some("The event's place in the feed, for `Last-Event-ID`")),
            )
            .property(
                "data",
                text().description(Some(
                    "JSON: the flagd document (`document`), or `{key, action, version, definition}` (`change`)",
                )),
            )
            .required("event")
            .required("id")
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for StreamEvent {}

/// Follow the workspace's flags as server-sent events: `document` (the whole flagd document,
/// as `GET /v1/flags/document` returns it) first, then a `change` for each change
/// (`{"key", "action": "created" | "updated" | "deleted", "version", "definition"}`, without
/// `definition` for a delete), each with its place in the feed as `id`. Reconnect with that
/// `id` in `Last-Event-ID` to get only what you missed. A comment line every 15 s keeps the
/// connection alive; the server ends the stream after `[flags] stream_max_secs` (5 minutes by
/// default), and when it shuts down, and the client reconnects.
#[utoipa::path(
    get,
    path = "/v1/flags/stream",
    operation_id = "streamFlags",
    tag = "flags",
    security(("bearer" = [])),
    params(("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received, to resume after it")),
    responses(
        (status = 200, description = "An endless `text/event-stream`", content_type = "text/event-stream", body = StreamEvent, example = "retry: 2000\nevent: document\nid: 41\ndata: {\"$schema\":\"https://flagd.dev/schema/v0/flags.json\",\"flags\":{}}\n\nevent: change\nid: 42\ndata: {\"key\":\"new-checkout\",\"action\":\"updated\",\"version\":3,\"definition\":{\"state\":\"DISABLED\",\"variants\":{\"on\":true,\"off\":false},\"defaultVariant\":\"off\"}}\n\n"),
        (status = 400, description = "`Last-Event-ID` is not an event id of this stream", body = crate::Problem),
        (status = 503, description = "`too_many_streams`: this node or this workspace has as many streams open as it may", body = crate::Problem)
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsRead>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let resume = last_event_id(&headers)?;
    let workspace = auth.principal.workspace_id();
    let slot = flags.streams().take(workspace)?;
    let (follower, snapshot) = flags.store().follow(workspace, resume).await?;
    let first = snapshot.map(document).into_iter();
    let following = Following {
        follower,
        draining: state.draining(),
        ends_at: tokio::time::Instant::now() + flags.stream_max_age(),
        _slot: slot,
    };
    let events = stream::iter(first)
        .chain(stream::unfold(following, Following::next).flat_map(stream::iter))
        .map(Ok::<_, Infallible>);
    let retry = stream::once(async { Ok(Event::default().retry(RECONNECT_AFTER)) });
    Ok(Sse::new(retry.chain(events))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// `Last-Event-ID`, when sent: an id this stream gave (a place in the feed).
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .filter(|seq| *seq >= 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_last_event_id",
                "Last-Event-ID must be the id of an event of this stream (a non-negative integer)",
            )
        })
}

/// `503` with `Retry-After`: slots free up as other streams close.
fn too_many_streams(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_streams", detail)
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"))
}

/// An open stream after its first event.
struct Following {
    follower: Follower,
    draining: watch::Receiver<bool>,
    /// When the stream ends, for its client to reconnect and authenticate again.
    ends_at: tokio::time::Instant,
    _slot: Slot,
}

impl Following {
    /// The next changes' events, or `None` to end the stream: the node is draining, the
    /// stream is as old as it may be, or the database failed (the client resumes from its last
    /// id).
    async fn next(mut self) -> Option<(Vec<Event>, Self)> {
        let changes = tokio::select! {
            () = drained(&mut self.draining) => return None,
            () = tokio::time::sleep_until(self.ends_at) => return None,
            changes = self.follower.changes() => changes,
        };
        match changes {
            Ok(changes) => Some((changes.iter().map(change).collect(), self)),
            Err(err) => {
                tracing::warn!(error = %err, last = self.follower.last(), "flag stream ended: cannot read changes");
                None
            }
        }
    }
}

async fn drained(draining: &mut watch::Receiver<bool>) {
    loop {
        let now = *draining.borrow_and_update();
        if now {
            return;
        }
        if draining.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

fn document(snapshot: Snapshot) -> Event {
    let flags = snapshot.flags.flags.values().map(AsRef::as_ref);
    event("document", snapshot.seq, &Document::export(flags))
}

fn change(change: &FeedChange) -> Event {
    event("change", change.seq, change)
}

fn event(name: &str, seq: i64, data: &impl serde::Serialize) -> Event {
    let event = Event::default().event(name).id(seq.to_string());
    // Serializing a JSON value or a plain struct cannot fail.
    event.json_data(data).unwrap_or_else(|_| Event::default())
}
