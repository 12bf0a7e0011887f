//! Field-level validation errors, collected so a client sees every problem in one `422`, and the
//! one rule every stored piece of free text follows.

use serde::Serialize;

/// Checks free text that Pier stores and shows (names, labels, keys chosen by clients): `min` to
/// `max` characters and no control characters. NUL in particular is refused because PostgreSQL
/// cannot store it in text while SQLite can, and the rest because they corrupt logs and
/// terminals that print the value.
pub fn plain_text(text: &str, min: usize, max: usize) -> Result<(), String> {
    let chars = text.chars().count();
    if chars < min {
        return Err(if min == 1 {
            "must not be empty".to_owned()
        } else {
            format!("must be at least {min} characters")
        });
    }
    if chars > max {
        return Err(format!("must be at most {max} characters"));
    }
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "must not contain control characters (found U+{:04X})",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// `text` trimmed, if it passes [`plain_text`] (up to `max` characters as sent) and holds more
/// than whitespace: the rule of every name-like field.
pub fn trimmed_text(text: &str, max: usize) -> Result<String, String> {
    plain_text(text, 1, max)?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(trimmed.to_owned())
}

/// "must be from A to B".
/// The media type of a `Content-Type` value, lowercased and without parameters:
/// `application/json` of `Application/JSON; charset=utf-8`.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether a [`media_type`] is JSON: `application/json` or `application/*+json` (such as
/// `application/merge-patch+json` and `application/problem+json`).
pub fn is_json(media_type: &str) -> bool {
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

pub fn range_message<T: std::fmt::Display>(range: &std::ops::RangeInclusive<T>) -> String {
    format!("must be from {} to {}", range.start(), range.end())
}

/// A human-given name (of a workspace, an API key, …): trimmed, 1 to [`Label::MAX_CHARS`]
/// characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label(String);

impl Label {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(text: &str) -> Result<Self, String> {
        trimmed_text(text, Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// One invalid field: `{"field": "name", "code": "too_long", "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The JSON path of the field, e.g. `scopes[2]`, or the query parameter name.
    pub field: String,
    /// A stable, machine-readable reason, e.g. `required`, `too_long`, `invalid`.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

/// A non-empty list of field errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// A single error, for the common case of one bad field.
    pub fn single(field: &str, code: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, code, message);
        errors
    }

    pub fn add(&mut self, field: &str, code: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_owned(),
            code: code.to_owned(),
            message: message.into(),
        });
    }

    /// Keeps `value` if `range` holds it; else records `out_of_range` under `field`, with the one
    /// wording every range check uses.
    pub fn check_range<T: PartialOrd + std::fmt::Display>(
        &mut self,
        field: &str,
        value: T,
        range: &std::ops::RangeInclusive<T>,
    ) -> Option<T> {
        if range.contains(&value) {
            Some(value)
        } else {
            self.add(field, "out_of_range", range_message(range));
            None
        }
    }

    /// Keeps the value of `result`, recording its error under `field`.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        code: &str,
        result: Result<T, E>,
    ) -> Option<T> {
        result
            .map_err(|e| self.add(field, code, e.to_string()))
            .ok()
    }

    /// A set given as a list: at most `max` items (else `too_many`, "at most {max} {noun}"),
    /// each parsed (each bad one reported as `field[i]`), then sorted with duplicates kept once.
    pub fn check_set<T: Ord, E: std::fmt::Display>(
        &mut self,
        field: &str,
        list: &[String],
        (max, noun): (usize, &str),
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Option<Vec<T>> {
        if list.len() > max {
            self.add(field, "too_many", format!("at most {max} {noun}"));
            return None;
        }
        // Every item is checked, so each bad one is reported, before any is kept.
        let checked: Vec<Option<T>> = list
            .iter()
            .enumerate()
            .map(|(i, text)| self.check(&format!("{field}[{i}]"), "invalid", parse(text)))
            .collect();
        let mut set: Vec<T> = checked.into_iter().collect::<Option<_>>()?;
        set.sort();
        set.dedup();
        Some(set)
    }

    /// Like [`check`](Self::check), with the code the error itself names.
    pub fn check_coded<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        result: Result<T, E>,
        code: impl Fn(&E) -> &'static str,
    ) -> Option<T> {
        result
            .map_err(|e| self.add(field, code(&e), e.to_string()))
            .ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded.
    pub fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    pub fn first_message(&self) -> Option<&str> {
        self.0.first().map(|e| e.message.as_str())
    }
}

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for ValidationErrors {}

#[cfg(test)]
mod tests {
    use super::plain_text;

    #[test]
    fn labels_are_trimmed_and_plain() {
        assert_eq!(
            super::Label::parse("  ci  ").map(super::Label::into_string),
            Ok("ci".to_owned())
        );
        assert!(super::Label::parse("   ").is_err());
        assert!(super::Label::parse("bell\u{7}").is_err());
        assert!(super::Label::parse(&"x".repeat(101)).is_err());
        // The limit is on what was sent, so the document's `maxLength` holds as written.
        assert!(super::Label::parse(&format!(" {} ", "x".repeat(99))).is_err());
    }

    #[test]
    fn plain_text_refuses_control_characters_and_bad_lengths() {
        assert!(plain_text("ünïcode ok", 1, 10).is_ok());
        assert!(plain_text("", 1, 10).is_err());
        assert!(plain_text("elevenchars", 1, 10).is_err());
        for hostile in [
            "a\0b",
            "tab\there",
            "line\nbreak",
            "esc\u{1b}[31m",
            "del\u{7f}",
        ] {
            let err = plain_text(hostile, 1, 100).expect_err(hostile);
            assert!(err.contains("control characters"), "{err}");
        }
    }
}
