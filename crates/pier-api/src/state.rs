//! What every handler can reach, and the capabilities' slices of it.
//!
//! [`AppState`] holds only what every route needs (the database, the clock, cursors, the
//! authenticator, the limiter, and the edge's settings); each capability's routes take their
//! own slice (`State<LinksState>`, …, axum sub-states through `FromRef`), built from that
//! capability's settings block in [`AppStateParts`].

use std::sync::Arc;

use axum::extract::FromRef;
use pier_auth::Authenticator;
use pier_core::{Clock, CursorCodec};
use pier_db::Db;
use pier_idempotency::IdempotencyStore;
use pier_ratelimit::Limiter;
use pier_webhooks::WebhookStore;

use crate::rate_limit::ApiProtection;
use crate::routes::flags::{FlagsParts, FlagsState};
use crate::routes::identity::{IdentityParts, IdentityState};
use crate::routes::jobs::{JobsParts, JobsState};
use crate::routes::links::{LinksParts, LinksState};
use crate::routes::rate_limits::{RateLimitsParts, RateLimitsState};
use crate::routes::webhooks::WebhooksState;

/// A Redis connection (it reconnects by itself); `Debug` hides its address.
#[derive(Clone)]
pub struct Redis(pub redis::aio::ConnectionManager);

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redis")
    }
}

/// How the API's edge treats every request.
#[derive(Debug)]
pub struct HttpSettings {
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// The browser origins allowed to call the API from another origin (CORS); none: CORS off.
    pub cors_allowed_origins: Vec<axum::http::HeaderValue>,
    /// How long a request may run (long-poll claims get their wait on top).
    pub request_timeout: std::time::Duration,
    /// How Pier's own API is limited.
    pub protection: ApiProtection,
}

/// Shared, cheaply cloned state of the API.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    db: Db,
    clock: Arc<dyn Clock>,
    cursors: CursorCodec,
    authenticator: Authenticator,
    limiter: Arc<Limiter>,
    edge: Edge,
    identity: IdentityState,
    jobs: JobsState,
    links: LinksState,
    rate_limits: RateLimitsState,
    webhooks: WebhooksState,
    flags: FlagsState,
}

/// What the middleware and the probes need.
#[derive(Debug)]
struct Edge {
    http: HttpSettings,
    idempotency: IdempotencyStore,
    redis: Option<Redis>,
    /// Set when shutdown begins: readiness fails so load balancers stop sending traffic, and
    /// endless responses (flag streams) end so their clients reconnect elsewhere.
    draining: tokio::sync::watch::Sender<bool>,
}

/// The inputs [`AppState`] is built from: what every route needs, then one settings block per
/// capability.
#[derive(Debug)]
pub struct AppStateParts {
    /// The database of record.
    pub db: Db,
    /// The source of "now" for every request.
    pub clock: Arc<dyn Clock>,
    /// Signs pagination cursors; its key is shared by all nodes through the database.
    pub cursors: CursorCodec,
    /// The Redis connection, when one is configured; readiness checks it.
    pub redis: Option<Redis>,
    pub http: HttpSettings,
    /// Idempotency records (their replays are sealed under the server's key).
    pub idempotency: IdempotencyStore,
    /// Decides rate limits, for API protection and the decision API.
    pub limiter: Arc<Limiter>,
    pub identity: IdentityParts,
    pub jobs: JobsParts,
    pub links: LinksParts,
    pub rate_limits: RateLimitsParts,
    /// Webhook endpoints, event types and published events.
    pub webhooks: WebhookStore,
    pub flags: FlagsParts,
}

impl AppState {
    pub fn new(parts: AppStateParts) -> Self {
        let (db, clock) = (&parts.db, &parts.clock);
        let identity = IdentityState::new(parts.identity, db, clock);
        Self(Arc::new(Inner {
            authenticator: identity.authenticator(clock),
            identity,
            jobs: JobsState::new(parts.jobs),
            links: LinksState::new(parts.links),
            rate_limits: RateLimitsState::new(parts.rate_limits, db, clock),
            webhooks: WebhooksState::new(parts.webhooks),
            flags: FlagsState::new(parts.flags),
            edge: Edge {
                http: parts.http,
                idempotency: parts.idempotency,
                redis: parts.redis,
                draining: tokio::sync::watch::Sender::new(false),
            },
            limiter: parts.limiter,
            cursors: parts.cursors,
            clock: parts.clock,
            db: parts.db,
        }))
    }

    /// Turns readiness false (for good): the node is about to stop.
    pub fn start_draining(&self) {
        self.0.edge.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.0.edge.draining.borrow()
    }

    /// Turns true when the node starts draining.
    pub fn draining(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.edge.draining.subscribe()
    }

    pub fn db(&self) -> &Db {
        &self.0.db
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.0.clock
    }

    pub fn cursors(&self) -> &CursorCodec {
        &self.0.cursors
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.0.authenticator
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.0.limiter
    }

    pub fn http(&self) -> &HttpSettings {
        &self.0.edge.http
    }

    pub fn idempotency(&self) -> &IdempotencyStore {
        &self.0.edge.idempotency
    }

    pub fn redis(&self) -> Option<&Redis> {
        self.0.edge.redis.as_ref()
    }

    pub fn identity(&self) -> &IdentityState {
        &self.0.identity
    }

    pub fn jobs(&self) -> &JobsState {
        &self.0.jobs
    }

    pub fn links(&self) -> &LinksState {
        &self.0.links
    }

    pub fn rate_limits(&self) -> &RateLimitsState {
        &self.0.rate_limits
    }

    pub fn webhooks(&self) -> &WebhooksState {
        &self.0.webhooks
    }

    pub fn flags(&self) -> &FlagsState {
        &self.0.flags
    }
}

/// Each capability's routes take their slice as `State<…>`.
macro_rules! slices {
    ($($slice:ty => $field:ident),* $(,)?) => {$(
        impl FromRef<AppState> for $slice {
            fn from_ref(state: &AppState) -> Self {
                state.0.$field.clone()
            }
        }
    )*};
}

slices!(
    IdentityState => identity,
    JobsState => jobs,
    LinksState => links,
    RateLimitsState => rate_limits,
    WebhooksState => webhooks,
    FlagsState => flags,
);
