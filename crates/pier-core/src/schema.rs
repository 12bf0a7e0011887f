//! JSON Schemas made from the same constants and rules that validate, so the OpenAPI document
//! states each rule as the server enforces it and cannot drift from it. The patterns are written
//! in the dialect JSON Schema uses (ECMA-262), which Python's and most generators' engines read
//! too: no Unicode property classes, no inline flags.

use std::ops::RangeInclusive;

use utoipa::Number;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

/// Control characters (Unicode category Cc, what `char::is_control` finds), for a class.
pub const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";
/// Whitespace `str::trim` removes that is not already a control character.
pub const SPACE: &str = r" \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// The parts of [`HTTP_URL`] and [`HTTP_URL_OR_IPV6`], as literals `concat!` can join.
macro_rules! http_url {
    ($($more_hosts:literal)?) => {
        concat!(
            r"^[hH][tT][tT][pP][sS]?://",
            r"(([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?",
            r"|((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
            $($more_hosts,)?
            r")",
            r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?",
            r"([/?#][A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]*)?$",
        )
    };
}

/// The canonical form of an absolute web URL, as the URL parser leaves it and the OpenAPI
/// document states it (a webhook endpoint): `http`/`https`, an ASCII host name (its last label
/// starting with a letter, so no parser takes it for an address) or an IPv4 address, an
/// optional port, then URI characters that normalisation leaves as they are. Parsers take more
/// than this (international host names, characters they percent-encode) and store it in this
/// form.
pub const HTTP_URL: &str = http_url!();

/// Whether `name` (as the URL parser leaves it: lowercase, international names in punycode) is a
/// DNS host name of the canonical form: labels of 1 to 63 letters, digits and inner `-`, the
/// last starting with a letter: the host names of [`HTTP_URL`]. The parser also lets through
/// names such as `a*b` or `x_y`, which no resolver serves as a host.
pub fn is_host_name(name: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let mut labels = name.split('.').rev();
    labels
        .next()
        .is_some_and(|last| label(last) && last.starts_with(|c: char| c.is_ascii_alphabetic()))
        && labels.all(label)
}

/// [`HTTP_URL`], or with an IPv6 literal host in brackets, in the hexadecimal form the URL
/// parser leaves it in (a short link's target: the redirect never connects to it).
pub const HTTP_URL_OR_IPV6: &str = http_url!(
    r"|\[(([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|([0-9a-f]{1,4}:){1,7}:|([0-9a-f]{1,4}:){1,6}:[0-9a-f]{1,4}|([0-9a-f]{1,4}:){1,5}(:[0-9a-f]{1,4}){1,2}|([0-9a-f]{1,4}:){1,4}(:[0-9a-f]{1,4}){1,3}|([0-9a-f]{1,4}:){1,3}(:[0-9a-f]{1,4}){1,4}|([0-9a-f]{1,4}:){1,2}(:[0-9a-f]{1,4}){1,5}|[0-9a-f]{1,4}:(:[0-9a-f]{1,4}){1,6}|:((:[0-9a-f]{1,4}){1,7}|:))\]"
);

/// An integer in `range`.
pub fn integer<T: Copy + Into<Number>>(range: &RangeInclusive<T>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(*range.start()))
        .maximum(Some(*range.end()))
}

/// Text that [`crate::validation::plain_text`] accepts: `min` to `max` characters, no control
/// characters.
pub fn plain_text(min: usize, max: usize) -> ObjectBuilder {
    string(min, max).pattern(Some(format!("^[^{CONTROL}]*$")))
}

/// Text that [`crate::validation::trimmed_text`] accepts: at most `max` characters, no control
/// characters, something other than whitespace; `excluded` lists further refused characters
/// (escaped for a class).
pub fn trimmed_text(max: usize, excluded: &str) -> ObjectBuilder {
    let any = format!("[^{CONTROL}{excluded}]*");
    string(1, max).pattern(Some(format!("^{any}[^{CONTROL}{SPACE}{excluded}]{any}$")))
}

/// A string of `min` to `max` characters.
pub fn string(min: usize, max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
}

/// The same schema, also allowing `null` (what an `Option` field deserializes from).
pub fn nullable(schema: ObjectBuilder) -> Object {
    let mut built = schema.build();
    if let SchemaType::Type(t) = built.schema_type {
        built.schema_type = SchemaType::from_iter([t, Type::Null]);
    }
    built
}

/// A pattern that refuses every word of `words`, whatever its case, then requires `rest`:
/// `^(?!(?:[vV]1|[dD][oO][cC][sS])$)rest`. Letters become two-case classes so the pattern
/// needs no case-insensitive flag.
pub fn refusing_words(words: &[&str], rest: &str) -> String {
    let alternatives: Vec<String> = words.iter().map(|w| any_case(w)).collect();
    format!("^(?!(?:{})$){rest}", alternatives.join("|"))
}

/// `text` matched in any letter case, for a pattern: `pier.` → `[pP][iI][eE][rR]\.`.
pub fn any_case(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
            } else if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_refused_in_any_case() {
        assert_eq!(
            refusing_words(&["v1", "docs"], "[a-z]+$"),
            "^(?!(?:[vV]1|[dD][oO][cC][sS])$)[a-z]+$"
        );
        assert_eq!(any_case("pier."), r"[pP][iI][eE][rR]\.");
    }

    #[test]
    fn nullable_keeps_the_constraints() {
        let schema = nullable(integer(&(1u32..=5)));
        let json = serde_json::to_value(&schema).expect("json");
        assert_eq!(json["type"], serde_json::json!(["integer", "null"]));
        assert_eq!(json["minimum"], 1);
        assert_eq!(json["maximum"], 5);
    }
}
