//! How the JSON Logic engine flagd uses (`diegoholiveira/jsonlogic` v3) reads values: truthiness,
//! numbers, strings and the loose comparisons. Its quirks are flagd's behaviour, so they are kept:
//! an empty object is false, `cat` writes numbers without an exponent, `==` compares two strings
//! as strings and anything else as numbers.

use serde_json::{Number, Value};

pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_none_or(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// JavaScript's `Number(value)`: null is 0, booleans 0/1, blank strings 0, other text parsed or
/// NaN, arrays and objects NaN.
pub fn to_number(value: &Value) -> f64 {
    match value {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) if s.trim().is_empty() => 0.0,
        // Go's `ParseFloat` and Rust's read the same decimal forms (and `inf`, `NaN`).
        Value::String(s) => s.parse::<f64>().unwrap_or(f64::NAN),
        Value::Array(_) | Value::Object(_) => f64::NAN,
    }
}

/// The engine's `ToString`: strings as they are, numbers without an exponent, null as empty,
/// anything else (which the engine would not accept) as its JSON.
pub fn to_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Number(n) => format_number(n.as_f64().unwrap_or(0.0)),
        other => other.to_string(),
    }
}

/// Go's `strconv.FormatFloat(n, 'f', -1, 64)`: the shortest digits that read back, no exponent.
pub fn format_number(n: f64) -> String {
    format!("{n}")
}

/// A computed number as JSON: whole numbers stay integers, so a result reads `1`, not `1.0`.
pub fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        return Value::Number(Number::from(n as i64));
    }
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}

pub fn loose_equals(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::String(x), Value::String(y)) => x == y,
        _ => to_number(a) == to_number(b),
    }
}

/// `===`: the same JSON kind and loosely equal (so `1 === 1.0`).
pub fn strict_equals(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b) && loose_equals(a, b)
}

/// `a < b`: two strings compare as strings, anything else as numbers (NaN is never less).
pub fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x < y,
        _ => to_number(a) < to_number(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness_follows_the_engine() {
        for falsy in [
            json!(null),
            json!(false),
            json!(0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for true_ in [
            json!(true),
            json!(-1),
            json!("0"),
            json!([0]),
            json!({"a": 1}),
        ] {
            assert!(truthy(&true_), "{true_}");
        }
    }

    #[test]
    fn comparisons_coerce_like_javascript() {
        assert!(loose_equals(&json!(1), &json!("1")));
        assert!(loose_equals(&json!(true), &json!(1)));
        assert!(!loose_equals(&json!(null), &json!(0)));
        assert!(!loose_equals(&json!("abc"), &json!("ABC")));
        assert!(!strict_equals(&json!(1), &json!("1")));
        assert!(less(&json!("10"), &json!("9")));
        assert!(!less(&json!(10), &json!("9")));
        assert!(!less(&json!("x"), &json!(1)) && !less(&json!(1), &json!("x")));
        assert_eq!(to_number(&json!(" ")), 0.0);
        assert!(to_number(&json!("1e3")) == 1000.0 && to_number(&json!("1x")).is_nan());
    }

    #[test]
    fn numbers_print_without_exponent() {
        assert_eq!(to_text(&json!(1.5)), "1.5");
        assert_eq!(to_text(&json!(3)), "3");
        assert_eq!(to_text(&json!(1e21)), "1000000000000000000000");
        assert_eq!(number(2.0), json!(2));
    }
}
