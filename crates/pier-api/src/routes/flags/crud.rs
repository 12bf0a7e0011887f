//! `/v1/flags`: create, list, read, replace, change (merge patch of the definition) and delete
//! flags. A flag is addressed by its key; its `definition` is flagd's JSON for one flag.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_core::{Timestamp, ValidationErrors};
use pier_flags::{Flag, FlagKey, StoredFlag};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{AdditionalProperties, Object, ObjectBuilder, SchemaType, Type};

use super::FlagsState;
use crate::AppState;
use crate::extract::{ApiJson, Authed, ETag, IfMatch, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::response::located;

/// A flag as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "key": "new-checkout",
    "definition": {"state": "ENABLED", "variants": {"on": true, "off": false},
                   "defaultVariant": "off",
                   "targeting": {"fractional": [["on", 10], ["off", 90]]}},
    "version": 3, "created_by": "key_01m8hpqca6yrpxjm9wy9jmw19v",
    "created_at": "2026-12-08T09:00:00.000000Z", "updated_at": "2026-12-08T10:00:00.000000Z"}))]
pub struct FlagView {
    #[schema(value_type = FlagKey)]
    key: String,
    #[schema(schema_with = definition)]
    definition: Value,
    /// Moves on every change.
    version: i64,
    /// The API key or user that created the flag.
    created_by: String,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl FlagView {
    fn new(stored: &StoredFlag) -> Self {
        Self {
            key: stored.flag.key().to_string(),
            definition: stored.flag.definition(),
            version: stored.version,
            created_by: stored.created_by.clone(),
            created_at: stored.created_at,
            updated_at: stored.updated_at,
        }
    }
}

/// flagd's definition of one flag; what it may hold is checked beyond this schema (operators,
/// variant names, nesting), with the JSON path of each fault.
pub(super) fn definition() -> Object {
    let any_object = || ObjectBuilder::new().schema_type(Type::Object);
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "state",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["ENABLED", "DISABLED"])),
        )
        .property(
            "variants",
            any_object().min_properties(Some(1)).description(Some(
                "Variant name: value; the values all booleans, strings, numbers or objects",
            )),
        )
        .property(
            "defaultVariant",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .description(Some(
                    "One of the variants' names; null or left out: the caller's default",
                )),
        )
        .property(
            "targeting",
            any_object().description(Some(
                "JSON Logic with flagd's fractional, sem_ver, starts_with and ends_with, nested \
                 at most 64 deep",
            )),
        )
        .property(
            "metadata",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
                .additional_properties(Some(ObjectBuilder::new().schema_type(
                    SchemaType::from_iter([Type::String, Type::Number, Type::Boolean]),
                )))
                .description(Some("Strings, numbers and booleans")),
        )
        .required("state")
        .required("variants")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            "A flag in flagd's format (https://flagd.dev/reference/flag-definitions/)",
        ))
        .build()
}

/// The body of `POST /v1/flags`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"key": "new-checkout",
    "definition": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}))]
pub struct CreateFlag {
    #[schema(value_type = FlagKey)]
    key: String,
    #[schema(schema_with = definition)]
    definition: Value,
}

/// The body of `PUT /v1/flags/{key}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "definition": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"}}))]
pub struct ReplaceFlag {
    #[schema(schema_with = definition)]
    definition: Value,
}

/// The body of `PATCH /v1/flags/{key}`: a JSON Merge Patch of the definition.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"definition": {"state": "DISABLED"}}))]
pub struct UpdateFlag {
    /// Merged into the current definition (RFC 7396): members set replace, `null` removes.
    definition: Map<String, Value>,
}

fn key_in(field: &str, text: &str) -> ApiResult<FlagKey> {
    FlagKey::parse(text).map_err(|message| {
        ApiError::validation(ValidationErrors::single(field, "invalid", message))
    })
}

