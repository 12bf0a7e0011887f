//! Rate limits over HTTP: named policies and the decision API.

mod policies;
mod state;

pub use state::{RateLimitsParts, RateLimitsState};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Routes;

pub(super) fn routes() -> Routes {
    let resources = OpenApiRouter::new()
        .routes(routes!(policies::list))
        .routes(routes!(policies::put, policies::get, policies::delete))
        .routes(routes!(policies::check))
        .routes(routes!(policies::reset))
        .routes(routes!(policies::check_batch));
    Routes {
        resources,
        ..Routes::new()
    }
}
