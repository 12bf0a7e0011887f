//! Policies: what to limit (algorithm, limit, period, burst) and what to do when the shared store
//! cannot answer. A [`PolicySpec`] is the validated description, written as JSON in the API and
//! as one line of text in the configuration (`gcra 100/60s burst=20 local`); a [`Policy`] is a
//! spec bound to a name and a namespace, ready for the [`Limiter`](crate::Limiter).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::algorithm::Quota;

/// How requests are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// A token bucket: `burst` at once, then `limit` per period, smoothly.
    Gcra,
    /// A weighted estimate over the current and previous windows.
    SlidingWindow,
    /// At most `limit` per window, windows aligned to the Unix epoch.
    FixedWindow,
}

/// What a decision is when the shared (Redis) store cannot be reached in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Allow the request.
    FailOpen,
    /// Refuse the request.
    FailClosed,
    /// Decide with this node's own store (per-node limits until the shared store is back).
    Local,
}

impl Algorithm {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gcra => "gcra",
            Self::SlidingWindow => "sliding_window",
            Self::FixedWindow => "fixed_window",
        }
    }

    /// The letter in a state key: state is kept apart per algorithm and period, so changing
    /// either starts a policy's counts afresh while changing the limit keeps them.
    pub(crate) const fn code(self) -> &'static str {
        match self {
            Self::Gcra => "g",
            Self::SlidingWindow => "s",
            Self::FixedWindow => "f",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [Self::Gcra, Self::SlidingWindow, Self::FixedWindow]
            .into_iter()
            .find(|a| a.as_str() == text)
    }
}

impl FailureMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
            Self::Local => "local",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        [Self::FailOpen, Self::FailClosed, Self::Local]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

/// The limits a spec may have. Every count times the period in milliseconds stays within 2^52,
/// so the algorithms' integer arithmetic is exact in Redis's Lua (doubles) too.
pub mod bounds {
    use std::ops::RangeInclusive;

    pub const LIMIT: RangeInclusive<u64> = 1..=1_000_000_000;
    pub const PERIOD_SECONDS: RangeInclusive<u64> = 1..=366 * 24 * 3600;
    pub const BURST: RangeInclusive<u64> = 1..=1_000_000_000;
    /// The largest `max(limit, burst) × period in ms`.
    pub const SCALED: u64 = 1 << 52;
    /// Policy names: a letter or digit, then letters, digits, `.`, `_` or `-`.
    pub const NAME_CHARS: RangeInclusive<usize> = 1..=64;
}

/// A validated policy description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySpec {
    algorithm: Algorithm,
    limit: u64,
    period_seconds: u64,
    burst: u64,
    failure_mode: FailureMode,
}

/// Why a spec is invalid: the field and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct SpecError {
    pub field: &'static str,
    pub message: String,
}

fn spec_error(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError {
        field,
        message: message.into(),
    }
}

impl PolicySpec {
    /// Validates a spec; `burst` defaults to `limit` and applies to GCRA only.
    pub fn new(
        algorithm: Algorithm,
        limit: u64,
        period_seconds: u64,
        burst: Option<u64>,
        failure_mode: FailureMode,
    ) -> Result<Self, SpecError> {
        let in_range = |field, range: std::ops::RangeInclusive<u64>, n: u64| {
            if range.contains(&n) {
                Ok(())
            } else {
                Err(spec_error(
                    field,
                    pier_core::validation::range_message(&range),
                ))
            }
        };
        in_range("limit", bounds::LIMIT, limit)?;
        in_range("period_seconds", bounds::PERIOD_SECONDS, period_seconds)?;
        let burst = match (algorithm, burst) {
            (_, None) => limit,
            (Algorithm::Gcra, Some(burst)) => {
                in_range("burst", bounds::BURST, burst)?;
                burst
            }
            (_, Some(burst)) if burst == limit => burst,
            (_, Some(_)) => {
                return Err(spec_error(
                    "burst",
                    "applies to gcra only (a window's burst is its limit)",
                ));
            }
        };
        if limit.max(burst).saturating_mul(period_seconds * 1000) > bounds::SCALED {
            return Err(spec_error(
                "limit",
                format!(
                    "times period_seconds is too large: at most {} units per second of period",
                    bounds::SCALED / 1000
                ),
            ));
        }
        Ok(Self {
            algorithm,
            limit,
            period_seconds,
            burst,
            failure_mode,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn period(&self) -> Duration {
        Duration::from_secs(self.period_seconds)
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    pub fn failure_mode(&self) -> FailureMode {
        self.failure_mode
    }

    /// The largest cost one request may have: more could never be allowed.
    pub fn capacity(&self) -> u64 {
        self.burst
    }

    pub(crate) fn quota(&self) -> Quota {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Quota {
            algorithm: self.algorithm,
            limit: int(self.limit),
            period_ms: int(self.period_seconds * 1000),
            capacity: int(self.burst),
        }
    }
}

/// `ALGORITHM LIMIT/PERIOD [burst=N] [FAILURE_MODE]`, the period in seconds with an optional
/// unit: `gcra 100/60s burst=20 local`, `fixed_window 1000/1h fail_closed`.
impl FromStr for PolicySpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let syntax = || {
            spec_error(
                "policy",
                format!(
                    "`{text}` is not `ALGORITHM LIMIT/PERIOD [burst=N] [FAILURE_MODE]` \
                     (e.g. `gcra 100/60s burst=20 local`)"
                ),
            )
        };
        let mut words = text.split_whitespace();
        let algorithm = words.next().and_then(Algorithm::parse).ok_or_else(syntax)?;
        let (limit, period) = words
            .next()
            .and_then(|w| w.split_once('/'))
            .ok_or_else(syntax)?;
        let limit = limit.parse().map_err(|_| syntax())?;
        let period_seconds = pier_core::clock::parse_seconds(period).ok_or_else(syntax)?;
        let (mut burst, mut mode) = (None, FailureMode::Local);
        for word in words {
            if let Some(n) = word.strip_prefix("burst=") {
                burst = Some(n.parse().map_err(|_| syntax())?);
            } else {
                mode = FailureMode::parse(word).ok_or_else(syntax)?;
            }
        }
        Self::new(algorithm, limit, period_seconds, burst, mode)
    }
}

impl fmt::Display for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}s",
            self.algorithm.as_str(),
            self.limit,
            self.period_seconds
        )?;
        if self.algorithm == Algorithm::Gcra && self.burst != self.limit {
            write!(f, " burst={}", self.burst)?;
        }
        write!(f, " {}", self.failure_mode.as_str())
    }
}

