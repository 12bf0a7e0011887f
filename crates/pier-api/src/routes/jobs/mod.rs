//! Jobs over HTTP: enqueue and inspect, the worker protocol (claim, heartbeat, complete, fail),
//! queue settings, and workflows of jobs.

mod crud;
mod leases;
mod outcomes;
pub(super) mod queues;
mod state;
mod views;
mod workflows;

pub(super) use leases::MAX_WAIT;
pub use state::{JobsParts, JobsState};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use pier_jobs::JobError;

use super::Routes;
use crate::problem::ApiError;

pub(super) fn routes() -> Routes {
    let resources = OpenApiRouter::new()
        .routes(routes!(crud::create, crud::list))
        .routes(routes!(crud::create_batch))
        .routes(routes!(crud::get))
        .routes(routes!(crud::cancel))
        .routes(routes!(crud::retry))
        .routes(routes!(leases::heartbeat))
        .routes(routes!(outcomes::complete))
        .routes(routes!(outcomes::fail))
        .routes(routes!(outcomes::complete_many))
        .routes(routes!(outcomes::fail_many))
        .routes(routes!(queues::list))
        .routes(routes!(queues::update))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(workflows::create, workflows::list))
        .routes(routes!(workflows::get))
        .routes(routes!(workflows::cancel));
    Routes {
        resources,
        long_polls: OpenApiRouter::new().routes(routes!(leases::claim)),
        ..Routes::new()
    }
}

impl From<JobError> for ApiError {
    fn from(err: JobError) -> Self {
        match err {
            JobError::NotFound => Self::not_found("job"),
            JobError::StaleLease => Self::conflict("stale_lease", err.to_string()),
            JobError::WrongState(_) => Self::conflict("invalid_state", err.to_string()),
            JobError::UniqueConflict => Self::conflict("unique_key_taken", err.to_string()),
            JobError::TooManyQueues(_) => Self::conflict("too_many_queues", err.to_string()),
            JobError::WorkflowNotFound => Self::not_found("workflow"),
            JobError::WorkflowState(_) => Self::conflict("invalid_state", err.to_string()),
            JobError::Database(db) => db.into(),
        }
    }
}
