//! Integer fields that read JSON the way JSON Schema does: `2.0` is the integer 2. JSON has one
//! number type and clients in some languages write every number with a fraction, so a field
//! documented as `integer` takes a whole number however it is spelled, and refuses `2.5`.
//!
//! `#[serde(deserialize_with = "pier_core::whole::required")]` on an integer field, or
//! `#[serde(default, deserialize_with = "pier_core::whole::optional")]` on an `Option` of one.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, Error, Unexpected, Visitor};

/// The largest magnitude a float carries exactly as a whole number (2^53).
const EXACT: f64 = 9_007_199_254_740_992.0;

struct Whole<T>(PhantomData<T>);

impl<T: TryFrom<i128>> Visitor<'_> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::any::type_name::<T>())
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
        T::try_from(i128::from(v)).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
        T::try_from(i128::from(v)).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
        if v.fract() != 0.0 || v.abs() > EXACT {
            return Err(E::invalid_type(Unexpected::Float(v), &self));
        }
        #[allow(clippy::cast_possible_truncation)] // whole and within 2^53, so exact
        T::try_from(v as i128).map_err(|_| E::invalid_value(Unexpected::Float(v), &self))
    }
}

/// An integer, written `2` or `2.0`.
pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(Whole(PhantomData))
}

/// An optional integer: absent (with `#[serde(default)]`), `null`, `2` or `2.0`.
pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Option<T>, D::Error> {
    struct Maybe<T>(PhantomData<T>);

    impl<'de, T: TryFrom<i128>> Visitor<'de> for Maybe<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} or null", std::any::type_name::<T>())
        }

        fn visit_none<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            required(d).map(Some)
        }
    }

    d.deserialize_option(Maybe(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        #[serde(deserialize_with = "super::required")]
        count: u32,
        #[serde(default, deserialize_with = "super::optional")]
        priority: Option<i32>,
    }

    fn parse(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_are_integers_however_spelled() {
        let expected = Body {
            count: 3,
            priority: Some(-2),
        };
        assert_eq!(parse(r#"{"count": 3, "priority": -2}"#), Ok(expected));
        assert_eq!(
            parse(r#"{"count": 3.0, "priority": -2.0}"#),
            Ok(Body {
                count: 3,
                priority: Some(-2)
            })
        );
        assert_eq!(
            parse(r#"{"count": 1e2}"#),
            Ok(Body {
                count: 100,
                priority: None
            })
        );
        assert_eq!(
            parse(r#"{"count": 0, "priority": null}"#),
            Ok(Body {
                count: 0,
                priority: None
            })
        );
    }

    #[test]
    fn fractions_out_of_range_and_other_types_are_refused() {
        for bad in [
            r#"{"count": 2.5}"#,
            r#"{"count": -1}"#,
            r#"{"count": 4294967296}"#,
            r#"{"count": 1e300}"#,
            r#"{"count": "3"}"#,
            r#"{"count": 1, "priority": 2147483648}"#,
            r#"{"count": 1, "priority": 0.5}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
        let message = parse(r#"{"count": 2.5}"#).expect_err("fraction");
        assert!(message.contains("u32"), "{message}");
    }
}