/// Checks a policy name: 1 to 64 of letters, digits, `.`, `_` and `-`, starting with a letter or
/// digit. Names appear in `RateLimit` headers, so they need no escaping there.
pub fn check_name(name: &str) -> Result<(), String> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !bounds::NAME_CHARS.contains(&name.len()) {
        Err(format!(
            "must be {} to {} characters",
            bounds::NAME_CHARS.start(),
            bounds::NAME_CHARS.end()
        ))
    } else if first_ok && rest_ok {
        Ok(())
    } else {
        Err("must be letters, digits, `.`, `_` or `-`, starting with a letter or digit".to_owned())
    }
}

/// What [`check_name`] accepts, as a pattern.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]*$";

/// A policy's name in the OpenAPI document: [`check_name`]'s rule.
#[derive(Debug)]
pub struct PolicyName;

impl utoipa::PartialSchema for PolicyName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        pier_core::schema::string(*bounds::NAME_CHARS.start(), *bounds::NAME_CHARS.end())
            .pattern(Some(NAME_PATTERN))
            .into()
    }
}

impl utoipa::ToSchema for PolicyName {}

/// A named spec in a namespace (a workspace, or `pier` for the server's own), ready to decide
/// with. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Policy(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    name: String,
    spec: PolicySpec,
    quota: Quota,
    /// Identifies the policy's state in a store: namespace, name, algorithm and period.
    scope: String,
    namespace: String,
    /// `pier_ratelimit_decisions_total` for this policy, allowed and denied. The `policy` label
    /// is the name of the server's own policies and `workspace` for workspaces' (whose names are
    /// unbounded). Registered once here, so a decision only increments.
    allowed: metrics::Counter,
    denied: metrics::Counter,
}

impl Policy {
    /// A policy of the server's own (the API protection and the configuration file's): its name
    /// is its metric label.
    pub fn server(name: &'static str, spec: PolicySpec) -> Self {
        Self::build("pier", name.to_owned(), spec, name)
    }

    /// A policy a workspace defined; its namespace keeps its counts apart from every other
    /// workspace's.
    pub fn workspace(workspace: &pier_core::WorkspaceId, name: &str, spec: PolicySpec) -> Self {
        Self::build(workspace.as_str(), name.to_owned(), spec, "workspace")
    }

    fn build(namespace: &str, name: String, spec: PolicySpec, metric_label: &'static str) -> Self {
        let quota = spec.quota();
        let counter = |outcome: &'static str| {
            metrics::counter!(
                "pier_ratelimit_decisions_total",
                "policy" => metric_label,
                "outcome" => outcome
            )
        };
        let scope = format!(
            "{namespace}:{name}:{}{}",
            spec.algorithm.code(),
            quota.period_ms
        );
        Self(Arc::new(Inner {
            name,
            spec,
            quota,
            scope,
            namespace: namespace.to_owned(),
            allowed: counter("allowed"),
            denied: counter("denied"),
        }))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn spec(&self) -> &PolicySpec {
        &self.0.spec
    }

    pub(crate) fn quota(&self) -> &Quota {
        &self.0.quota
    }

    pub(crate) fn scope(&self) -> &str {
        &self.0.scope
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.0.namespace
    }

    /// Counts a decision in the policy's metrics.
    pub(crate) fn count(&self, allowed: bool) {
        if allowed {
            self.0.allowed.increment(1);
        } else {
            self.0.denied.increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for text in [
            "gcra 100/60s burst=20 local",
            "fixed_window 1000/3600s fail_closed",
            "sliding_window 5/1s fail_open",
        ] {
            let spec: PolicySpec = text.parse().expect(text);
            assert_eq!(spec.to_string(), text);
        }
        let spec: PolicySpec = "gcra 10/1m".parse().expect("minutes");
        assert_eq!(spec.period(), Duration::from_secs(60));
        assert_eq!(spec.burst(), 10);
        assert_eq!(spec.failure_mode(), FailureMode::Local);
    }

    #[test]
    fn bad_specs_name_their_field() {
        let err = |text: &str| text.parse::<PolicySpec>().expect_err(text);
        assert_eq!(err("gcra 0/1s").field, "limit");
        assert_eq!(err("gcra 1/0s").field, "period_seconds");
        assert_eq!(err("fixed_window 10/1s burst=5").field, "burst");
        assert_eq!(err("gcra 1000000000/366d").field, "limit");
        assert_eq!(err("leaky 1/1s").field, "policy");
        assert_eq!(err("gcra 1/1s sometimes").field, "policy");
        assert_eq!(err("gcra 1/1fortnight").field, "policy");
    }

    #[test]
    fn names_are_header_safe() {
        assert!(check_name("per-key.v2_a").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-lead").is_err());
        assert!(check_name("quote\"d").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }
}
