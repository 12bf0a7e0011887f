//! What every handler can reach.

use std::sync::Arc;

use pier_auth::oauth::OAuthStore;
use pier_auth::{
    AccessTokens, ApiKeyStore, Authenticator, ResourceGrants, SessionStore, WorkspaceStore,
};
use pier_core::{Clock, CursorCodec, HashGate};
use pier_db::Db;
use pier_idempotency::IdempotencyStore;
use pier_jobs::{GroupCommit, JobStore};
use pier_links::LinkStore;
use pier_links::geo::Countries;
use pier_ratelimit::{Limiter, Policy, PolicySpec, PolicyStore};
use pier_webhooks::{Publisher, WebhookStore};

use crate::guesses::FailedLogins;
use crate::rate_limit::ApiProtection;

/// A Redis connection (it reconnects by itself); `Debug` hides its address.
#[derive(Clone)]
pub struct Redis(pub redis::aio::ConnectionManager);

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redis")
    }
}

/// The limits on guesses at a link's password.
#[derive(Debug)]
pub struct PasswordGuesses {
    /// Per link and client address.
    pub per_link_address: Policy,
    /// Per link, from every address together.
    pub per_link: Policy,
}

/// Shared, cheaply cloned state of the API.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

/// The parts as given, and the stores derived from them.
#[derive(Debug)]
struct Inner {
    parts: AppStateParts,
    /// Set when shutdown begins: readiness fails so load balancers stop sending traffic.
    draining: std::sync::atomic::AtomicBool,
    authenticator: Authenticator,
    api_keys: ApiKeyStore,
    workspaces: WorkspaceStore,
    group_commit: GroupCommit,
    publisher: Publisher,
    policies: PolicyStore,
    grants: ResourceGrants,
}

/// The inputs [`AppState`] is built from.
#[derive(Debug)]
pub struct AppStateParts {
    /// The database of record.
    pub db: Db,
    /// The source of "now" for every request.
    pub clock: Arc<dyn Clock>,
    /// Signs pagination cursors; its key is shared by all nodes through the database.
    pub cursors: CursorCodec,
    /// The Redis connection, when one is configured; readiness checks it.
    pub redis: Option<Redis>,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// The browser origins allowed to call the API from another origin (CORS); none: CORS off.
    pub cors_allowed_origins: Vec<axum::http::HeaderValue>,
    /// How long a request may run (long-poll claims get their wait on top).
    pub request_timeout: std::time::Duration,
    /// The job queue (shares `db` and `clock`).
    pub jobs: JobStore,
    /// How many bytes of payloads one claim may hand out (at least one job is always handed).
    pub claim_budget_bytes: u64,
    /// Idempotency records (their replays are sealed under the server's key).
    pub idempotency: IdempotencyStore,
    /// How long an authenticated key is remembered unless revoked sooner.
    pub key_cache_ttl: std::time::Duration,
    /// Decides rate limits, for API protection and the decision API.
    pub limiter: Arc<Limiter>,
    /// How Pier's own API is limited.
    pub protection: ApiProtection,
    /// Rate-limit policies from the configuration file, by name: every workspace may check
    /// them (each with its own counts); the API cannot change them.
    pub configured_policies: Vec<(String, PolicySpec)>,
    /// Short links (their redirect cache and click buffer inside).
    pub links: LinkStore,
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
    /// Webhook endpoints, event types and published events.
    pub webhooks: WebhookStore,
    /// Sign-in sessions.
    pub sessions: SessionStore,
    /// How many failed sign-ins are allowed.
    pub failed_logins: FailedLogins,
    /// The node's bound on concurrent password hashes (shared with `sessions`).
    pub hashing: HashGate,
    /// Whether the session cookie is `__Host-` and `Secure` (see [`crate::session_cookie`]).
    pub cookie_secure: bool,
    /// OAuth clients, grants, codes and refresh tokens.
    pub oauth: OAuthStore,
    /// Signs and verifies access tokens.
    pub access_tokens: AccessTokens,
}

