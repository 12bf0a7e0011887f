//! Where a link sends its visitors. A redirect hands the URL to a browser, so a target is only
//! what is safe to hand over: an absolute `http` or `https` URL with a host, no credentials in
//! it, at most [`Target::MAX_BYTES`] long, and normalised (WHATWG URL parsing: lowercase
//! scheme and host, IDNA hosts in punycode, default ports and dot segments removed, unsafe
//! characters percent-encoded), so two spellings of one address are one target.

use url::Url;

/// Why a target URL is refused; `code` is the stable reason the API reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {} bytes", Target::MAX_BYTES)]
    TooLong,
    #[error("must not contain control characters or surrounding whitespace")]
    Control,
    #[error("must be an absolute URL such as https://example.com/page")]
    NotAbsolute,
    #[error("is not a valid URL: {0}")]
    Invalid(String),
    #[error("must use http or https, not `{0}:`")]
    Scheme(String),
    #[error("must not contain a user name or password")]
    Credentials,
    #[error("must name a host")]
    NoHost,
}

impl TargetError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "required",
            Self::TooLong => "too_long",
            Self::Control | Self::NotAbsolute | Self::Invalid(_) | Self::NoHost => "invalid",
            Self::Scheme(_) => "scheme_not_allowed",
            Self::Credentials => "credentials_not_allowed",
        }
    }
}

/// A validated, normalised target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(Url);

impl Target {
    /// The longest target, before and after normalisation (which may lengthen it by
    /// percent-encoding).
    pub const MAX_BYTES: usize = 8 * 1024;

    pub fn parse(text: &str) -> Result<Self, TargetError> {
        if text.is_empty() {
            return Err(TargetError::Empty);
        }
        if text.len() > Self::MAX_BYTES {
            return Err(TargetError::TooLong);
        }
        // The URL parser would silently drop tabs, newlines and surrounding spaces, so
        // `java\tscript:` would become `javascript:`; refuse them instead.
        if text.chars().any(char::is_control) || text.trim() != text {
            return Err(TargetError::Control);
        }
        let url = Url::parse(text).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => TargetError::NotAbsolute,
            other => TargetError::Invalid(other.to_string()),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::Credentials);
        }
        match url.host() {
            None => return Err(TargetError::NoHost),
            Some(url::Host::Domain(name)) if !pier_core::schema::is_host_name(name) => {
                return Err(TargetError::Invalid(
                    "a host name is labels of letters, digits and `-`, the last starting with \
                     a letter"
                        .to_owned(),
                ));
            }
            // IPv4 and IPv6 literals are valid hosts; the redirect hands them to the browser
            // and never connects to them itself.
            Some(_) => {}
        }
        if url.as_str().len() > Self::MAX_BYTES {
            return Err(TargetError::TooLong);
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl utoipa::PartialSchema for Target {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        pier_core::schema::string(1, Self::MAX_BYTES)
            .pattern(Some(pier_core::schema::HTTP_URL_OR_IPV6))
            .description(Some(
                "Where visitors are sent: an absolute `http` or `https` URL without \
                 credentials. Stored normalised; international host names and characters \
                 that need percent-encoding are taken too, and stored encoded.",
            ))
            .examples(["https://example.com/spring-sale"])
            .into()
    }
}

impl utoipa::ToSchema for Target {}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
