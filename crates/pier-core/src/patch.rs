//! One member of a JSON Merge Patch (RFC 7396): left out, it changes nothing; `null` clears (or
//! resets) it; a value replaces it. Every `PATCH` body is a struct of these.
//!
//! `#[serde(default)]` on each member (a left-out member is [`Patch::Keep`]);
//! `#[serde(default, deserialize_with = "pier_core::patch::whole")]` on an integer member.

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// Left out: the current value stays.
    #[default]
    Keep,
    /// Sent as `null`.
    Clear,
    /// Sent with a value.
    Set(T),
}

/// A member that was sent, as `null` or a value.
impl<T> From<Option<T>> for Patch<T> {
    fn from(sent: Option<T>) -> Self {
        sent.map_or(Self::Clear, Self::Set)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(d).map(Self::from)
    }
}

/// An integer member, written `2` or `2.0` (see [`crate::whole`]), or `null`.
pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<Patch<T>, D::Error> {
    crate::whole::optional(d).map(Patch::from)
}

impl<T> Patch<T> {
    /// The value once patched: `current` when left out, none when cleared.
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Self::Keep => current,
            Self::Clear => None,
            Self::Set(value) => Some(value),
        }
    }

    /// The member as sent, `None` when left out (for stores that take `Option<Option<T>>`).
    pub fn sent(self) -> Option<Option<T>> {
        match self {
            Self::Keep => None,
            Self::Clear => Some(None),
            Self::Set(value) => Some(Some(value)),
        }
    }

    /// A create's field: a value given is set, one left out keeps the default.
    pub fn given(value: Option<T>) -> Self {
        value.map_or(Self::Keep, Self::Set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default)]
        text: Patch<String>,
        #[serde(default, deserialize_with = "whole")]
        count: Patch<u32>,
    }

    fn body(json: &str) -> Body {
        serde_json::from_str(json).expect("a body")
    }

    #[test]
    fn tells_left_out_from_null_from_a_value() {
        let left_out = body("{}");
        assert_eq!((left_out.text, left_out.count), (Patch::Keep, Patch::Keep));
        let cleared = body(r#"{"text": null, "count": null}"#);
        assert_eq!((cleared.text, cleared.count), (Patch::Clear, Patch::Clear));
        let set = body(r#"{"text": "a", "count": 2.0}"#);
        assert_eq!(
            (set.text, set.count),
            (Patch::Set("a".into()), Patch::Set(2))
        );
        assert!(serde_json::from_str::<Body>(r#"{"count": 2.5}"#).is_err());
    }

    #[test]
    fn applies_to_the_current_value() {
        assert_eq!(Patch::Keep.apply(Some(1)), Some(1));
        assert_eq!(Patch::Clear.apply(Some(1)), None);
        assert_eq!(Patch::Set(2).apply(Some(1)), Some(2));
    }
}
