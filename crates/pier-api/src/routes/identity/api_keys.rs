//! `/v1/api-keys`: create (the secret is shown once), list, read and revoke keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_auth::{
    ApiKey, ApiKeyFilter, ApiKeyId, KeyName, KeyRequest, NewApiKey, Permission, Principal, Role,
};
use pier_core::{Timestamp, ValidationErrors};
use serde::{Deserialize, Serialize};

use super::IdentityState;
use super::views::ApiKeyView;
use crate::AppState;
use crate::extract::{ApiJson, ApiQuery, Authed, IfMatch, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::response::located;

/// The body of `POST /v1/api-keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ci", "role": "member", "scopes": ["jobs:read", "jobs:write"]}))]
pub struct CreateApiKey {
    #[schema(schema_with = key_name)]
    name: String,
    /// Defaults to `member`. Cannot be above the caller's own role.
    #[schema(value_type = Option<Role>, nullable)]
    role: Option<String>,
    /// Narrows the role to these permissions, each of which the role must include; omit for
    /// everything the role allows.
    #[schema(value_type = Option<Vec<Permission>>, nullable)]
    scopes: Option<Vec<String>>,
    /// When the key stops working; must be in the future.
    expires_at: Option<Timestamp>,
}

fn key_name() -> utoipa::openapi::Object {
    pier_core::schema::trimmed_text(KeyName::MAX_CHARS, "")
        .description(Some("A label for people"))
        .build()
}

/// A new key with its secret, which is shown only in this response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = created_example)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    api_key: ApiKeyView,
    /// The secret to send as `Authorization: Bearer <key>`. Store it now: it is not shown again.
    key: String,
}

fn created_example() -> serde_json::Value {
    let mut key = ApiKeyView::example();
    key["key"] = "pier_aQ4KUJiAo0ppHL5sIXrZx9HtUfqFoUhX0LrQ5v".into();
    key
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListApiKeys {
    /// Only keys with this role.
    #[param(value_type = Option<Role>, inline)]
    role: Option<String>,
}

impl From<CreateApiKey> for KeyRequest {
    fn from(body: CreateApiKey) -> Self {
        Self {
            name: body.name,
            role: body.role,
            scopes: body.scopes,
            expires_at: body.expires_at,
        }
    }
}

/// A caller may only hand out, or take away, what it holds itself.
fn check_can_manage(
    caller: &Principal,
    role: Role,
    permissions: pier_auth::PermissionSet,
) -> ApiResult<()> {
    caller
        .may_manage(role, permissions)
        .map_err(ApiError::forbidden)
}

/// Create a key. The response's `key` field is the only time the secret is shown.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    operation_id = "createApiKey",
    tag = "api-keys",
    security(("bearer" = [])),
    request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey, headers(("Location" = String), ("ETag" = String))))
)]
pub async fn create(
    State(state): State<AppState>,
    State(identity): State<IdentityState>,
    auth: Authed<perm::ApiKeysWrite>,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> ApiResult<Response> {
    let new = NewApiKey::new(body.into(), state.clock().now()).map_err(ApiError::validation)?;
    check_can_manage(&auth.principal, new.role(), new.permissions())?;
    let (api_key, secret) = identity
        .api_keys()
        .create(auth.principal.workspace_id(), new)
        .await?;
    let location = format!("/v1/api-keys/{}", api_key.id);
    let api_key = ApiKeyView::from(api_key);
    let etag = api_key.etag();
    let body = Json(CreatedApiKey {
        key: secret.expose().to_owned(),
        api_key,
    });
    Ok(located(
        StatusCode::CREATED,
        &location,
        ([(header::ETAG, etag.header_value())], body),
    ))
}

/// List the workspace's keys, newest first.
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    operation_id = "listApiKeys",
    tag = "api-keys",
    security(("bearer" = [])),
    params(ListApiKeys, PageParams),
    responses((status = 200, body = Page<ApiKeyView>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(identity): State<IdentityState>,
    auth: Authed<perm::ApiKeysRead>,
    page: Pagination,
    ApiQuery(query): ApiQuery<ListApiKeys>,
) -> ApiResult<Page<ApiKeyView>> {
    let role = query
        .role
        .map(|r| r.parse::<Role>())
        .transpose()
        .map_err(|e| ApiError::validation(ValidationErrors::single("role", "invalid", e)))?;
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("api_keys", workspace).filter("role", role.map(Role::as_str));
    let after = page.position::<(i64, String)>(state.cursors(), &scope)?;
    let filter = ApiKeyFilter { role };
    let rows = identity
        .api_keys()
        .list(workspace, &filter, after, page.fetch_limit())
        .await?;
    let page = page.page(state.cursors(), &scope, rows, |k| {
        (k.created_at.as_micros(), k.id.as_str().to_owned())
    });
    Ok(page.map(ApiKeyView::from))
}

async fn load(state: &AppState, principal: &Principal, id: &str) -> ApiResult<ApiKey> {
    let not_found = || ApiError::not_found("API key");
    let id = ApiKeyId::parse(id).map_err(|_| not_found())?;
    state
        .identity()
        .api_keys()
        .get(principal.workspace_id(), &id)
        .await?
        .ok_or_else(not_found)
}

/// Read one key. Another workspace's key is `404`.
#[utoipa::path(
    get,
    path = "/v1/api-keys/{id}",
    operation_id = "getApiKey",
    tag = "api-keys",
    security(("bearer" = [])),
    params(("id" = inline(ApiKeyId), Path, description = "The key id")),
    responses((status = 200, body = ApiKeyView, headers(("ETag" = String))))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authed<perm::ApiKeysRead>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let key = ApiKeyView::from(load(&state, &auth.principal, &id).await?);
    Ok(([(header::ETAG, key.etag().header_value())], Json(key)).into_response())
}

/// Revoke a key; it stops working at once and stays listed as revoked. Honours `If-Match`.
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    operation_id = "revokeApiKey",
    tag = "api-keys",
    security(("bearer" = [])),
    params(
        ("id" = inline(ApiKeyId), Path, description = "The key id"),
        ("If-Match" = Option<String>, Header, description = "Revoke only if the ETag still matches")
    ),
    responses((status = 204, description = "Revoked (or already revoked)"))
)]
pub async fn revoke(
    State(state): State<AppState>,
    State(identity): State<IdentityState>,
    auth: Authed<perm::ApiKeysWrite>,
    if_match: IfMatch,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    // A use of the key can move `last_used_at` between our read and our write; retry a few
    // times unless the client pinned a version with If-Match.
    for _ in 0..3 {
        let key = load(&state, &auth.principal, &id).await?;
        if_match.check(&ApiKeyView::from(key.clone()).etag())?;
        check_can_manage(&auth.principal, key.role, key.permissions())?;
        if key.revoked_at.is_some() {
            return Ok(StatusCode::NO_CONTENT);
        }
        if identity.api_keys().revoke(&key).await?.is_some() {
            tracing::info!(key_id = %key.id, "API key revoked");
            return Ok(StatusCode::NO_CONTENT);
        }
        if if_match.is_present() {
            return Err(ApiError::precondition_failed());
        }
    }
    Err(ApiError::conflict(
        "concurrent_update",
        "the key kept changing; retry the request",
    ))
}
