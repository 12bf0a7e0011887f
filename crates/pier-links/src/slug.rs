//! The path a short link answers on: `https://short.example/{slug}`. Slugs are case-sensitive
//! and unique across the service. A chosen slug is 1 to [`Slug::MAX_CHARS`] letters, digits,
//! `-` or `_`, and never one of Pier's own paths ([`RESERVED`], compared without case, so
//! `/Docs` cannot pass for `/docs`). A generated slug is [`Slug::GENERATED_CHARS`] characters of
//! an alphabet without look-alikes (no `0`/`O`/`o`, `1`/`l`/`I`), so it can be read aloud and
//! typed from print: 56^7 ≈ 1.7 × 10^12 slugs. Uniqueness is the store's to enforce: a generated
//! slug that is taken is simply generated again.

use rand::Rng;

/// Paths Pier serves itself, or may: no link can take them.
pub const RESERVED: &[&str] = &[
    "v1",
    "v2",
    "api",
    "admin",
    "assets",
    "auth",
    "dashboard",
    "docs",
    "healthz",
    "livez",
    "login",
    "logout",
    "metrics",
    "oauth",
    "readyz",
    "static",
];

/// The alphabet of generated slugs: digits and letters less the look-alikes.
const ALPHABET: &[u8] = b"23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";

fn is_reserved(slug: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(slug))
}

/// Why a chosen slug is refused; `code` is the stable reason the API reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {} characters", Slug::MAX_CHARS)]
    TooLong,
    #[error("may hold only letters, digits, `-` and `_` (found `{0}`)")]
    Character(char),
    #[error("`{0}` is one of Pier's own paths")]
    Reserved(String),
}

impl SlugError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "required",
            Self::TooLong => "too_long",
            Self::Character(_) => "invalid",
            Self::Reserved(_) => "reserved",
        }
    }
}

/// A valid slug.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slug(String);

impl Slug {
    pub const MAX_CHARS: usize = 64;
    pub const GENERATED_CHARS: usize = 7;

    /// A slug a client chose.
    pub fn parse(text: &str) -> Result<Self, SlugError> {
        Self::check(text).map(|()| Self(text.to_owned()))
    }

    /// Whether `text` is a valid slug, without keeping it (the redirect path's first test).
    pub fn check(text: &str) -> Result<(), SlugError> {
        if text.is_empty() {
            return Err(SlugError::Empty);
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(SlugError::Character(c));
        }
        // ASCII only from here, so bytes are characters.
        if text.len() > Self::MAX_CHARS {
            return Err(SlugError::TooLong);
        }
        if is_reserved(text) {
            return Err(SlugError::Reserved(text.to_owned()));
        }
        Ok(())
    }

    /// A fresh random slug, never a reserved one (`metrics` could be drawn).
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        loop {
            let slug: String = (0..Self::GENERATED_CHARS)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect();
            if !is_reserved(&slug) {
                return Self(slug);
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Slug {
    /// [`Slug::check`]'s rule for the OpenAPI document.
    pub fn schema_builder() -> utoipa::openapi::schema::ObjectBuilder {
        pier_core::schema::string(1, Self::MAX_CHARS).pattern(Some(
            pier_core::schema::refusing_words(RESERVED, "[A-Za-z0-9_-]+$"),
        ))
    }
}

impl utoipa::PartialSchema for Slug {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        Self::schema_builder().into()
    }
}

impl utoipa::ToSchema for Slug {}

impl std::fmt::Display for Slug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
