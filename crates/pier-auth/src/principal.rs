//! Authentication: turning a bearer credential into a [`Principal`].

use std::sync::Arc;

use pier_core::Clock;

use crate::oauth::OAuthStore;
use crate::{
    AccessTokens, ApiKeyId, ApiKeyStore, ClientId, KeySecret, Permission, PermissionSet, Role,
    Session, TokenError, UserId, WorkspaceId,
};

/// Who is behind a request. An enum so that user sessions and OAuth clients can join API keys
/// without changing the code that asks "may this caller do X?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    ApiKey {
        key_id: ApiKeyId,
        workspace_id: WorkspaceId,
        role: Role,
        permissions: PermissionSet,
    },
    /// A person, signed in with a session (holding everything their role allows) or acting
    /// through an access token a client obtained with their consent (the token's scopes narrow
    /// the role).
    User {
        user_id: UserId,
        workspace_id: WorkspaceId,
        role: Role,
        permissions: PermissionSet,
        /// The OAuth client acting for the user, when the request came with its token.
        via_client: Option<ClientId>,
    },
    /// An OAuth client acting for itself (client credentials), within the scopes it was
    /// registered with and the role of whoever registered it.
    Client {
        client_id: ClientId,
        workspace_id: WorkspaceId,
        role: Role,
        permissions: PermissionSet,
    },
}

impl From<&Session> for Principal {
    fn from(session: &Session) -> Self {
        Self::User {
            user_id: session.user_id.clone(),
            workspace_id: session.workspace_id.clone(),
            role: session.role,
            permissions: session.role.permissions(),
            via_client: None,
        }
    }
}

impl Principal {
    pub fn workspace_id(&self) -> &WorkspaceId {
        match self {
            Self::ApiKey { workspace_id, .. }
            | Self::User { workspace_id, .. }
            | Self::Client { workspace_id, .. } => workspace_id,
        }
    }

    pub fn role(&self) -> Role {
        match self {
            Self::ApiKey { role, .. } | Self::User { role, .. } | Self::Client { role, .. } => {
                *role
            }
        }
    }

    pub fn permissions(&self) -> PermissionSet {
        match self {
            Self::ApiKey { permissions, .. }
            | Self::User { permissions, .. }
            | Self::Client { permissions, .. } => *permissions,
        }
    }

    pub fn can(&self, permission: Permission) -> bool {
        self.permissions().contains(permission)
    }

    /// Whether this caller may hand out, or take away, a key with `role` and `permissions`:
    /// only what it holds itself. The refusal says why.
    pub fn may_manage(&self, role: Role, permissions: PermissionSet) -> Result<(), String> {
        if !self.role().outranks_or_equals(role) {
            return Err(format!("a {} key cannot manage {role} keys", self.role()));
        }
        if !permissions.is_subset_of(self.permissions()) {
            return Err("the key would hold permissions this credential does not have".to_owned());
        }
        Ok(())
    }

    /// Whether an OAuth client acts: for itself, or for a user within the scopes they
    /// consented to. Resource grants do not reach it.
    pub fn is_delegated(&self) -> bool {
        match self {
            Self::ApiKey { .. } => false,
            Self::User { via_client, .. } => via_client.is_some(),
            Self::Client { .. } => true,
        }
    }

    /// Whose stored results a request may replay (idempotency keys are scoped by it): the
    /// workspace, the kind of credential, the subject and the client acting for it, and what
    /// it may do now. A user's token does not replay their session's answers (which may carry
    /// a secret the client was never shown), nor one workspace's another's; and a caller whose
    /// role or permissions changed since gets no replay, so the handler checks them again
    /// (ASVS 5.0 V8.2.1).
    pub fn replay_scope(&self) -> String {
        let (kind, via) = match self {
            Self::ApiKey { .. } => ("key", None),
            Self::User { via_client, .. } => ("user", via_client.as_ref()),
            Self::Client { .. } => ("client", None),
        };
        format!(
            "{} {kind} {} {} {} {}",
            self.workspace_id(),
            self.subject(),
            via.map_or("-", ClientId::as_str),
            self.role(),
            self.permissions().to_names(),
        )
    }

