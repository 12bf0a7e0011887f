//! What webhooks are made of: event types, endpoints, events, deliveries and attempts, with the
//! rule each owner-set field obeys.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;

use pier_core::{Timestamp, WorkspaceId, define_id};
use serde::Serialize;

define_id!(
    /// An endpoint id, `ep_…`.
    EndpointId,
    "ep"
);
define_id!(
    /// An event id, `msg_…`: the `webhook-id` header of every delivery of the event, stable
    /// across retries so receivers can deduplicate (Standard Webhooks calls events messages).
    EventId,
    "msg"
);
define_id!(
    /// One event's delivery to one endpoint, `dlv_…`.
    DeliveryId,
    "dlv"
);
define_id!(
    /// One request sent for a delivery, `atmpt_…`.
    AttemptId,
    "atmpt"
);

/// The bounds of the owner-set fields.
pub mod bounds {
    use std::ops::RangeInclusive;

    pub const DESCRIPTION_CHARS: usize = 500;
    /// An endpoint filters on at most this many event types.
    pub const EVENT_TYPE_FILTERS: usize = 100;
    pub const RATE_LIMIT_PER_SECOND: RangeInclusive<u32> = 1..=10_000;
    pub const METADATA_ENTRIES: usize = 50;
    pub const METADATA_KEY_CHARS: usize = 64;
    pub const METADATA_VALUE_CHARS: usize = 500;
    /// A client's own event id, for deduplication.
    pub const CLIENT_EVENT_ID_CHARS: usize = 255;
    /// The JSON Schema of an event type, as text.
    pub const SCHEMA_BYTES: usize = 64 * 1024;
    /// Of the response body an attempt keeps (see `deliver::excerpt`).
    pub const RESPONSE_BODY_BYTES: usize = 512;
    /// Of the error text an attempt keeps.
    pub const ERROR_CHARS: usize = 1000;
}

/// The name of an event type, e.g. `invoice.paid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventTypeName(String);

/// The characters of an event type name, for messages and the OpenAPI pattern.
const NAME_RULE: &str = "letters, digits, `_`, `-`, `.` or `:`, starting with a letter or digit";
const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.:-]*$";

impl EventTypeName {
    pub const CHARS: RangeInclusive<usize> = 1..=128;

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut chars = text.chars();
        let valid = Self::CHARS.contains(&text.len())
            && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "must be 1 to {} {NAME_RULE} (got `{}`)",
                Self::CHARS.end(),
                pier_core::id::Truncated(text)
            ))
        }
    }

    /// One of Pier's own lifecycle events, named by a literal.
    pub(crate) fn own(name: &'static str) -> Self {
        debug_assert!(Self::parse(name).is_ok(), "bad event type {name}");
        Self(name.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EventTypeName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for EventTypeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for EventTypeName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        pier_core::schema::string(*Self::CHARS.start(), *Self::CHARS.end())
            .pattern(Some(NAME_PATTERN))
            .description(Some("An event type name, e.g. `invoice.paid`"))
            .into()
    }
}

impl utoipa::ToSchema for EventTypeName {}

/// An event type a workspace publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    pub name: EventTypeName,
    pub description: Option<String>,
    pub schema: Option<serde_json::Value>,
    pub created_at: Timestamp,
}

/// Why an endpoint stopped receiving deliveries without its owner turning it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisabledReason {
    /// The receiver answered `410 Gone`.
    Gone,
    /// Every attempt failed for longer than the configured window.
    Failing,
}

impl DisabledReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Failing => "failing",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [Self::Gone, Self::Failing]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

/// Free-form string pairs the owner keeps on an endpoint.
pub type Metadata = BTreeMap<String, String>;

