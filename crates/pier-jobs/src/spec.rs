//! What callers ask to enqueue, and the one set of rules that turns it into a [`NewJob`]: HTTP
//! bodies deserialize into a [`JobSpec`], Rust code builds one, and both call
//! [`JobSpec::build`], so every caller gets the same checks and the same field errors.

use std::time::Duration;

use std::ops::RangeInclusive;

use pier_core::validation::{plain_text, range_message};
use pier_core::{Timestamp, ValidationErrors, schema, whole};
use serde::{Deserialize, Serialize};
use utoipa::openapi::Object;

use crate::model::{JobKind, NewJob, QueueName, RetryPolicy};

/// The largest payload, as JSON text.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
pub const PRIORITY_RANGE: RangeInclusive<i32> = -1_000_000..=1_000_000;
pub const MAX_ATTEMPTS_RANGE: RangeInclusive<u32> = 1..=1000;
/// Leases, in seconds: long enough for a heartbeat to get through, short enough that a dead
/// worker's job is rescued within the hour.
pub const LEASE_SECONDS_RANGE: RangeInclusive<u32> = 1..=3600;
/// Backoff delays, in seconds: up to 30 days.
pub const BACKOFF_SECONDS_RANGE: RangeInclusive<u32> = 1..=30 * 24 * 3600;
pub const UNIQUE_KEY_MAX_CHARS: usize = 255;

/// Retry timing for one job; both default to the standard policy (1 s and 1 h). The delay
/// never exceeds `max_seconds`, even when `base_seconds` is larger.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = backoff_base)]
    pub base_seconds: Option<u32>,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = backoff_max)]
    pub max_seconds: Option<u32>,
}

/// A job to enqueue. Only `kind` is required.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"queue": "emails", "kind": "send_welcome", "payload": {"user": 42},
                          "unique_key": "welcome-42", "max_attempts": 5}))]
pub struct JobSpec {
    /// Defaults to `default`. Names starting with `pier.` are reserved.
    #[schema(value_type = Option<QueueName>, nullable)]
    pub queue: Option<String>,
    /// What the job does; workers dispatch on it.
    #[schema(value_type = JobKind)]
    pub kind: String,
    /// Any JSON, at most 1 MiB as text; defaults to `{}`.
    pub payload: Option<serde_json::Value>,
    /// Not before this time; omit to run now.
    pub run_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = priority)]
    pub priority: Option<i32>,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = max_attempts)]
    pub max_attempts: Option<u32>,
    #[schema(schema_with = unique_key)]
    pub unique_key: Option<String>,
    pub backoff: Option<BackoffSpec>,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = lease_seconds)]
    pub lease_seconds: Option<u32>,
}

// The fields' schemas, with their descriptions (a field's own doc comment does not reach a
// schema made by a function).

fn backoff_base() -> Object {
    schema::nullable(schema::integer(&BACKOFF_SECONDS_RANGE).description(Some(
        "Delay after the first failure, in seconds (doubling after each further failure)",
    )))
}

fn backoff_max() -> Object {
    schema::nullable(
        schema::integer(&BACKOFF_SECONDS_RANGE).description(Some("The longest delay, in seconds")),
    )
}

fn priority() -> Object {
    schema::nullable(
        schema::integer(&PRIORITY_RANGE).description(Some("Smaller runs first; default 0")),
    )
}

fn max_attempts() -> Object {
    schema::nullable(schema::integer(&MAX_ATTEMPTS_RANGE).description(Some(
        "Attempts before the job is discarded (dead-lettered); default 20",
    )))
}

fn unique_key() -> Object {
    schema::nullable(
        schema::plain_text(1, UNIQUE_KEY_MAX_CHARS).description(Some(
            "While an unfinished job has this key, enqueuing another returns it instead",
        )),
    )
}

/// A lease length, for jobs, claims and heartbeats.
pub fn lease_seconds() -> Object {
    schema::nullable(schema::integer(&LEASE_SECONDS_RANGE).description(Some(
        "How long a claim holds the job without a heartbeat, in seconds (default: the job's \
         own, 30 unless set)",
    )))
}

