//! Identity's slice of the state: keys, sessions, OAuth, grants and the sign-in limits.

use std::sync::Arc;

use pier_auth::oauth::OAuthStore;
use pier_auth::{
    AccessTokens, ApiKeyStore, Authenticator, ResourceGrants, SessionStore, WorkspaceStore,
};
use pier_core::{Clock, HashGate};
use pier_db::Db;

use super::guesses::FailedLogins;

/// Identity's settings block of [`crate::AppStateParts`].
#[derive(Debug)]
pub struct IdentityParts {
    /// How long an authenticated key is remembered unless revoked sooner.
    pub key_cache_ttl: std::time::Duration,
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

/// What the identity routes take as `State<IdentityState>`.
#[derive(Debug, Clone)]
pub struct IdentityState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    settings: IdentityParts,
    api_keys: ApiKeyStore,
    workspaces: WorkspaceStore,
    grants: ResourceGrants,
}

impl IdentityState {
    pub(crate) fn new(settings: IdentityParts, db: &Db, clock: &Arc<dyn Clock>) -> Self {
        let api_keys =
            ApiKeyStore::with_cache_ttl(db.clone(), clock.clone(), settings.key_cache_ttl);
        Self(Arc::new(Inner {
            api_keys,
            workspaces: WorkspaceStore::new(db.clone(), clock.clone()),
            grants: ResourceGrants::new(db.clone(), clock.clone()),
            settings,
        }))
    }

    /// The authenticator of every request: API keys, then access tokens.
    pub(crate) fn authenticator(&self, clock: &Arc<dyn Clock>) -> Authenticator {
        Authenticator::new(self.0.api_keys.clone(), clock.clone()).with_access_tokens(
            self.0.settings.access_tokens.clone(),
            self.0.settings.oauth.clone(),
        )
    }

    pub fn api_keys(&self) -> &ApiKeyStore {
        &self.0.api_keys
    }

    pub fn workspaces(&self) -> &WorkspaceStore {
        &self.0.workspaces
    }

    /// Resource grants, and the one place access to a single resource is decided.
    pub fn grants(&self) -> &ResourceGrants {
        &self.0.grants
    }

    pub fn sessions(&self) -> &SessionStore {
        &self.0.settings.sessions
    }

    pub fn oauth(&self) -> &OAuthStore {
        &self.0.settings.oauth
    }

    pub fn access_tokens(&self) -> &AccessTokens {
        &self.0.settings.access_tokens
    }

    pub fn failed_logins(&self) -> &FailedLogins {
        &self.0.settings.failed_logins
    }

    pub fn cookie_secure(&self) -> bool {
        self.0.settings.cookie_secure
    }

    pub fn hashing(&self) -> &HashGate {
        &self.0.settings.hashing
    }
}
