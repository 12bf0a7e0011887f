//! Event types (`/v1/event-types`), publishing and reading events (`/v1/events`), an event's
//! deliveries, and sending a delivery again (`/v1/deliveries/{id}/retry`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use pier_core::{ValidationErrors, schema};
use pier_webhooks::model::bounds;
use pier_webhooks::{DeliveryId, Event, EventId, EventTypeName, NewEvent};
use serde::Deserialize;
use utoipa::openapi::schema::Object;

use super::WebhooksState;
use super::views::{DeliveryView, EventTypeView, EventView, json_schema};
use crate::AppState;
use crate::extract::{ApiJson, ApiQuery, Authed, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::response::located;

/// The body of `POST /v1/event-types`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = EventTypeView::example)]
pub struct CreateEventType {
    name: EventTypeName,
    #[schema(schema_with = description)]
    description: Option<String>,
    #[schema(schema_with = json_schema)]
    schema: Option<serde_json::Value>,
}

fn description() -> Object {
    schema::nullable(
        schema::trimmed_text(bounds::DESCRIPTION_CHARS, "").description(Some("For people")),
    )
}

/// Register an event type, optionally with a JSON Schema for its payloads.
#[utoipa::path(
    post,
    path = "/v1/event-types",
    operation_id = "createEventType",
    tag = "webhooks",
    security(("bearer" = [])),
    request_body = CreateEventType,
    responses(
        (status = 201, body = EventTypeView, headers(("Location" = String))),
        (status = 409, description = "`event_type_exists`: the workspace has this event type", body = crate::Problem)
    )
)]
pub async fn create_type(
    State(webhooks): State<WebhooksState>,
    auth: Authed<perm::WebhooksWrite>,
    ApiJson(body): ApiJson<CreateEventType>,
) -> ApiResult<Response> {
    let description = body
        .description
        .as_deref()
        .map(|d| pier_core::validation::trimmed_text(d, bounds::DESCRIPTION_CHARS))
        .transpose()
        .map_err(|e| ApiError::validation(ValidationErrors::single("description", "invalid", e)))?;
    if let Some(schema) = &body.schema
        && schema.to_string().len() > bounds::SCHEMA_BYTES
    {
        let message = format!("must be at most {} bytes as JSON", bounds::SCHEMA_BYTES);
        return Err(ApiError::validation(ValidationErrors::single(
            "schema",
            "too_large",
            message,
        )));
    }
    let created = webhooks
        .store()
        .create_event_type(
            auth.principal.workspace_id(),
            &body.name,
            description.as_deref(),
            body.schema.as_ref(),
        )
        .await?;
    let location = format!("/v1/event-types/{}", created.name);
    Ok(located(
        StatusCode::CREATED,
        &location,
        Json(EventTypeView::from(created)),
    ))
}

/// List event types by name.
#[utoipa::path(
    get,
    path = "/v1/event-types",
    operation_id = "listEventTypes",
    tag = "webhooks",
    security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = Page<EventTypeView>))
)]
pub async fn list_types(
    State(state): State<AppState>,
    State(webhooks): State<WebhooksState>,
    auth: Authed<perm::WebhooksRead>,
    page: Pagination,
) -> ApiResult<Page<EventTypeView>> {
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("event-types", workspace);
    let after: Option<String> = page.position(state.cursors(), &scope)?;
    let rows = webhooks
        .store()
        .event_types(workspace, after, page.fetch_limit())
        .await?;
    let page = page.page(state.cursors(), &scope, rows, |t| {
        t.name.as_str().to_owned()
    });
    Ok(page.map(EventTypeView::from))
}

/// Read an event type.
#[utoipa::path(
    get,
    path = "/v1/event-types/{name}",
    operation_id = "getEventType",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("name" = inline(EventTypeName), Path, description = "The event type's name")),
    responses((status = 200, body = EventTypeView))
)]
pub async fn get_type(
    State(webhooks): State<WebhooksState>,
    auth: Authed<perm::WebhooksRead>,
    Path(name): Path<String>,
) -> ApiResult<Json<EventTypeView>> {
    webhooks
        .store()
        .event_type(auth.principal.workspace_id(), &name)
        .await?
        .map(|t| Json(t.into()))
        .ok_or_else(|| ApiError::not_found("event type"))
}

/// The body of `POST /v1/events`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"type": "invoice.paid", "payload": {"invoice_id": "in_42"},
                          "event_id": "invoice-42-paid"}))]
pub struct PublishEvent {
    #[serde(rename = "type")]
    event_type: EventTypeName,
    /// Any JSON (at most 256 KiB as text unless the server says otherwise); it must satisfy
    /// the event type's schema when the type is registered with one. Receivers get it as
    /// `data` in `{"type", "timestamp", "data"}`.
    payload: serde_json::Value,
    /// Your own id for the event: publishing the same id again (with the same type and
    /// payload) returns the first event instead of a second one.
    #[schema(schema_with = client_event_id)]
    event_id: Option<String>,
}

fn client_event_id() -> Object {
    schema::nullable(schema::plain_text(1, bounds::CLIENT_EVENT_ID_CHARS))
}

