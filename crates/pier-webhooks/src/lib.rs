//! Webhooks: reliable, signed delivery of events to the endpoints a workspace registers.
//!
//! - **Publishing** ([`Publisher`]): an event, a delivery per endpoint that wants it and the jobs
//!   that send them commit in one transaction (the outbox), shared by concurrent publishers
//!   (group commit); a commit of many deliveries gets one job that the delivery workers turn
//!   into theirs ([`dispatch`]). Pier's own lifecycle events (`link.created`,
//!   `webhook_endpoint.disabled`, …) are written the same way through the [`pier_db::Outbox`]
//!   seam, inside the transaction of the change they announce.
//! - **Delivery** ([`deliver`]): jobs on Pier's internal queue `pier.webhooks`, so deliveries
//!   survive crashes and restarts and are retried on a schedule with jitter. Each request is
//!   signed the Standard Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`;
//!   see the `pier-webhook-verify` crate), goes through the SSRF [`guard`], and is recorded as
//!   an attempt. `410 Gone` disables the endpoint at once, as does a failure window past its
//!   limit; `429`/`503` with `Retry-After` push the next attempt back.
//! - **Ordering**: an ordered endpoint gets one delivery at a time in publish order; a later
//!   event waits while an earlier one is retrying.
//! - **Secrets** ([`secrets`]) are sealed at rest under the server's secret key; a rotation
//!   keeps the old secret signing for an overlap, so receivers switch without a gap.

pub mod deliver;
pub mod dispatch;
mod fields;
pub mod guard;
pub mod model;
mod payload;
mod publish;
mod publisher;
mod replay;
mod retention;
mod schedule;
mod schemas;
mod secrets;
mod store;
mod targets;

pub use deliver::{Deliverer, USER_AGENT};
pub use dispatch::Dispatcher;
pub use fields::{EndpointFields, EndpointPatch};
pub use model::{
    Attempt, AttemptId, Delivery, DeliveryId, DeliveryState, DisabledReason, Endpoint, EndpointId,
    Event, EventId, EventType, EventTypeName, Metadata,
};
pub use publish::{NewEvent, Published, deliveries_of_statement, events_statement, queue};
pub use publisher::Publisher;
pub use replay::{MAX_RECOVER, ReplayError, attempts_statement};
pub use schedule::RetrySchedule;
pub use secrets::{Keys, SecretUnreadable};
pub use store::{Settings, WebhookError, WebhookStore, endpoints_statement, event_types_statement};

/// The webhook tables.
pub const MIGRATIONS: &[pier_db::Migration] = pier_db::migrations!(
    9 => "0009_webhooks",
    20 => "0020_failure_streaks",
    22 => "0022_events_listed_by_type",
);
