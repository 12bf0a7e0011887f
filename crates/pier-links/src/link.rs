//! What a link is: its id, the fields its owner sets (each with its rule) and the stored record.

use pier_core::{Timestamp, WorkspaceId, define_id, validation::trimmed_text};

use crate::fields::LinkFields;
use crate::{Slug, Target};

define_id!(
    /// A link id, `link_…`.
    LinkId,
    "link"
);

/// The HTTP status a link redirects with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedirectStatus {
    /// 301: browsers and search engines remember it; clicks after the first may not reach us.
    MovedPermanently,
    /// 302, the default: browsers come back every time, so every click is counted.
    #[default]
    Found,
    /// 307: like 302, and the method and body are kept.
    TemporaryRedirect,
    /// 308: like 301, and the method and body are kept.
    PermanentRedirect,
}

impl RedirectStatus {
    pub const ALL: [Self; 4] = [
        Self::MovedPermanently,
        Self::Found,
        Self::TemporaryRedirect,
        Self::PermanentRedirect,
    ];

    pub fn code(self) -> u16 {
        match self {
            Self::MovedPermanently => 301,
            Self::Found => 302,
            Self::TemporaryRedirect => 307,
            Self::PermanentRedirect => 308,
        }
    }

    /// The codes as the OpenAPI document lists them.
    pub fn schema() -> utoipa::openapi::schema::ObjectBuilder {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .enum_values(Some(Self::ALL.map(Self::code)))
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Browsers may keep a permanent redirect without asking again.
    pub fn is_permanent(self) -> bool {
        matches!(self, Self::MovedPermanently | Self::PermanentRedirect)
    }
}

/// A link's title: up to [`Title::MAX_CHARS`] characters of plain text, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub const MAX_CHARS: usize = 300;

    pub fn parse(text: &str) -> Result<Self, String> {
        trimmed_text(text, Self::MAX_CHARS).map(Self)
    }

    /// [`Title::parse`]'s rule for the OpenAPI document.
    pub fn schema() -> utoipa::openapi::schema::ObjectBuilder {
        pier_core::schema::trimmed_text(Self::MAX_CHARS, "")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tag: 1 to [`Tag::MAX_CHARS`] characters of plain text without `,`, trimmed, compared
/// exactly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub const MAX_CHARS: usize = 50;
    /// The most tags one link carries.
    pub const MAX_PER_LINK: usize = 20;
    /// Separates a link's tags in one CSV cell (imports and exports), so no tag holds it.
    pub const SEPARATOR: char = ',';

    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains(Self::SEPARATOR) {
            return Err(format!("must not contain `{}`", Self::SEPARATOR));
        }
        trimmed_text(text, Self::MAX_CHARS).map(Self)
    }

    /// [`Tag::parse`]'s rule for the OpenAPI document.
    pub fn schema() -> utoipa::openapi::schema::ObjectBuilder {
        pier_core::schema::trimmed_text(Self::MAX_CHARS, ",")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a write does to a link's password.
#[derive(Debug, Clone)]
pub enum PasswordChange {
    Keep,
    Remove,
    /// The Argon2id PHC string of the new password (see [`crate::password`]).
    Set(String),
}

/// A stored link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub id: LinkId,
    pub workspace_id: WorkspaceId,
    pub slug: String,
    pub url: String,
    pub title: Option<String>,
    pub tags: Vec<String>,
    pub redirect_status: RedirectStatus,
    pub expires_at: Option<Timestamp>,
    pub max_clicks: Option<i64>,
    pub has_password: bool,
    /// The principal that created it (an API key id).
    pub created_by: String,
    /// Moves on every owner change, not on clicks: the ETag.
    pub version: i64,
    /// Human visits recorded so far (bots are counted apart, in the stats).
    pub clicks: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Link {
    /// What the `link.created` and `link.updated` events carry: the link's owner-set fields
    /// and identity (not its click count, which changes without an event).
    pub fn event_payload(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "slug": self.slug,
            "url": self.url,
            "title": self.title,
            "tags": self.tags,
            "redirect_status": self.redirect_status.code(),
            "expires_at": self.expires_at,
            "max_clicks": self.max_clicks,
            "has_password": self.has_password,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

impl Link {
    /// The fields as they stand, for a merge patch to change some of.
    pub fn fields(&self) -> Result<LinkFields, String> {
        Ok(LinkFields {
            slug: Some(Slug::parse(&self.slug).map_err(|e| e.to_string())?),
            target: Target::parse(&self.url).map_err(|e| e.to_string())?,
            title: self.title.as_deref().map(Title::parse).transpose()?,
            tags: self
                .tags
                .iter()
                .map(|t| Tag::parse(t))
                .collect::<Result<_, _>>()?,
            redirect_status: self.redirect_status,
            expires_at: self.expires_at,
            max_clicks: self.max_clicks,
            password: PasswordChange::Keep,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redirect_statuses_parse() {
        for status in RedirectStatus::ALL {
            assert_eq!(RedirectStatus::from_code(status.code()), Some(status));
        }
        assert_eq!(RedirectStatus::from_code(200), None);
        assert_eq!(RedirectStatus::from_code(303), None);
        assert_eq!(RedirectStatus::default().code(), 302);
    }

    #[test]
    fn titles_and_tags_are_plain_text() {
        assert_eq!(Tag::parse("  news ").map(|t| t.0), Ok("news".to_owned()));
        assert!(Tag::parse("").is_err());
        assert!(Tag::parse(&"x".repeat(51)).is_err());
        assert!(Tag::parse("a\u{0}b").is_err());
        assert!(Title::parse(&"é".repeat(300)).is_ok());
        assert!(Title::parse(&"é".repeat(301)).is_err());
    }

    #[test]
    fn tags_hold_no_comma_so_a_csv_cell_can_list_them() {
        assert_eq!(
            Tag::parse("sale,news"),
            Err("must not contain `,`".to_owned())
        );
        assert!(Tag::parse(",").is_err());
        assert!(Tag::parse("sale;news").is_ok());
    }
}