impl JobSpec {
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    #[must_use]
    pub fn payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = Some(payload);
        self
    }

    #[must_use]
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    #[must_use]
    pub fn run_at(mut self, at: Timestamp) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Checks every field, reporting all problems at once.
    pub fn build(self) -> Result<NewJob, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let job = self.check("", &mut errors);
        errors.into_result()?;
        job.ok_or_else(|| ValidationErrors::single("body", "invalid", "invalid job"))
    }

    /// Like [`build`](Self::build), recording errors under `prefix` (e.g. `jobs[3].`) in
    /// `errors`, for batches that report every job's problems together.
    pub fn check(self, prefix: &str, errors: &mut ValidationErrors) -> Option<NewJob> {
        let field = |name: &str| format!("{prefix}{name}");
        let queue = match &self.queue {
            None => Some(QueueName::default_queue()),
            Some(q) => errors.check(&field("queue"), "invalid", QueueName::parse(q)),
        };
        let kind = errors.check(&field("kind"), "invalid", JobKind::parse(&self.kind));
        let payload = self
            .payload
            .map_or_else(|| "{}".to_owned(), |p| p.to_string());
        if payload.len() > MAX_PAYLOAD_BYTES {
            errors.add(
                &field("payload"),
                "too_large",
                format!("must be at most {MAX_PAYLOAD_BYTES} bytes as JSON"),
            );
        }
        let priority = self.priority.unwrap_or(0);
        if !PRIORITY_RANGE.contains(&priority) {
            errors.add(
                &field("priority"),
                "out_of_range",
                range_message(&PRIORITY_RANGE),
            );
        }
        let mut retry = RetryPolicy::default();
        if let Some(max) = self.max_attempts {
            if MAX_ATTEMPTS_RANGE.contains(&max) {
                retry.max_attempts = max;
            } else {
                errors.add(
                    &field("max_attempts"),
                    "out_of_range",
                    range_message(&MAX_ATTEMPTS_RANGE),
                );
            }
        }
        if let Some(backoff) = self.backoff {
            let mut seconds = |name: &str, value: Option<u32>, default: Duration| {
                value
                    .and_then(|v| errors.check_range(&field(name), v, &BACKOFF_SECONDS_RANGE))
                    .map_or(default, |v| Duration::from_secs(v.into()))
            };
            retry.backoff_base = seconds(
                "backoff.base_seconds",
                backoff.base_seconds,
                retry.backoff_base,
            );
            retry.backoff_max = seconds(
                "backoff.max_seconds",
                backoff.max_seconds,
                retry.backoff_max,
            );
        }
        if let Some(key) = &self.unique_key {
            errors.check(
                &field("unique_key"),
                "invalid",
                plain_text(key, 1, UNIQUE_KEY_MAX_CHARS),
            );
        }
        let lease = self
            .lease_seconds
            .and_then(|s| errors.check_range(&field("lease_seconds"), s, &LEASE_SECONDS_RANGE))
            .map(|s| Duration::from_secs(s.into()));
        Some(NewJob {
            queue: queue?,
            kind: kind?,
            payload,
            run_at: self.run_at,
            priority,
            retry,
            unique_key: self.unique_key,
            lease,
            trace_parent: None,
            step: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_bad_field() {
        let spec = JobSpec {
            queue: Some("pier.webhooks".into()),
            kind: "bad kind".into(),
            priority: Some(2_000_000),
            max_attempts: Some(0),
            unique_key: Some("nul\0byte".into()),
            lease_seconds: Some(0),
            backoff: Some(BackoffSpec {
                base_seconds: Some(0),
                max_seconds: Some(5),
            }),
            payload: Some(serde_json::json!("x".repeat(MAX_PAYLOAD_BYTES))),
            ..JobSpec::default()
        };
        let errors = spec.build().expect_err("invalid");
        let fields: Vec<String> = errors.into_vec().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "queue",
                "kind",
                "payload",
                "priority",
                "max_attempts",
                "backoff.base_seconds",
                "unique_key",
                "lease_seconds"
            ]
        );
    }

    #[test]
    fn defaults_are_valid() {
        let job = JobSpec::new("send_email").build().expect("valid");
        assert_eq!(job.queue.as_str(), "default");
        assert_eq!(job.payload, "{}");
        assert_eq!(job.lease, None, "the store's default");
    }
}
