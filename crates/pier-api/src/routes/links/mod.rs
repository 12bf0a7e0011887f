//! Short links over HTTP: their resources, statistics, QR codes, bulk import and export, and the
//! public redirect.

mod bulk;
mod crud;
mod export;
mod import;
mod qr;
mod redirect;
mod redirect_misses;
mod state;
mod stats;

pub use redirect::shortcut as redirect_shortcut;
pub use state::{LinksParts, LinksState, PasswordGuesses};

use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::Routes;
use crate::problem::ApiError;

pub(super) fn routes() -> Routes {
    let resources = OpenApiRouter::new()
        .routes(routes!(crud::create, crud::list))
        .routes(routes!(crud::get, crud::update, crud::delete))
        .routes(routes!(crud::get_by_slug))
        .routes(routes!(stats::get))
        .routes(routes!(import::import).layer(DefaultBodyLimit::max(import::MAX_IMPORT_BYTES)))
        .routes(routes!(export::export))
        .routes(routes!(qr::qr));
    let redirects = OpenApiRouter::new().routes(routes!(redirect::follow, redirect::unlock));
    Routes {
        resources,
        redirects,
        ..Routes::new()
    }
}

impl From<pier_links::LinkError> for ApiError {
    fn from(err: pier_links::LinkError) -> Self {
        match err {
            pier_links::LinkError::SlugTaken(_) => Self::conflict("slug_taken", err.to_string()),
            pier_links::LinkError::Busy(busy) => busy.into(),
            pier_links::LinkError::Hash(_) => Self::internal(err),
            pier_links::LinkError::Db(db) => db.into(),
        }
    }
}
