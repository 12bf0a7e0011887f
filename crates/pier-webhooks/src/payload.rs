//! Event payloads and the JSON Schemas event types give them. Schemas are checked when an
//! event type is created and applied at every publish; remote `$ref`s are never fetched (the
//! validator is built without network access), so a schema cannot make Pier send requests.

use serde_json::Value;

use crate::WebhookError;

pub(crate) fn compile(schema: &Value) -> Result<jsonschema::Validator, WebhookError> {
    jsonschema::validator_for(schema).map_err(|e| WebhookError::InvalidSchema(e.to_string()))
}

/// Checks `payload` against the schema of `event_type`, naming the first place it fails.
pub(crate) fn check(
    event_type: &str,
    validator: &jsonschema::Validator,
    payload: &Value,
) -> Result<(), WebhookError> {
    match validator.iter_errors(payload).next() {
        None => Ok(()),
        Some(error) => Err(WebhookError::PayloadMismatch {
            event_type: event_type.to_owned(),
            path: error.instance_path().to_string(),
            message: error.to_string(),
        }),
    }
}

/// The body every endpoint receives for an event, as Standard Webhooks lays it out: the type,
/// the time of the event and its payload as `data`. The same bytes on every attempt, so a
/// receiver that stored one can compare.
pub(crate) fn body(event_type: &str, created_at: pier_core::Timestamp, payload: &str) -> String {
    format!(
        "{{\"type\":{},\"timestamp\":{},\"data\":{payload}}}",
        Value::from(event_type),
        Value::from(created_at.to_rfc3339()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_are_held_to_their_schema() {
        let schema = json!({"type": "object", "required": ["id"],
                            "properties": {"id": {"type": "string"}}});
        let validator = compile(&schema).expect("a schema");
        check("a.b", &validator, &json!({"id": "x"})).expect("valid");
        let err = check("a.b", &validator, &json!({"id": 5})).expect_err("invalid");
        assert!(
            matches!(&err, WebhookError::PayloadMismatch { path, .. } if path == "/id"),
            "{err}"
        );
    }

    #[test]
    fn schemas_that_are_not_schemas_or_reach_out_are_refused() {
        for schema in [
            json!({"type": "no-such-type"}),
            json!({"$ref": "http://127.0.0.1:1/schema.json"}),
        ] {
            assert!(
                matches!(compile(&schema), Err(WebhookError::InvalidSchema(_))),
                "{schema}"
            );
        }
    }

    #[test]
    fn the_body_wraps_the_payload_as_data() {
        let at = pier_core::Timestamp::parse_rfc3339("2026-11-30T12:00:00Z").expect("time");
        let body = body("invoice.paid", at, r#"{"n":1}"#);
        let parsed: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            parsed,
            json!({"type": "invoice.paid", "timestamp": at.to_rfc3339(), "data": {"n": 1}})
        );
    }
}
