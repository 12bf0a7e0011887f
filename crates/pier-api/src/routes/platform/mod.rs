//! The service's own routes: health probes, the API documentation, the well-known documents
//! (JWKS, OAuth metadata) and the caller's workspace.

mod docs;
mod health;
mod well_known;
mod workspace;

pub use docs::router as docs;
pub use health::redis_up;

use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Routes;
use crate::AppState;

pub(super) fn routes() -> Routes {
    let public = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(well_known::jwks))
        .routes(routes!(well_known::metadata));
    Routes {
        resources: OpenApiRouter::new().routes(routes!(workspace::get_workspace)),
        public,
        ..Routes::new()
    }
}

/// The probes alone, outside the OpenAPI document.
pub(super) fn probes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
}