    /// A stable identifier of the caller: the key, user or client (rate limits, who made what).
    pub fn subject(&self) -> &str {
        match self {
            Self::ApiKey { key_id, .. } => key_id.as_str(),
            Self::User { user_id, .. } => user_id.as_str(),
            Self::Client { client_id, .. } => client_id.as_str(),
        }
    }
}

/// Why a credential was refused. Every variant is a `401`; the text tells the caller what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <api key or access token>`, or sign in")]
    Missing,
    #[error("the Authorization header must use the Bearer scheme")]
    NotBearer,
    #[error("the API key is malformed (check for a typo or a truncated copy)")]
    Malformed,
    #[error("the API key is not recognised")]
    Unknown,
    #[error("the API key was revoked")]
    Revoked,
    #[error("the API key has expired")]
    Expired,
    #[error("the session has ended (signed out, expired or replaced): sign in again")]
    SessionEnded,
    #[error("{0}")]
    Token(TokenError),
    #[error("the access token was revoked, or its client, user or membership is gone")]
    GrantEnded,
    #[error("could not check credentials")]
    Database(#[from] sqlx::Error),
}

#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: ApiKeyStore,
    clock: Arc<dyn Clock>,
    tokens: Option<(AccessTokens, OAuthStore)>,
}

impl Authenticator {
    pub fn new(keys: ApiKeyStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            keys,
            clock,
            tokens: None,
        }
    }

    /// Accepts access tokens too, verified by `tokens` and live while their grant in `oauth` is.
    #[must_use]
    pub fn with_access_tokens(mut self, tokens: AccessTokens, oauth: OAuthStore) -> Self {
        self.tokens = Some((tokens, oauth));
        self
    }

    /// Authenticates the value of an `Authorization` header.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        let token = token.trim();
        if let Some((tokens, oauth)) = self.tokens.as_ref() {
            if AccessTokens::looks_like_jwt(token) {
                return Self::access_token(tokens, oauth, token).await;
            }
        }
        let secret = KeySecret::parse(token).map_err(|_| AuthError::Malformed)?;
        // The lookup is by SHA-256 of a high-entropy secret, so timing says nothing useful about
        // stored keys; the store confirms the match with a constant-time comparison.
        let key = self
            .keys
            .find_by_secret(&secret)
            .await?
            .ok_or(AuthError::Unknown)?;
        if key.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if key.expires_at.is_some_and(|at| at <= self.clock.now()) {
            return Err(AuthError::Expired);
        }
        self.keys.note_use(&key);
        Ok(Principal::ApiKey {
            permissions: key.permissions(),
            key_id: key.id,
            workspace_id: key.workspace_id,
            role: key.role,
        })
    }
}

impl Authenticator {
    /// A verified access token whose grant is live: the principal it acts as, its role taken
    /// from the grant today (a user who left the workspace, or was demoted, loses that at once)
    /// and narrowed by the token's scopes.
    async fn access_token(
        tokens: &AccessTokens,
        oauth: &OAuthStore,
        token: &str,
    ) -> Result<Principal, AuthError> {
        let claims = tokens.verify(token).await.map_err(|e| match e {
            TokenError::Keys(crate::KeyError::Database(e)) => AuthError::Database(e),
            other => AuthError::Token(other),
        })?;
        let live = oauth
            .live_grant(&claims.gid)
            .await?
            .filter(|live| {
                live.grant.workspace_id.as_str() == claims.workspace_id
                    && live.grant.client_id.as_str() == claims.client_id
                    && live.grant.subject() == claims.sub
            })
            .ok_or(AuthError::GrantEnded)?;
        let permissions = PermissionSet::from_names(&claims.scope)
            .intersect(live.grant.scopes)
            .intersect(live.role.permissions());
        let grant = live.grant;
        Ok(match grant.user_id {
            Some(user_id) => Principal::User {
                user_id,
                workspace_id: grant.workspace_id,
                role: live.role,
                permissions,
                via_client: Some(grant.client_id),
            },
            None => Principal::Client {
                client_id: grant.client_id,
                workspace_id: grant.workspace_id,
                role: live.role,
                permissions,
            },
        })
    }
}
