//! The links' slice of the state: the store and the settings only links use.

use std::sync::Arc;

use pier_core::HashGate;
use pier_links::LinkStore;
use pier_links::geo::Countries;
use pier_ratelimit::Policy;

/// The limits on guesses at a link's password.
#[derive(Debug)]
pub struct PasswordGuesses {
    /// Per link and client address.
    pub per_link_address: Policy,
    /// Per link, from every address together.
    pub per_link: Policy,
}

/// The links' settings block of [`crate::AppStateParts`].
#[derive(Debug)]
pub struct LinksParts {
    /// Short links (their redirect cache and click buffer inside).
    pub store: LinkStore,
    /// What short URLs start with, e.g. `https://s.example` (no trailing slash).
    pub short_link_base: String,
    /// Guesses at a link's password.
    pub password_guesses: PasswordGuesses,
    /// Redirects to slugs that match no link, per client address.
    pub redirect_misses: Policy,
    /// Keys the visitor hashes of unique-visitor counts; the same on every node.
    pub visitor_key: [u8; 32],
    /// Visitors' countries, when a GeoIP database is configured.
    pub countries: Option<Arc<Countries>>,
    /// The node's bound on concurrent password hashes (shared with sign-in).
    pub hashing: HashGate,
}

/// What the link routes take as `State<LinksState>`.
#[derive(Debug, Clone)]
pub struct LinksState(Arc<LinksParts>);

impl LinksState {
    pub(crate) fn new(settings: LinksParts) -> Self {
        Self(Arc::new(settings))
    }

    pub fn store(&self) -> &LinkStore {
        &self.0.store
    }

    pub fn short_link_base(&self) -> &str {
        &self.0.short_link_base
    }

    pub fn password_guesses(&self) -> &PasswordGuesses {
        &self.0.password_guesses
    }

    pub fn redirect_misses(&self) -> &Policy {
        &self.0.redirect_misses
    }

    pub fn visitor_key(&self) -> &[u8; 32] {
        &self.0.visitor_key
    }

    pub fn countries(&self) -> Option<&Countries> {
        self.0.countries.as_deref()
    }

    pub fn hashing(&self) -> &HashGate {
        &self.0.hashing
    }
}
