//! A flag as flagd defines it: `state`, `variants`, `defaultVariant`, optional `targeting` and
//! `metadata`. [`Flag::parse`] checks everything flagd's schema and loader check (and what flagd
//! would only find at evaluation, such as an unknown operator) and names the path of each fault.

use pier_core::ValidationErrors;
use serde_json::{Map, Value};

use crate::logic::Rule;

/// A flag key: 1–128 of `A–Z a–z 0–9 . _ -`, starting with a letter or digit, so it is safe in
/// a URL path unescaped; `document` is taken by the API's `/v1/flags/document`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlagKey(String);

impl FlagKey {
    pub const MAX_LEN: usize = 128;
    pub const PATTERN: &'static str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";

    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if text == "document" {
            return Err(
                "`document` is reserved (it names the flagd document of the workspace)".to_owned(),
            );
        }
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "a flag key is 1 to {} letters, digits, `.`, `_` or `-`, starting with a letter or digit",
                Self::MAX_LEN
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl utoipa::PartialSchema for FlagKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(Self::PATTERN))
            .min_length(Some(1))
            .max_length(Some(Self::MAX_LEN))
            .description(Some("A flag's key (`document` is reserved)"))
            .into()
    }
}

impl utoipa::ToSchema for FlagKey {}

impl std::fmt::Display for FlagKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The JSON type a flag's variants share; a flag resolves to values of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariantKind {
    Boolean,
    String,
    Number,
    Object,
}

impl VariantKind {
    pub fn of(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(_) => Some(Self::Boolean),
            Value::String(_) => Some(Self::String),
            Value::Number(_) => Some(Self::Number),
            Value::Object(_) => Some(Self::Object),
            Value::Null | Value::Array(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Boolean => "boolean",
            Self::String => "string",
            Self::Number => "number",
            Self::Object => "object",
        }
    }
}

/// A valid flag, its targeting compiled.
#[derive(Debug, Clone)]
pub struct Flag {
    pub(crate) key: FlagKey,
    pub(crate) enabled: bool,
    pub(crate) variants: Map<String, Value>,
    pub(crate) default_variant: Option<String>,
    pub(crate) targeting: Option<Rule>,
    pub(crate) metadata: Map<String, Value>,
}

const FIELDS: &[&str] = &[
    "state",
    "variants",
    "defaultVariant",
    "targeting",
    "metadata",
];

/// `prefix.field`, or `field` at the top.
pub(crate) fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

