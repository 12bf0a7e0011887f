//! Event types, events, deliveries and attempts as the API shows them. Endpoints are shown as
//! `pier_webhooks::Endpoint` itself: the capability publishes that same shape as the payload of
//! its `webhook_endpoint.disabled` event.

use pier_core::Timestamp;
use pier_webhooks::{
    Attempt, AttemptId, Delivery, DeliveryId, DeliveryState, EndpointId, Event, EventId, EventType,
    EventTypeName,
};
use serde::Serialize;

/// An event type a workspace publishes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = EventType, example = EventTypeView::example)]
pub struct EventTypeView {
    name: EventTypeName,
    description: Option<String>,
    #[schema(schema_with = json_schema)]
    schema: Option<serde_json::Value>,
    created_at: Timestamp,
}

/// The schema of an event type's `schema` field: a JSON Schema is an object or a boolean.
pub fn json_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::Object,
            Type::Boolean,
            Type::Null,
        ]))
        .description(Some(
            "A JSON Schema (draft 2020-12 unless its `$schema` says otherwise) every payload \
             published with this type must satisfy, or `422`. Remote `$ref`s are not followed.",
        ))
        .build()
}

impl EventTypeView {
    pub fn example() -> serde_json::Value {
        serde_json::json!({
            "name": "invoice.paid",
            "description": "An invoice was paid in full",
            "schema": {"type": "object", "required": ["invoice_id"],
                       "properties": {"invoice_id": {"type": "string"}}},
            "created_at": "2026-11-30T12:00:00Z"
        })
    }
}

impl From<EventType> for EventTypeView {
    fn from(t: EventType) -> Self {
        Self {
            name: t.name,
            description: t.description,
            schema: t.schema,
            created_at: t.created_at,
        }
    }
}

/// A published event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Event, example = EventView::example)]
pub struct EventView {
    #[schema(value_type = String)]
    id: EventId,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    event_type: String,
    payload: serde_json::Value,
    /// The publisher's own id for the event, which publishes it once.
    event_id: Option<String>,
    created_at: Timestamp,
}

impl EventView {
    pub fn example() -> serde_json::Value {
        serde_json::json!({
            "id": "msg_01m8hpqca6yrpxjm9wy9jmw19v",
            "type": "invoice.paid",
            "payload": {"invoice_id": "in_42", "amount": 1200},
            "event_id": "invoice-42-paid",
            "created_at": "2026-11-30T12:00:00Z"
        })
    }
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        Self {
            id: e.id,
            event_type: e.event_type,
            payload: e.payload,
            event_id: e.event_id,
            created_at: e.created_at,
        }
    }
}

/// One event on its way to one endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Delivery, example = DeliveryView::example)]
pub struct DeliveryView {
    #[schema(value_type = String)]
    id: DeliveryId,
    #[schema(value_type = String)]
    event_id: EventId,
    #[schema(value_type = String)]
    endpoint_id: EndpointId,
    state: DeliveryState,
    attempts: u32,
    /// The status code of the last response, if one came.
    last_status: Option<u16>,
    last_error: Option<String>,
    /// When a pending delivery is tried next.
    next_attempt_at: Option<Timestamp>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl DeliveryView {
    pub fn example() -> serde_json::Value {
        serde_json::json!({
            "id": "dlv_01m8hpqca6yrpxjm9wy9jmw19v",
            "event_id": "msg_01m8hpqca6yrpxjm9wy9jmw19v",
            "endpoint_id": "ep_01m8hpqca6yrpxjm9wy9jmw19v",
            "state": "pending",
            "attempts": 2,
            "last_status": 503,
            "last_error": "the endpoint answered 503 Service Unavailable",
            "next_attempt_at": "2026-11-30T12:05:05Z",
            "created_at": "2026-11-30T12:00:00Z",
            "updated_at": "2026-11-30T12:00:05Z"
        })
    }
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            endpoint_id: d.endpoint_id,
            state: d.state,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            next_attempt_at: d.next_attempt_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// One request sent to an endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Attempt, example = AttemptView::example)]
pub struct AttemptView {
    #[schema(value_type = String)]
    id: AttemptId,
    #[schema(value_type = String)]
    delivery_id: DeliveryId,
    #[schema(value_type = String)]
    event_id: EventId,
    #[schema(value_type = String)]
    endpoint_id: EndpointId,
    attempted_at: Timestamp,
    /// From sending the request to the end of the response (or the failure).
    duration_ms: u64,
    status_code: Option<u16>,
    /// The first 512 bytes of the response body (cut at a character boundary), kept only for
    /// a 2xx, 4xx or 5xx answer whose content type is text (`text/*`) or JSON
    /// (`application/json`, `application/*+json`); null for any other answer.
    response_body: Option<String>,
    /// Why no acceptable response came.
    error: Option<String>,
    succeeded: bool,
}

impl AttemptView {
    pub fn example() -> serde_json::Value {
        serde_json::json!({
            "id": "atmpt_01m8hpqca6yrpxjm9wy9jmw19v",
            "delivery_id": "dlv_01m8hpqca6yrpxjm9wy9jmw19v",
            "event_id": "msg_01m8hpqca6yrpxjm9wy9jmw19v",
            "endpoint_id": "ep_01m8hpqca6yrpxjm9wy9jmw19v",
            "attempted_at": "2026-11-30T12:00:00Z",
            "duration_ms": 42,
            "status_code": 200,
            "response_body": "ok",
            "error": null,
            "succeeded": true
        })
    }
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        Self {
            id: a.id,
            delivery_id: a.delivery_id,
            event_id: a.event_id,
            endpoint_id: a.endpoint_id,
            attempted_at: a.attempted_at,
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            response_body: a.response_body,
            error: a.error,
            succeeded: a.succeeded,
        }
    }
}
