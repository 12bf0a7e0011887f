//! Authentication: turning a bearer credential into a [`Principal`].

use std::sync::Arc;

use pier_core::Clock;

use crate::{
    ApiKeyId, ApiKeyStore, KeySecret, Permission, PermissionSet, Role, Session, UserId, WorkspaceId,
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
    /// A person signed in with a session, acting in the session's workspace with their role
    /// there.
    User {
        user_id: UserId,
        workspace_id: WorkspaceId,
        role: Role,
    },
}

impl From<&Session> for Principal {
    fn from(session: &Session) -> Self {
        Self::User {
            user_id: session.user_id.clone(),
            workspace_id: session.workspace_id.clone(),
            role: session.role,
        }
    }
}

impl Principal {
    pub fn workspace_id(&self) -> &WorkspaceId {
        match self {
            Self::ApiKey { workspace_id, .. } | Self::User { workspace_id, .. } => workspace_id,
        }
    }

    pub fn role(&self) -> Role {
        match self {
            Self::ApiKey { role, .. } | Self::User { role, .. } => *role,
        }
    }

    pub fn permissions(&self) -> PermissionSet {
        match self {
            Self::ApiKey { permissions, .. } => *permissions,
            Self::User { role, .. } => role.permissions(),
        }
    }

    pub fn can(&self, permission: Permission) -> bool {
        self.permissions().contains(permission)
    }

    /// A stable identifier of the caller, used to scope idempotency keys.
    pub fn subject(&self) -> &str {
        match self {
            Self::ApiKey { key_id, .. } => key_id.as_str(),
            Self::User { user_id, .. } => user_id.as_str(),
        }
    }
}

/// Why a credential was refused. Every variant is a `401`; the text tells the caller what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <api key>`, or sign in")]
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
    #[error("could not check credentials")]
    Database(#[from] sqlx::Error),
}

#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: ApiKeyStore,
    clock: Arc<dyn Clock>,
}

impl Authenticator {
    pub fn new(keys: ApiKeyStore, clock: Arc<dyn Clock>) -> Self {
        Self { keys, clock }
    }

    /// Authenticates the value of an `Authorization` header.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        let secret = KeySecret::parse(token.trim()).map_err(|_| AuthError::Malformed)?;
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
