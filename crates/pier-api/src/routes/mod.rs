//! Assembles the API: resource routers behind authentication and idempotency, public health and
//! documentation routes, and the edge middleware around everything.

mod api_keys;
mod auth;
mod docs;
mod health;
mod invitations;
mod jobs;
mod leases;
mod link_bulk;
mod link_export;
mod link_import;
mod link_qr;
mod link_stats;
mod links;
mod oauth_authorize;
mod oauth_clients;
mod oauth_token;
mod outcomes;
mod permissions;
mod queues;
mod rate_limits;
mod redirect;
mod redirect_misses;
mod webhook_endpoints;
mod webhook_events;
mod well_known;
mod workspace;

pub use redirect::shortcut as redirect_shortcut;

pub use health::redis_up;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::AppState;
use crate::middleware::{
    Deadline, authenticate, compression, cors, deadline, edge, idempotency, limit_per_ip,
    limit_per_key, preflight_no_content, record_route,
};
use crate::openapi;

/// The probes alone, for the admin listener: a worker node serves no API but is probed too.
/// Problems still go through [`edge`].
pub fn probes(state: AppState) -> Router {
    Router::new()
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        .route_layer(from_fn(record_route))
        .layer(from_fn(edge))
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    let normal = Deadline(state.request_timeout());
    let long_poll = Deadline(state.request_timeout() + leases::MAX_WAIT);
    let claims = OpenApiRouter::new()
        .routes(routes!(leases::claim))
        .route_layer(from_fn_with_state(long_poll, deadline));
    let resources = OpenApiRouter::new()
        .routes(routes!(workspace::get_workspace))
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(api_keys::get, api_keys::revoke))
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::create_batch))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::retry))
        .routes(routes!(leases::heartbeat))
        .routes(routes!(outcomes::complete))
        .routes(routes!(outcomes::fail))
        .routes(routes!(outcomes::complete_many))
        .routes(routes!(outcomes::fail_many))
        .routes(routes!(queues::list))
        .routes(routes!(queues::update))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(rate_limits::list))
        .routes(routes!(
            rate_limits::put,
            rate_limits::get,
            rate_limits::delete
        ))
        .routes(routes!(rate_limits::check))
        .routes(routes!(rate_limits::reset))
        .routes(routes!(rate_limits::check_batch))
        .routes(routes!(links::create, links::list))
        .routes(routes!(links::get, links::update, links::delete))
        .routes(routes!(links::get_by_slug))
        .routes(routes!(link_stats::get))
        .routes(
            routes!(link_import::import)
                .layer(DefaultBodyLimit::max(link_import::MAX_IMPORT_BYTES)),
        )
        .routes(routes!(link_export::export))
        .routes(routes!(link_qr::qr))
        .routes(routes!(
            webhook_events::create_type,
            webhook_events::list_types
        ))
        .routes(routes!(webhook_events::get_type))
        .routes(routes!(webhook_events::publish, webhook_events::list))
        .routes(routes!(webhook_events::get))
        .routes(routes!(webhook_events::deliveries))
        .routes(routes!(webhook_events::retry))
        .routes(routes!(webhook_endpoints::create, webhook_endpoints::list))
        .routes(routes!(
            webhook_endpoints::get,
            webhook_endpoints::update,
            webhook_endpoints::delete
        ))
        .routes(routes!(webhook_endpoints::secret))
        .routes(routes!(webhook_endpoints::rotate))
        .routes(routes!(webhook_endpoints::attempts))
        .routes(routes!(webhook_endpoints::recover))
        .routes(routes!(oauth_clients::create, oauth_clients::list))
        .routes(routes!(oauth_clients::get, oauth_clients::delete))
        .routes(routes!(permissions::create, permissions::list))
        .routes(routes!(permissions::get, permissions::delete))
        .routes(routes!(permissions::check))
        .route_layer(from_fn_with_state(normal, deadline))
        .merge(claims)
        // route_layer: unknown paths stay a plain 404 instead of asking for credentials.
        .route_layer(from_fn_with_state(state.clone(), idempotency))
        .route_layer(from_fn_with_state(state.clone(), limit_per_key))
        .route_layer(from_fn_with_state(state.clone(), authenticate));
    // A session's own routes: authenticated, but outside idempotency, whose stored replay of a
    // new session's cookie could be fetched by another device of the same user.
    let sessions = OpenApiRouter::new()
        .routes(routes!(auth::session))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::change_password))
        .route_layer(from_fn_with_state(normal, deadline))
        .route_layer(from_fn_with_state(state.clone(), limit_per_key))
        .route_layer(from_fn_with_state(state.clone(), authenticate));
    let public = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(auth::login))
        .routes(routes!(invitations::page, invitations::accept))
        .routes(routes!(oauth_token::token))
        .routes(routes!(oauth_token::revoke))
        .routes(routes!(oauth_token::introspect))
        .routes(routes!(oauth_authorize::authorize, oauth_authorize::decide))
        .routes(routes!(well_known::jwks))
        .routes(routes!(well_known::metadata))
        .route_layer(from_fn_with_state(normal, deadline))
        .route_layer(from_fn_with_state(state.clone(), limit_per_ip));
    // The redirect is public and outside the per-address limit of the API's public routes:
    // one address (an office behind NAT) may follow many links.
    let redirects = OpenApiRouter::new().routes(routes!(redirect::follow, redirect::unlock));

    // Compression wraps each router but the redirect's, outside idempotency, so a stored
    // replay is the plain response, compressed for whoever asks for it.
    let (router, spec) = OpenApiRouter::with_openapi(openapi::base())
        .merge(resources.layer(compression()))
        .merge(sessions.layer(compression()))
        .merge(public.layer(compression()))
        .merge(redirects)
        .split_for_parts();

    let router = router
        .merge(
            docs::router(openapi::finish(spec))
                .route_layer(from_fn_with_state(state.clone(), limit_per_ip))
                .layer(compression()),
        )
        .route_layer(from_fn(record_route))
        .layer(DefaultBodyLimit::max(state.body_limit()));
    // CORS outside authentication and the limits, so a preflight is answered without them.
    let router = match cors(state.cors_allowed_origins()) {
        Some(cors) => router.layer(cors).layer(from_fn(preflight_no_content)),
        None => router,
    };
    router.layer(from_fn(edge)).with_state(state)
}
