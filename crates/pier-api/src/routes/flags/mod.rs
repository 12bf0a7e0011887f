//! Feature flags over HTTP: their management (`/v1/flags`, the flagd document of a workspace,
//! each flag's audit trail), a stream of their changes (`/v1/flags/stream`) and their
//! evaluation by OFREP (`/ofrep/v1/evaluate/flags`).

mod answers;
mod changes;
mod crud;
mod document;
mod ofrep;
mod state;
mod stream;

pub use state::{FlagsParts, FlagsState};

use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::Routes;
use crate::problem::ApiError;

pub(super) fn routes() -> Routes {
    let resources = OpenApiRouter::new()
        .routes(routes!(crud::create, crud::list))
        .routes(routes!(
            crud::get,
            crud::replace,
            crud::update,
            crud::delete
        ))
        .routes(routes!(changes::list))
        .routes(routes!(stream::stream))
        .routes(
            routes!(document::export, document::import)
                .layer(DefaultBodyLimit::max(document::MAX_BODY_BYTES)),
        )
        .routes(routes!(ofrep::evaluate))
        .routes(routes!(ofrep::evaluate_all));
    Routes {
        resources,
        ..Routes::new()
    }
}

impl From<pier_flags::FlagError> for ApiError {
    fn from(err: pier_flags::FlagError) -> Self {
        match err {
            pier_flags::FlagError::Exists(_) => Self::conflict("flag_exists", err.to_string()),
            pier_flags::FlagError::Db(db) => db.into(),
        }
    }
}