impl Flag {
    /// Checks a flagd flag definition found at `path` (empty for a lone flag), inlining the
    /// `$ref`s it makes to `evaluators`.
    pub fn parse(
        key: FlagKey,
        definition: &Value,
        path: &str,
        evaluators: &Map<String, Value>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let Some(object) = definition.as_object() else {
            let field = if path.is_empty() { "definition" } else { path };
            return Err(ValidationErrors::single(
                field,
                "invalid",
                "a flag is a JSON object",
            ));
        };
        for name in object
            .keys()
            .filter(|name| !FIELDS.contains(&name.as_str()))
        {
            errors.add(
                &join(path, name),
                "unknown_field",
                format!("a flag has only the fields {}", FIELDS.join(", ")),
            );
        }
        let enabled = match object.get("state") {
            Some(Value::String(state)) if state == "ENABLED" => true,
            Some(Value::String(state)) if state == "DISABLED" => false,
            None => {
                errors.add(&join(path, "state"), "required", "`state` is required");
                false
            }
            Some(_) => {
                errors.add(
                    &join(path, "state"),
                    "invalid",
                    "`state` is ENABLED or DISABLED",
                );
                false
            }
        };
        let variants = variants(object.get("variants"), &join(path, "variants"), &mut errors);
        let default_variant = match object.get("defaultVariant") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => {
                if variants.as_ref().is_some_and(|v| !v.contains_key(name)) {
                    errors.add(
                        &join(path, "defaultVariant"),
                        "unknown_variant",
                        format!("`{name}` is not one of the flag's variants"),
                    );
                }
                Some(name.clone())
            }
            Some(_) => {
                errors.add(
                    &join(path, "defaultVariant"),
                    "invalid",
                    "`defaultVariant` is a variant's name or null",
                );
                None
            }
        };
        let targeting = match object.get("targeting") {
            None => None,
            // flagd treats an empty rule as none: the flag resolves statically.
            Some(Value::Object(rule)) if rule.is_empty() => None,
            Some(rule @ Value::Object(_)) => {
                match Rule::compile(rule, &join(path, "targeting"), evaluators) {
                    Ok(rule) => Some(rule),
                    Err(faults) => {
                        for fault in faults.into_vec() {
                            errors.add(&fault.field, &fault.code, fault.message);
                        }
                        None
                    }
                }
            }
            Some(_) => {
                errors.add(
                    &join(path, "targeting"),
                    "invalid",
                    "`targeting` is a JSON Logic object",
                );
                None
            }
        };
        let metadata = metadata(object.get("metadata"), &join(path, "metadata"), &mut errors);
        errors.into_result()?;
        Ok(Self {
            key,
            enabled,
            variants: variants.unwrap_or_default(),
            default_variant,
            targeting,
            metadata,
        })
    }

    pub fn key(&self) -> &FlagKey {
        &self.key
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the flag's answer may change with time alone (its targeting reads
    /// `$flagd.timestamp`), not only with its definition and the context.
    pub fn reads_clock(&self) -> bool {
        self.targeting.as_ref().is_some_and(Rule::reads_clock)
    }

    /// The type of the flag's values (its variants all share it).
    pub fn kind(&self) -> Option<VariantKind> {
        self.variants.values().next().and_then(VariantKind::of)
    }

    /// The flag as flagd JSON, `$ref`s inlined: what is stored and exported.
    pub fn definition(&self) -> Value {
        let mut out = Map::new();
        let state = if self.enabled { "ENABLED" } else { "DISABLED" };
        out.insert("state".into(), state.into());
        out.insert("variants".into(), Value::Object(self.variants.clone()));
        if let Some(default) = &self.default_variant {
            out.insert("defaultVariant".into(), default.clone().into());
        }
        if let Some(rule) = &self.targeting {
            out.insert("targeting".into(), rule.inlined());
        }
        if !self.metadata.is_empty() {
            out.insert("metadata".into(), Value::Object(self.metadata.clone()));
        }
        Value::Object(out)
    }
}

/// A non-empty object of values of one type: booleans, strings, numbers or objects.
fn variants(
    value: Option<&Value>,
    path: &str,
    errors: &mut ValidationErrors,
) -> Option<Map<String, Value>> {
    let variants = match value {
        Some(Value::Object(variants)) if !variants.is_empty() => variants,
        None => {
            errors.add(path, "required", "`variants` is required");
            return None;
        }
        Some(_) => {
            errors.add(
                path,
                "invalid",
                "`variants` is a non-empty object of name: value",
            );
            return None;
        }
    };
    let mut kind = None;
    for (name, value) in variants {
        let here = join(path, name);
        match (VariantKind::of(value), kind) {
            (None, _) => errors.add(
                &here,
                "invalid",
                "a variant's value is a boolean, string, number or object",
            ),
            (Some(this), Some(first)) if this != first => errors.add(
                &here,
                "type_mismatch",
                format!(
                    "every variant of a flag has the same type; this is {}, the first is {}",
                    this.as_str(),
                    first.as_str()
                ),
            ),
            (Some(this), _) => kind = Some(this),
        }
    }
    Some(variants.clone())
}

/// Flag metadata: an object of strings, numbers and booleans.
fn metadata(
    value: Option<&Value>,
    path: &str,
    errors: &mut ValidationErrors,
) -> Map<String, Value> {
    match value {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(entries)) => {
            for (name, value) in entries {
                if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                    errors.add(
                        &join(path, name),
                        "invalid",
                        "metadata values are strings, numbers or booleans",
                    );
                }
            }
            entries.clone()
        }
        Some(_) => {
            errors.add(path, "invalid", "`metadata` is an object");
            Map::new()
        }
    }
}
