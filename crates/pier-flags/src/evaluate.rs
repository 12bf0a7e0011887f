//! Resolving a flag for a context, by flagd's rules (`core/pkg/evaluator/json.go`, v0.16.1):
//! a disabled flag is `DISABLED`; a flag without targeting (or with `{}`) is `STATIC`; targeting
//! that yields null is `DEFAULT`; a variant's name is `TARGETING_MATCH`; any other name is an
//! `ERROR` (`GENERAL`), a rule that cannot be applied an `ERROR` (`PARSE_ERROR`) and one that
//! runs out of operations an `ERROR` (`GENERAL`). Without
//! a default variant, "default" means the caller's own default: no value, reason `DEFAULT`.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::definition::{Flag, VariantKind};
use crate::logic::EvalError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    Static,
    TargetingMatch,
    Default,
    Disabled,
    Error,
}

/// OpenFeature's error codes (OFREP answers with them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    FlagNotFound,
    ParseError,
    TypeMismatch,
    TargetingKeyMissing,
    InvalidContext,
    General,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FlagNotFound => "FLAG_NOT_FOUND",
            Self::ParseError => "PARSE_ERROR",
            Self::TypeMismatch => "TYPE_MISMATCH",
            Self::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            Self::InvalidContext => "INVALID_CONTEXT",
            Self::General => "GENERAL",
        }
    }
}

/// The outcome of one evaluation. `value` and `variant` are `None` when the caller's default
/// applies (disabled, no default variant, or an error).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub value: Option<Value>,
    pub variant: Option<String>,
    pub reason: Reason,
    pub error: Option<ErrorCode>,
    pub metadata: Map<String, Value>,
}

impl Resolution {
    fn error(code: ErrorCode, metadata: Map<String, Value>) -> Self {
        Self {
            value: None,
            variant: None,
            reason: Reason::Error,
            error: Some(code),
            metadata,
        }
    }

    /// The answer for a key no flag has.
    pub fn not_found() -> Self {
        Self::error(ErrorCode::FlagNotFound, Map::new())
    }

    /// This resolution as a caller who asked for `kind` sees it: a value of another type is
    /// `TYPE_MISMATCH`.
    pub fn expecting(self, kind: VariantKind) -> Self {
        match &self.value {
            Some(value) if VariantKind::of(value) != Some(kind) => {
                Self::error(ErrorCode::TypeMismatch, self.metadata)
            }
            _ => self,
        }
    }
}

/// An evaluation context: the caller's attributes plus flagd's `$flagd.flagKey` and
/// `$flagd.timestamp` (seconds since the epoch), which replace any `$flagd` the caller sent.
#[derive(Debug, Clone)]
pub struct Context {
    data: Value,
}

impl Context {
    pub fn new(mut attributes: Map<String, Value>, now_unix_seconds: i64) -> Self {
        let flagd = Map::from_iter([
            ("flagKey".to_owned(), Value::String(String::new())),
            ("timestamp".to_owned(), Value::from(now_unix_seconds)),
        ]);
        attributes.insert("$flagd".to_owned(), Value::Object(flagd));
        Self {
            data: Value::Object(attributes),
        }
    }

    /// The data a rule of flag `key` sees.
    fn for_flag(&mut self, key: &str) -> &Value {
        if let Some(Value::String(flag_key)) = self.data.pointer_mut("/$flagd/flagKey") {
            key.clone_into(flag_key);
        }
        &self.data
    }
}

impl Flag {
    pub fn evaluate(&self, context: &mut Context) -> Resolution {
        let metadata = self.metadata.clone();
        if !self.enabled {
            return Resolution {
                value: None,
                variant: None,
                reason: Reason::Disabled,
                error: None,
                metadata,
            };
        }
        let (variant, reason) = match &self.targeting {
            None => (self.default_variant.clone(), Reason::Static),
            Some(rule) => match rule.apply(context.for_flag(self.key.as_str())) {
                Err(EvalError::Invalid(_)) => {
                    return Resolution::error(ErrorCode::ParseError, metadata);
                }
                Err(EvalError::TooManyOperations) => {
                    return Resolution::error(ErrorCode::General, metadata);
                }
                Ok(Value::Null) => (self.default_variant.clone(), Reason::Default),
                Ok(result) => {
                    let name = variant_name(&result);
                    if !self.variants.contains_key(&name) {
                        return Resolution::error(ErrorCode::General, metadata);
                    }
                    (Some(name), Reason::TargetingMatch)
                }
            },
        };
        let Some(variant) = variant else {
            // No default variant: the caller's default, reported as DEFAULT.
            return Resolution {
                value: None,
                variant: None,
                reason: Reason::Default,
                error: None,
                metadata,
            };
        };
        Resolution {
            value: self.variants.get(&variant).cloned(),
            variant: Some(variant),
            reason,
            error: None,
            metadata,
        }
    }
}

/// flagd reads the rule's result as its JSON text with every `"` removed: `"on"` is `on`, `true`
/// is `true`, `1.0` is `1`.
fn variant_name(result: &Value) -> String {
    let text = match result {
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), crate::logic::value::format_number),
        other => other.to_string(),
    };
    text.replace('"', "")
}
