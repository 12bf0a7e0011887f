//! Identity's resources as the API shows them.

use pier_auth::oauth::{ClientId, ClientType, GrantType, OAuthClient};
use pier_auth::{
    ApiKey, ApiKeyId, Permission, Relation, ResourceGrant, ResourceGrantId, ResourceType, Role,
    WorkspaceId,
};
use pier_core::Timestamp;
use serde::Serialize;

use crate::extract::ETag;

/// An API key as the API shows it (never with its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ApiKey, example = ApiKeyView::example)]
pub struct ApiKeyView {
    id: ApiKeyId,
    workspace_id: WorkspaceId,
    name: String,
    /// The first characters of the key, to tell keys apart.
    prefix: String,
    role: Role,
    /// The permissions this key is limited to; `null` means everything its role allows.
    scopes: Option<Vec<Permission>>,
    created_at: Timestamp,
    last_used_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    revoked_at: Option<Timestamp>,
}

impl ApiKeyView {
    /// What the OpenAPI document shows of a key.
    pub fn example() -> serde_json::Value {
        serde_json::json!({"id": "key_01m8pd91emf07nqws6p476403x",
            "workspace_id": "ws_01m8hpqca6yrpxjm9wy9jmw19v", "name": "ci",
            "prefix": "pier_aQ4KUJiA", "role": "member",
            "scopes": ["jobs:read", "jobs:write"],
            "created_at": "2026-11-30T12:00:00.000000Z", "last_used_at": null,
            "expires_at": null, "revoked_at": null})
    }

    /// The key's version, as `ETag` and `If-Match` carry it: a digest of what is shown.
    pub fn etag(&self) -> ETag {
        ETag::of(self)
    }
}

impl From<ApiKey> for ApiKeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            workspace_id: key.workspace_id,
            name: key.name,
            prefix: key.prefix,
            role: key.role,
            scopes: key.scopes,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// A registered client, as the API shows it (never with its secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = OAuthClient, example = ClientView::example)]
pub struct ClientView {
    client_id: ClientId,
    workspace_id: WorkspaceId,
    name: String,
    client_type: ClientType,
    redirect_uris: Vec<String>,
    grant_types: Vec<GrantType>,
    /// The most a token issued to this client may carry.
    scopes: Vec<Permission>,
    /// The role of whoever registered the client: its tokens never exceed it.
    role: Role,
    created_at: Timestamp,
}

impl ClientView {
    pub fn example() -> serde_json::Value {
        serde_json::json!({"client_id": "client_01m8pd91emf07nqws6p476403x",
            "workspace_id": "ws_01m8hpqca6yrpxjm9wy9jmw19v", "name": "Reporting app",
            "client_type": "confidential",
            "redirect_uris": ["https://app.example/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "scopes": ["links:read"], "role": "admin",
            "created_at": "2026-11-30T12:00:00.000000Z"})
    }
}

impl From<OAuthClient> for ClientView {
    fn from(c: OAuthClient) -> Self {
        Self {
            client_id: c.client_id,
            workspace_id: c.workspace_id,
            name: c.name,
            client_type: c.client_type,
            redirect_uris: c.redirect_uris,
            grant_types: c.grant_types,
            scopes: c.scopes,
            role: c.role,
            created_at: c.created_at,
        }
    }
}

/// A grant, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ResourceGrant, example = GrantView::example)]
pub struct GrantView {
    id: ResourceGrantId,
    /// An API key (`key_…`) or a user (`usr_…`) of the workspace.
    subject: String,
    resource_type: ResourceType,
    resource_id: String,
    relation: Relation,
    created_at: Timestamp,
}

impl GrantView {
    pub fn example() -> serde_json::Value {
        serde_json::json!({"id": "grt_01m8pd91emf07nqws6p476403x",
            "subject": "key_01m8pd91emf07nqws6p476403y", "resource_type": "link",
            "resource_id": "lnk_01m8pd91emf07nqws6p476403z", "relation": "editor",
            "created_at": "2026-11-30T12:00:00.000000Z"})
    }
}

impl From<ResourceGrant> for GrantView {
    fn from(g: ResourceGrant) -> Self {
        Self {
            id: g.id,
            subject: g.subject,
            resource_type: g.resource_type,
            resource_id: g.resource_id,
            relation: g.relation,
            created_at: g.created_at,
        }
    }
}
