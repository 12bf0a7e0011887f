//! Assembles the API: each capability's routes (one folder each, its `routes()`) behind the
//! protection their group needs (authentication, limits, idempotency), public health and
//! documentation routes, and the edge middleware around everything.

pub(crate) mod flags;
pub(crate) mod identity;
pub(crate) mod jobs;
pub(crate) mod links;
pub(crate) mod platform;
pub(crate) mod rate_limits;
pub(crate) mod webhooks;

pub use flags::{FlagsParts, FlagsState};
pub use identity::{FailedLogins, IdentityParts, IdentityState};
pub use jobs::{JobsParts, JobsState};
pub use links::redirect_shortcut;
pub use links::{LinksParts, LinksState, PasswordGuesses};
pub use platform::redis_up;
pub use rate_limits::{RateLimitsParts, RateLimitsState};
pub use webhooks::WebhooksState;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::middleware::{
    Deadline, authenticate, compression, cors, deadline, edge, idempotency, limit_per_ip,
    limit_per_key, preflight_no_content, record_route,
};
use crate::openapi;

/// A capability's routes, grouped by the protection [`router`] puts around them.
struct Routes {
    /// Authenticated, limited per caller, idempotent, with the normal deadline.
    resources: OpenApiRouter<AppState>,
    /// Like `resources`, but their deadline adds the long-poll wait (worker claims).
    long_polls: OpenApiRouter<AppState>,
    /// A session's own routes: authenticated, but outside idempotency, whose stored replay of
    /// a new session's cookie could be fetched by another device of the same user.
    sessions: OpenApiRouter<AppState>,
    /// Without credentials, limited per client address.
    public: OpenApiRouter<AppState>,
    /// Public and outside the per-address limit of the API's public routes: one address (an
    /// office behind NAT) may follow many links.
    redirects: OpenApiRouter<AppState>,
}

impl Routes {
    fn new() -> Self {
        Self {
            resources: OpenApiRouter::new(),
            long_polls: OpenApiRouter::new(),
            sessions: OpenApiRouter::new(),
            public: OpenApiRouter::new(),
            redirects: OpenApiRouter::new(),
        }
    }

    fn merge(self, other: Self) -> Self {
        Self {
            resources: self.resources.merge(other.resources),
            long_polls: self.long_polls.merge(other.long_polls),
            sessions: self.sessions.merge(other.sessions),
            public: self.public.merge(other.public),
            redirects: self.redirects.merge(other.redirects),
        }
    }
}

/// The probes alone, for the admin listener: a worker node serves no API but is probed too.
/// Problems still go through [`edge`].
pub fn probes(state: AppState) -> Router {
    platform::probes()
        .route_layer(from_fn(record_route))
        .layer(from_fn(edge))
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    let all = [
        platform::routes(),
        identity::routes(),
        jobs::routes(),
        rate_limits::routes(),
        links::routes(),
        webhooks::routes(),
        flags::routes(),
    ]
    .into_iter()
    .fold(Routes::new(), Routes::merge);

    let normal = Deadline(state.http().request_timeout);
    let long_poll = Deadline(state.http().request_timeout + jobs::MAX_WAIT);
    let long_polls = all
        .long_polls
        .route_layer(from_fn_with_state(long_poll, deadline));
    let resources = all
        .resources
        .route_layer(from_fn_with_state(normal, deadline))
        .merge(long_polls)
        // route_layer: unknown paths stay a plain 404 instead of asking for credentials.
        .route_layer(from_fn_with_state(state.clone(), idempotency))
        .route_layer(from_fn_with_state(state.clone(), limit_per_key))
        .route_layer(from_fn_with_state(state.clone(), authenticate));
    let sessions = all
        .sessions
        .route_layer(from_fn_with_state(normal, deadline))
        .route_layer(from_fn_with_state(state.clone(), limit_per_key))
        .route_layer(from_fn_with_state(state.clone(), authenticate));
    let public = all
        .public
        .route_layer(from_fn_with_state(normal, deadline))
        .route_layer(from_fn_with_state(state.clone(), limit_per_ip));

    // Compression wraps each router but the redirect's, outside idempotency, so a stored
    // replay is the plain response, compressed for whoever asks for it.
    let (router, spec) = OpenApiRouter::with_openapi(openapi::base())
        .merge(resources.layer(compression()))
        .merge(sessions.layer(compression()))
        .merge(public.layer(compression()))
        .merge(all.redirects)
        .split_for_parts();

    let router = router
        .merge(
            platform::docs(openapi::finish(spec))
                .route_layer(from_fn_with_state(state.clone(), limit_per_ip))
                .layer(compression()),
        )
        .route_layer(from_fn(record_route))
        .layer(DefaultBodyLimit::max(state.http().body_limit));
    // CORS outside authentication and the limits, so a preflight is answered without them.
    let router = match cors(&state.http().cors_allowed_origins) {
        Some(cors) => router.layer(cors).layer(from_fn(preflight_no_content)),
        None => router,
    };
    router.layer(from_fn(edge)).with_state(state)
}