/// Publish an event to every enabled endpoint that wants its type. Delivery happens in the
/// background; the response says the event is stored. Honours `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/v1/events",
    operation_id = "publishEvent",
    tag = "webhooks",
    security(("bearer" = [])),
    request_body = PublishEvent,
    responses(
        (status = 202, body = EventView, headers(("Location" = String))),
        (status = 409, description = "`event_id_reused`: the event id was published with another type or payload", body = crate::Problem),
        (status = 413, description = "`payload_too_large`: the payload is over the server's bound", body = crate::Problem),
        (status = 422, description = "`validation_failed`: a field breaks its rule, or the payload fails its type's schema (`schema_mismatch`)", body = crate::Problem)
    )
)]
pub async fn publish(
    State(webhooks): State<WebhooksState>,
    auth: Authed<perm::EventsPublish>,
    ApiJson(body): ApiJson<PublishEvent>,
) -> ApiResult<Response> {
    if let Some(id) = &body.event_id {
        pier_core::validation::plain_text(id, 1, bounds::CLIENT_EVENT_ID_CHARS).map_err(|e| {
            ApiError::validation(ValidationErrors::single("event_id", "invalid", e))
        })?;
    }
    let event = NewEvent {
        event_type: body.event_type,
        payload: body.payload,
        event_id: body.event_id,
    };
    let published = webhooks
        .publisher()
        .publish(auth.principal.workspace_id(), event)
        .await?;
    let location = format!("/v1/events/{}", published.event.id);
    Ok(located(
        StatusCode::ACCEPTED,
        &location,
        Json(EventView::from(published.event)),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<EventTypeName>, inline)]
    event_type: Option<String>,
}

/// List events, newest first.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "listEvents",
    tag = "webhooks",
    security(("bearer" = [])),
    params(ListEvents, PageParams),
    responses((status = 200, body = Page<EventView>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(webhooks): State<WebhooksState>,
    auth: Authed<perm::WebhooksRead>,
    page: Pagination,
    ApiQuery(query): ApiQuery<ListEvents>,
) -> ApiResult<Page<EventView>> {
    if let Some(t) = &query.event_type {
        EventTypeName::parse(t)
            .map_err(|e| ApiError::validation(ValidationErrors::single("type", "invalid", e)))?;
    }
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("events", workspace).filter("type", query.event_type.as_deref());
    let before: Option<String> = page.position(state.cursors(), &scope)?;
    let rows = webhooks
        .store()
        .events(
            workspace,
            query.event_type.as_deref(),
            before,
            page.fetch_limit(),
        )
        .await?;
    let page = page.page(state.cursors(), &scope, rows, |e| e.id.as_str().to_owned());
    Ok(page.map(EventView::from))
}

async fn load_event(state: &AppState, auth: &pier_auth::Principal, id: &str) -> ApiResult<Event> {
    let not_found = || ApiError::not_found("event");
    let id = EventId::parse(id).map_err(|_| not_found())?;
    state
        .webhooks()
        .store()
        .event(auth.workspace_id(), &id)
        .await?
        .ok_or_else(not_found)
}

/// Read an event.
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    operation_id = "getEvent",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = inline(EventId), Path, description = "The event id")),
    responses((status = 200, body = EventView))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authed<perm::WebhooksRead>,
    Path(id): Path<String>,
) -> ApiResult<Json<EventView>> {
    load_event(&state, &auth.principal, &id)
        .await
        .map(|e| Json(e.into()))
}

/// The deliveries of an event, one per endpoint that wanted it.
#[utoipa::path(
    get,
    path = "/v1/events/{id}/deliveries",
    operation_id = "listEventDeliveries",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = inline(EventId), Path, description = "The event id"), PageParams),
    responses((status = 200, body = Page<DeliveryView>))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    State(webhooks): State<WebhooksState>,
    auth: Authed<perm::WebhooksRead>,
    page: Pagination,
    Path(id): Path<String>,
) -> ApiResult<Page<DeliveryView>> {
    let event = load_event(&state, &auth.principal, &id).await?;
    let scope = CursorScope::new("event-deliveries", &event.workspace_id)
        .filter("event", Some(event.id.as_str()));
    let after: Option<String> = page.position(state.cursors(), &scope)?;
    let rows = webhooks
        .store()
        .deliveries_of(&event.workspace_id, &event.id, after, page.fetch_limit())
        .await?;
    let page = page.page(state.cursors(), &scope, rows, |d| d.id.as_str().to_owned());
    Ok(page.map(DeliveryView::from))
}

/// Send an ended delivery (failed or succeeded) again, with a fresh retry schedule.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/retry",
    operation_id = "retryDelivery",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = inline(DeliveryId), Path, description = "The delivery id")),
    responses(
        (status = 202, body = DeliveryView),
        (status = 409, description = "`delivery_unfinished`: the delivery is still under way; `endpoint_disabled`: enable the endpoint first", body = crate::Problem)
    )
)]
pub async fn retry(
    State(webhooks): State<WebhooksState>,
    auth: Authed<perm::WebhooksWrite>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let not_found = || ApiError::not_found("delivery");
    let id = DeliveryId::parse(&id).map_err(|_| not_found())?;
    let delivery = webhooks
        .store()
        .retry(auth.principal.workspace_id(), &id)
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(delivery_id = %delivery.id, "webhook delivery sent again");
    Ok((StatusCode::ACCEPTED, Json(delivery.into())))
}