impl AppState {
    pub fn new(parts: AppStateParts) -> Self {
        let (db, clock) = (&parts.db, &parts.clock);
        let api_keys = ApiKeyStore::with_cache_ttl(db.clone(), clock.clone(), parts.key_cache_ttl);
        Self(Arc::new(Inner {
            authenticator: Authenticator::new(api_keys.clone(), clock.clone())
                .with_access_tokens(parts.access_tokens.clone(), parts.oauth.clone()),
            workspaces: WorkspaceStore::new(db.clone(), clock.clone()),
            group_commit: GroupCommit::start(&parts.jobs),
            publisher: Publisher::start(&parts.webhooks),
            policies: PolicyStore::new(db.clone(), clock.clone()),
            grants: ResourceGrants::new(db.clone(), clock.clone()),
            api_keys,
            parts,
            draining: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Turns readiness false (for good): the node is about to stop.
    pub fn start_draining(&self) {
        self.0
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn db(&self) -> &Db {
        &self.0.parts.db
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.0.parts.clock
    }

    pub fn cursors(&self) -> &CursorCodec {
        &self.0.parts.cursors
    }

    pub fn redis(&self) -> Option<&Redis> {
        self.0.parts.redis.as_ref()
    }

    pub fn body_limit(&self) -> usize {
        self.0.parts.body_limit
    }

    pub fn cors_allowed_origins(&self) -> &[axum::http::HeaderValue] {
        &self.0.parts.cors_allowed_origins
    }

    pub fn request_timeout(&self) -> std::time::Duration {
        self.0.parts.request_timeout
    }

    pub fn claim_budget_bytes(&self) -> u64 {
        self.0.parts.claim_budget_bytes
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.0.authenticator
    }

    pub fn api_keys(&self) -> &ApiKeyStore {
        &self.0.api_keys
    }

    pub fn workspaces(&self) -> &WorkspaceStore {
        &self.0.workspaces
    }

    pub fn jobs(&self) -> &JobStore {
        &self.0.parts.jobs
    }

    pub fn idempotency(&self) -> &IdempotencyStore {
        &self.0.parts.idempotency
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.0.parts.limiter
    }

    pub fn protection(&self) -> &ApiProtection {
        &self.0.parts.protection
    }

    /// Policies workspaces defined through the API.
    pub fn policies(&self) -> &PolicyStore {
        &self.0.policies
    }

    /// The configuration file's policy named `name`, if any.
    pub fn configured_policy(&self, name: &str) -> Option<&PolicySpec> {
        self.0
            .parts
            .configured_policies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, spec)| spec)
    }

    pub fn configured_policies(&self) -> &[(String, PolicySpec)] {
        &self.0.parts.configured_policies
    }

    pub fn links(&self) -> &LinkStore {
        &self.0.parts.links
    }

    pub fn webhooks(&self) -> &WebhookStore {
        &self.0.parts.webhooks
    }

    pub fn sessions(&self) -> &SessionStore {
        &self.0.parts.sessions
    }

    /// Resource grants, and the one place access to a single resource is decided.
    pub fn grants(&self) -> &ResourceGrants {
        &self.0.grants
    }

    pub fn oauth(&self) -> &OAuthStore {
        &self.0.parts.oauth
    }

    pub fn access_tokens(&self) -> &AccessTokens {
        &self.0.parts.access_tokens
    }

    pub fn failed_logins(&self) -> &FailedLogins {
        &self.0.parts.failed_logins
    }

    pub fn cookie_secure(&self) -> bool {
        self.0.parts.cookie_secure
    }

    pub fn hashing(&self) -> &HashGate {
        &self.0.parts.hashing
    }

    pub fn short_link_base(&self) -> &str {
        &self.0.parts.short_link_base
    }

    pub fn password_guesses(&self) -> &PasswordGuesses {
        &self.0.parts.password_guesses
    }

    pub fn redirect_misses(&self) -> &Policy {
        &self.0.parts.redirect_misses
    }

    pub fn visitor_key(&self) -> &[u8; 32] {
        &self.0.parts.visitor_key
    }

    pub fn countries(&self) -> Option<&Countries> {
        self.0.parts.countries.as_deref()
    }

    /// Single enqueues and reports, committed in groups (see [`GroupCommit`]).
    pub fn group_commit(&self) -> &GroupCommit {
        &self.0.group_commit
    }

    /// Publishes events, committed in groups (see [`Publisher`]).
    pub fn publisher(&self) -> &Publisher {
        &self.0.publisher
    }
}