/// A flag definition from a request body, checked, faults named under `definition`.
fn parse(key: FlagKey, definition: &Value) -> ApiResult<Flag> {
    Flag::parse(key, definition, "definition", &Map::new()).map_err(ApiError::validation)
}

fn etag(stored: &StoredFlag) -> ETag {
    ETag::of(&(stored.flag.key().as_str(), stored.version))
}

fn respond(status: StatusCode, stored: &StoredFlag) -> Response {
    let tag = etag(stored).header_value();
    let mut response = (status, Json(FlagView::new(stored))).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    response
}

/// The caller's flag `key`, or 404 (another workspace's included).
pub(super) async fn load(
    flags: &FlagsState,
    auth_workspace: &pier_core::WorkspaceId,
    key: &str,
) -> ApiResult<StoredFlag> {
    let not_found = || ApiError::not_found("flag");
    let key = FlagKey::parse(key).map_err(|_| not_found())?;
    flags
        .store()
        .get(auth_workspace, &key)
        .await?
        .ok_or_else(not_found)
}

/// The caller's flag `key`, unless `If-Match` names another version (412).
async fn load_unchanged(
    flags: &FlagsState,
    workspace: &pier_core::WorkspaceId,
    if_match: &IfMatch,
    key: &str,
) -> ApiResult<StoredFlag> {
    let seen = load(flags, workspace, key).await?;
    if_match.check(&etag(&seen))?;
    Ok(seen)
}

fn stale(if_match: &IfMatch) -> ApiError {
    if if_match.is_present() {
        ApiError::precondition_failed()
    } else {
        ApiError::conflict(
            "concurrent_update",
            "the flag changed while this request ran; retry it",
        )
    }
}

/// Create a flag.
#[utoipa::path(
    post,
    path = "/v1/flags",
    operation_id = "createFlag",
    tag = "flags",
    security(("bearer" = [])),
    request_body = CreateFlag,
    responses(
        (status = 201, body = FlagView, headers(("Location" = String), ("ETag" = String))),
        (status = 409, description = "`flag_exists`: the workspace has a flag with this key", body = crate::Problem)
    )
)]
pub async fn create(
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsWrite>,
    ApiJson(body): ApiJson<CreateFlag>,
) -> ApiResult<Response> {
    let flag = parse(key_in("key", &body.key)?, &body.definition)?;
    let principal = &auth.principal;
    let stored = flags
        .store()
        .create(principal.workspace_id(), principal.subject(), flag)
        .await?;
    tracing::info!(flag = %stored.flag.key(), "flag created");
    let location = format!("/v1/flags/{}", stored.flag.key());
    Ok(located(
        StatusCode::CREATED,
        &location,
        respond(StatusCode::CREATED, &stored),
    ))
}

/// List flags, by key.
#[utoipa::path(
    get,
    path = "/v1/flags",
    operation_id = "listFlags",
    tag = "flags",
    security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = Page<FlagView>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsRead>,
    page: Pagination,
) -> ApiResult<Page<FlagView>> {
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("flags", workspace);
    let after = page.position::<String>(state.cursors(), &scope)?;
    let rows = flags
        .store()
        .list(workspace, after, page.fetch_limit())
        .await?;
    let views = rows.iter().map(FlagView::new).collect();
    Ok(page.page(state.cursors(), &scope, views, |v: &FlagView| v.key.clone()))
}

/// Read a flag.
#[utoipa::path(
    get,
    path = "/v1/flags/{key}",
    operation_id = "getFlag",
    tag = "flags",
    security(("bearer" = [])),
    params(("key" = inline(FlagKey), Path, description = "The flag's key")),
    responses((status = 200, body = FlagView, headers(("ETag" = String))))
)]
pub async fn get(
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsRead>,
    Path(key): Path<String>,
) -> ApiResult<Response> {
    let stored = load(&flags, auth.principal.workspace_id(), &key).await?;
    Ok(respond(StatusCode::OK, &stored))
}

