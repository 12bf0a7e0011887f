//! Feature flags over HTTP: their management (`/v1/flags`, the flagd document of a workspace,
//! each flag's audit trail and scheduled changes), a stream of their changes
//! (`/v1/flags/stream`) and their evaluation by OFREP (`/ofrep/v1/evaluate/flags`).

mod answers;
mod changes;
mod crud;
mod document;
mod ofrep;
mod schedules;
mod state;
mod stream;

pub use state::{FlagsParts, FlagsState};

use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::Routes;
use crate::problem::{ApiError, ApiResult};

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
        .routes(routes!(schedules::create, schedules::list))
        .routes(routes!(schedules::get))
        .routes(routes!(schedules::cancel))
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

/// A flag key from a path; one that cannot be a key names no flag (404, as an absent one).
fn key_of(text: &str) -> ApiResult<pier_flags::FlagKey> {
    pier_flags::FlagKey::parse(text).map_err(|_| ApiError::not_found("flag"))
}

impl From<pier_flags::FlagError> for ApiError {
    fn from(err: pier_flags::FlagError) -> Self {
        match err {
            pier_flags::FlagError::Exists(_) => Self::conflict("flag_exists", err.to_string()),
            pier_flags::FlagError::Db(db) => db.into(),
        }
    }
}

impl From<pier_flags::ScheduleError> for ApiError {
    fn from(err: pier_flags::ScheduleError) -> Self {
        use pier_flags::ScheduleError;
        match err {
            ScheduleError::FlagNotFound => Self::not_found("flag"),
            ScheduleError::NotFound => Self::not_found("schedule"),
            ScheduleError::Ended(_) => Self::conflict("invalid_state", err.to_string()),
            ScheduleError::Invalid(errors) => Self::validation(errors),
            ScheduleError::Db(db) => db.into(),
        }
    }
}
