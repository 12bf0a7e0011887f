//! Webhooks over HTTP: event types, publishing, endpoints, deliveries and attempts.

mod endpoints;
mod events;
mod state;
mod views;

pub use state::WebhooksState;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::http::StatusCode;
use pier_core::ValidationErrors;
use pier_webhooks::{ReplayError, WebhookError};

use super::Routes;
use crate::problem::ApiError;

pub(super) fn routes() -> Routes {
    let resources = OpenApiRouter::new()
        .routes(routes!(events::create_type, events::list_types))
        .routes(routes!(events::get_type))
        .routes(routes!(events::publish, events::list))
        .routes(routes!(events::get))
        .routes(routes!(events::deliveries))
        .routes(routes!(events::retry))
        .routes(routes!(endpoints::create, endpoints::list))
        .routes(routes!(
            endpoints::get,
            endpoints::update,
            endpoints::delete
        ))
        .routes(routes!(endpoints::secret))
        .routes(routes!(endpoints::rotate))
        .routes(routes!(endpoints::attempts))
        .routes(routes!(endpoints::recover));
    Routes {
        resources,
        ..Routes::new()
    }
}

impl From<ReplayError> for ApiError {
    fn from(err: ReplayError) -> Self {
        match err {
            ReplayError::Unfinished => ApiError::conflict("delivery_unfinished", err.to_string()),
            ReplayError::EndpointDisabled => {
                ApiError::conflict("endpoint_disabled", err.to_string())
            }
            ReplayError::Webhook(err) => err.into(),
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(err: WebhookError) -> Self {
        match err {
            WebhookError::EventTypeExists(_) => {
                ApiError::conflict("event_type_exists", err.to_string())
            }
            WebhookError::EventIdReused(_) => {
                ApiError::conflict("event_id_reused", err.to_string())
            }
            WebhookError::InvalidSchema(_) => ApiError::validation(ValidationErrors::single(
                "schema",
                "invalid",
                err.to_string(),
            )),
            WebhookError::PayloadMismatch { .. } => ApiError::validation(ValidationErrors::single(
                "payload",
                "schema_mismatch",
                err.to_string(),
            )),
            WebhookError::PayloadTooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                err.to_string(),
            ),
            WebhookError::Sealed(_) => ApiError::internal(err),
            WebhookError::Db(db) => db.into(),
        }
    }
}
