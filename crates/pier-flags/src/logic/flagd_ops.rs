//! flagd's own operators, as the daemon's `core/pkg/evaluator` (flagd v0.16.1) computes them.
//! Each answers null where flagd logs an error and returns nil, which sends evaluation to the
//! default variant.

use serde_json::Value;

use super::value::format_number;
use crate::murmur3;
use crate::semver::Version;

/// `fractional`: buckets a string into weighted variants. The bucketing value is the first
/// argument when it evaluates to a string; otherwise (omitted, or null) it is the flag key
/// followed by the context's `targetingKey`. The 32-bit murmur3 hash of that string maps to
/// `[0, total weight)` as `(hash × total) >> 32`.
pub fn fractional(args: &[Value], data: &Value) -> Value {
    let (bucket_by, distributions) = match args {
        [] => return Value::Null,
        [Value::String(by), rest @ ..] => (by.clone(), rest),
        [first, rest @ ..] => {
            let distributions = if first.is_null() { rest } else { args };
            let flag_key = data
                .pointer("/$flagd/flagKey")
                .and_then(Value::as_str)
                .unwrap_or("");
            match data.get("targetingKey") {
                Some(Value::String(key)) if !key.is_empty() => {
                    (format!("{flag_key}{key}"), distributions)
                }
                _ => return Value::Null,
            }
        }
    };
    let Some(buckets) = buckets(distributions) else {
        return Value::Null;
    };
    let total: u64 = buckets.iter().map(|(_, weight)| weight).sum();
    if total == 0 {
        return Value::Null;
    }
    let hash = u64::from(murmur3::hash32(bucket_by.as_bytes()));
    let point = (hash * total) >> 32;
    let mut end = 0;
    for (variant, weight) in buckets {
        end += weight;
        if point < end {
            return variant.clone();
        }
    }
    Value::Null
}

/// `[variant, weight]` pairs: the variant a string, boolean, number or null; the weight a whole
/// number (1 when left out, negative read as 0), the sum at most `i32::MAX`.
fn buckets(distributions: &[Value]) -> Option<Vec<(&Value, u64)>> {
    let mut buckets = Vec::with_capacity(distributions.len());
    let mut total: u64 = 0;
    for distribution in distributions {
        let pair = distribution.as_array().filter(|pair| !pair.is_empty())?;
        let variant = &pair[0];
        if variant.is_array() || variant.is_object() {
            return None;
        }
        let weight = match pair.get(1) {
            None | Some(Value::Null) => 1,
            Some(Value::Number(n)) => {
                let n = n.as_f64()?;
                if n.fract() != 0.0 || n > f64::from(i32::MAX) {
                    return None;
                }
                n.max(0.0) as u64
            }
            Some(_) => return None,
        };
        total += weight;
        buckets.push((variant, weight));
    }
    (total <= i32::MAX as u64).then_some(buckets)
}

/// `sem_ver`: `[version, operator, version]` with `=`, `!=`, `<`, `<=`, `>`, `>=`, `^` (same
/// major) and `~` (same major and minor). Numbers are read as their text (`1.2` is `v1.2`).
pub fn sem_ver(args: &[Value]) -> Value {
    let [actual, Value::String(operator), target] = args else {
        return Value::Null;
    };
    let (Some(actual), Some(target)) = (version(actual), version(target)) else {
        return Value::Null;
    };
    let holds = match operator.as_str() {
        "=" => actual == target,
        "!=" => actual != target,
        "<" => actual < target,
        "<=" => actual <= target,
        ">" => actual > target,
        ">=" => actual >= target,
        "^" => actual.same_major(&target),
        "~" => actual.same_minor(&target),
        _ => return Value::Null,
    };
    Value::Bool(holds)
}

/// Go's `fmt.Sprintf("%v")` of the value, then flagd's reading of it as a version.
fn version(value: &Value) -> Option<Version> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(n) => {
            let n = n.as_f64()?;
            // Go writes these with an exponent (`1e+21`), which is no version.
            if n.abs() >= 1e21 || (n != 0.0 && n.abs() < 1e-4) {
                return None;
            }
            format_number(n)
        }
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    Version::parse_flagd(&text)
}

/// `starts_with` / `ends_with`: exactly two strings.
pub fn affix(args: &[Value], test: fn(&str, &str) -> bool) -> Value {
    match args {
        [Value::String(text), Value::String(affix)] => Value::Bool(test(text, affix)),
        _ => Value::Null,
    }
}