/// Replace a flag's definition. Honours `If-Match`.
#[utoipa::path(
    put,
    path = "/v1/flags/{key}",
    operation_id = "replaceFlag",
    tag = "flags",
    security(("bearer" = [])),
    request_body = ReplaceFlag,
    params(
        ("key" = inline(FlagKey), Path, description = "The flag's key"),
        ("If-Match" = Option<String>, Header, description = "Replace only if the ETag still matches")
    ),
    responses(
        (status = 200, body = FlagView, headers(("ETag" = String))),
        (status = 412, description = "`precondition_failed`: the flag changed since the ETag was read", body = crate::Problem)
    )
)]
pub async fn replace(
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsWrite>,
    if_match: IfMatch,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<ReplaceFlag>,
) -> ApiResult<Response> {
    let principal = &auth.principal;
    let seen = load_unchanged(&flags, principal.workspace_id(), &if_match, &key).await?;
    let flag = parse(seen.flag.key().clone(), &body.definition)?;
    write(&flags, principal, &if_match, &seen, flag).await
}

/// Change a flag's definition by JSON Merge Patch. Honours `If-Match`.
#[utoipa::path(
    patch,
    path = "/v1/flags/{key}",
    operation_id = "updateFlag",
    tag = "flags",
    security(("bearer" = [])),
    request_body(content = UpdateFlag, content_type = "application/merge-patch+json"),
    params(
        ("key" = inline(FlagKey), Path, description = "The flag's key"),
        ("If-Match" = Option<String>, Header, description = "Change only if the ETag still matches")
    ),
    responses(
        (status = 200, body = FlagView, headers(("ETag" = String))),
        (status = 412, description = "`precondition_failed`: the flag changed since the ETag was read", body = crate::Problem)
    )
)]
pub async fn update(
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsWrite>,
    if_match: IfMatch,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<UpdateFlag>,
) -> ApiResult<Response> {
    let principal = &auth.principal;
    let seen = load_unchanged(&flags, principal.workspace_id(), &if_match, &key).await?;
    let mut definition = seen.flag.definition();
    pier_flags::audit::apply(&mut definition, Value::Object(body.definition));
    let flag = parse(seen.flag.key().clone(), &definition)?;
    write(&flags, principal, &if_match, &seen, flag).await
}

async fn write(
    flags: &FlagsState,
    principal: &pier_auth::Principal,
    if_match: &IfMatch,
    seen: &StoredFlag,
    flag: Flag,
) -> ApiResult<Response> {
    let workspace = principal.workspace_id();
    match flags
        .store()
        .replace(workspace, principal.subject(), seen, flag)
        .await?
    {
        Some(stored) => {
            tracing::info!(flag = %stored.flag.key(), version = stored.version, "flag changed");
            Ok(respond(StatusCode::OK, &stored))
        }
        None => Err(stale(if_match)),
    }
}

/// Delete a flag; evaluations of its key answer `FLAG_NOT_FOUND` at once. Its audit trail
/// stays. Honours `If-Match`.
#[utoipa::path(
    delete,
    path = "/v1/flags/{key}",
    operation_id = "deleteFlag",
    tag = "flags",
    security(("bearer" = [])),
    params(
        ("key" = inline(FlagKey), Path, description = "The flag's key"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the ETag still matches")
    ),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete(
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsWrite>,
    if_match: IfMatch,
    Path(key): Path<String>,
) -> ApiResult<StatusCode> {
    let principal = &auth.principal;
    let seen = load_unchanged(&flags, principal.workspace_id(), &if_match, &key).await?;
    if flags
        .store()
        .delete(principal.workspace_id(), principal.subject(), &seen)
        .await?
    {
        tracing::info!(flag = %seen.flag.key(), "flag deleted");
        return Ok(StatusCode::NO_CONTENT);
    }
    Err(stale(&if_match))
}