/// A receiver of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = Endpoint::example)]
pub struct Endpoint {
    #[schema(value_type = String)]
    pub id: EndpointId,
    #[serde(skip)]
    pub workspace_id: WorkspaceId,
    /// Where deliveries go. The `viewer` role sees it without userinfo, query or fragment.
    pub url: String,
    pub description: Option<String>,
    /// The event types it receives; empty means all.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Set when Pier disabled the endpoint; cleared when its owner enables it again.
    pub disabled_reason: Option<DisabledReason>,
    /// Deliveries per second at most; none means unthrottled.
    pub rate_limit_per_second: Option<u32>,
    /// Deliver one event at a time, in publish order.
    pub ordered: bool,
    /// Sign with an Ed25519 key too (`v1a`), which receivers verify with its public key.
    pub ed25519: bool,
    pub metadata: Metadata,
    #[serde(skip)]
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Endpoint {
    pub fn example() -> serde_json::Value {
        serde_json::json!({
            "id": "ep_01m8hpqca6yrpxjm9wy9jmw19v",
            "url": "https://example.com/webhooks/pier",
            "description": "Billing service",
            "event_types": ["invoice.paid"],
            "enabled": true,
            "disabled_reason": null,
            "rate_limit_per_second": 50,
            "ordered": false,
            "ed25519": false,
            "metadata": {"team": "billing"},
            "created_at": "2026-11-30T12:00:00Z",
            "updated_at": "2026-11-30T12:00:00Z"
        })
    }

    /// The endpoint with its URL's userinfo, query and fragment taken off (see
    /// [`url_without_secrets`]).
    #[must_use]
    pub fn without_url_secrets(mut self) -> Self {
        self.url = url_without_secrets(&self.url);
        self
    }

    /// Whether this endpoint receives events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// `url` without its userinfo, query and fragment, the parts where receivers often take a
/// credential (`https://user:pass@host/`, `?token=…`): what is shown to those who may read an
/// endpoint but not change it.
pub fn url_without_secrets(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            // Both fail only for URLs that cannot have userinfo, which then have none.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.into()
        }
        // Stored URLs were parsed when set; should one not parse, show none of it.
        Err(_) => String::new(),
    }
}

/// Checks metadata against its bounds.
pub fn check_metadata(metadata: &Metadata) -> Result<(), String> {
    use pier_core::validation::plain_text;
    if metadata.len() > bounds::METADATA_ENTRIES {
        return Err(format!(
            "must have at most {} entries",
            bounds::METADATA_ENTRIES
        ));
    }
    for (key, value) in metadata {
        plain_text(key, 1, bounds::METADATA_KEY_CHARS).map_err(|e| format!("key {e}"))?;
        plain_text(value, 0, bounds::METADATA_VALUE_CHARS)
            .map_err(|e| format!("value of `{key}` {e}"))?;
    }
    Ok(())
}

/// A published event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub workspace_id: WorkspaceId,
    pub event_type: String,
    pub payload: serde_json::Value,
    /// The publisher's own id for the event, which publishes it once.
    pub event_id: Option<String>,
    pub created_at: Timestamp,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Behind an earlier event on an ordered endpoint.
    Waiting,
    /// Being sent, or waiting for its next attempt.
    Pending,
    Succeeded,
    /// Out of attempts, or its endpoint was disabled or deleted.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [Self::Waiting, Self::Pending, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// One event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    pub state: DeliveryState,
    pub attempts: u32,
    /// The status code of the last response, if one came.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One request sent to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: AttemptId,
    pub delivery_id: DeliveryId,
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    pub attempted_at: Timestamp,
    /// From sending the request to the end of the response (or the failure).
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    /// The first 512 bytes of the response body (cut at a character boundary), kept only for
    /// a 2xx, 4xx or 5xx answer whose content type is text (`text/*`) or JSON
    /// (`application/json`, `application/*+json`); null for any other answer.
    pub response_body: Option<String>,
    /// Why no acceptable response came.
    pub error: Option<String>,
    pub succeeded: bool,
}

#[cfg(test)]
mod tests {
    use super::url_without_secrets;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            url_without_secrets("https://user:pass@hooks.example:8443/in/pier?token=s3cret#x"),
            "https://hooks.example:8443/in/pier"
        );
        assert_eq!(
            url_without_secrets("https://hooks.example/in"),
            "https://hooks.example/in"
        );
        assert_eq!(url_without_secrets("not a url"), "");
    }
}
