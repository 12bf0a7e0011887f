//! A whole flagd document, `{"flags": {key: flag}, "$evaluators": {name: rule}}`, as imported
//! and exported for a workspace. Shared `$evaluators` are inlined into each flag's targeting when
//! the document is read (flagd does the same when it loads one), so an exported document carries
//! each rule where it is used.

use pier_core::ValidationErrors;
use serde_json::{Map, Value};

use crate::definition::{Flag, FlagKey, join};

/// The largest document accepted unless configured otherwise (`[flags] max_document_bytes`).
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

const FIELDS: &[&str] = &["$schema", "flags", "$evaluators"];

/// The flagd schema address an exported document names.
pub const SCHEMA: &str = "https://flagd.dev/schema/v0/flags.json";

/// The flags of a valid document, in key order.
#[derive(Debug, Clone)]
pub struct Document {
    pub flags: Vec<Flag>,
}

impl Document {
    /// Refuses a document longer than `max_bytes` before reading it.
    pub fn check_size(len: usize, max_bytes: usize) -> Result<(), ValidationErrors> {
        if len > max_bytes {
            return Err(ValidationErrors::single(
                "document",
                "too_large",
                format!("a flag document is at most {max_bytes} bytes; this one is {len}"),
            ));
        }
        Ok(())
    }

    /// Checks every flag of the document, collecting the faults of all of them.
    pub fn parse(document: &Value) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let Some(object) = document.as_object() else {
            return Err(ValidationErrors::single(
                "document",
                "invalid",
                "a flag document is a JSON object",
            ));
        };
        for name in object
            .keys()
            .filter(|name| !FIELDS.contains(&name.as_str()))
        {
            errors.add(
                name,
                "unknown_field",
                format!("a flag document has only the fields {}", FIELDS.join(", ")),
            );
        }
        if object
            .get("$schema")
            .is_some_and(|schema| !schema.is_string())
        {
            errors.add(
                "$schema",
                "invalid",
                "`$schema` is the address of flagd's schema",
            );
        }
        let empty = Map::new();
        let evaluators = match object.get("$evaluators") {
            None => &empty,
            Some(Value::Object(evaluators)) => evaluators,
            Some(_) => {
                errors.add(
                    "$evaluators",
                    "invalid",
                    "`$evaluators` is an object of name: rule",
                );
                &empty
            }
        };
        let mut flags = Vec::new();
        match object.get("flags") {
            Some(Value::Object(entries)) => {
                for (key, definition) in entries {
                    let path = join("flags", key);
                    let key = match FlagKey::parse(key) {
                        Ok(key) => key,
                        Err(message) => {
                            errors.add(&path, "invalid_key", message);
                            continue;
                        }
                    };
                    match Flag::parse(key, definition, &path, evaluators) {
                        Ok(flag) => flags.push(flag),
                        Err(faults) => faults
                            .into_vec()
                            .into_iter()
                            .for_each(|fault| errors.add(&fault.field, &fault.code, fault.message)),
                    }
                }
            }
            None => errors.add("flags", "required", "`flags` is required"),
            Some(_) => errors.add("flags", "invalid", "`flags` is an object of key: flag"),
        }
        errors.into_result()?;
        flags.sort_by(|a, b| a.key().cmp(b.key()));
        Ok(Self { flags })
    }

    /// The document for `flags`.
    pub fn export<'a>(flags: impl IntoIterator<Item = &'a Flag>) -> Value {
        let flags = flags
            .into_iter()
            .map(|flag| (flag.key().to_string(), flag.definition()))
            .collect();
        Value::Object(Map::from_iter([
            ("$schema".to_owned(), Value::String(SCHEMA.to_owned())),
            ("flags".to_owned(), Value::Object(flags)),
        ]))
    }
}
