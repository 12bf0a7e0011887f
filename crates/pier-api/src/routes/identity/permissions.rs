//! `/v1/permissions`: resource-level grants (a key or a user may read, or change, one link,
//! queue or webhook endpoint beyond its role) and `check`, which says what
//! [`pier_auth::ResourceGrants::authorize`] decides for a subject, for debugging.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use pier_auth::{
    Action, ApiKeyId, Decision, GrantFilter, Principal, Relation, Resource, ResourceGrantId,
    ResourceType, UserId, UserStore,
};
use pier_core::ValidationErrors;
use pier_links::LinkId;
use pier_webhooks::EndpointId;
use serde::{Deserialize, Serialize};

use super::IdentityState;
use super::views::GrantView;
use crate::AppState;
use crate::extract::{ApiJson, ApiQuery, Authed, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::response::located;
use crate::routes::jobs::queues::queue_name;

/// The body of `POST /v1/permissions/grants`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"subject": "key_01m8pd91emf07nqws6p476403y", "resource_type": "link",
    "resource_id": "lnk_01m8pd91emf07nqws6p476403z", "relation": "editor"}))]
pub struct CreateGrant {
    /// An API key (`key_…`) or a user (`usr_…`) of the workspace.
    subject: String,
    #[schema(value_type = ResourceType)]
    resource_type: String,
    /// The link's or endpoint's id, or the queue's name; it must exist in the workspace (a
    /// queue exists by its name).
    resource_id: String,
    /// `viewer` reads the resource; `editor` reads and changes it.
    #[schema(value_type = Relation)]
    relation: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListGrants {
    /// Only grants to this subject.
    subject: Option<String>,
    /// Only grants on resources of this type.
    #[param(value_type = Option<ResourceType>, inline)]
    resource_type: Option<String>,
    /// Only grants on this resource.
    resource_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Check {
    #[param(value_type = Action, inline)]
    action: String,
    #[param(value_type = ResourceType, inline)]
    resource_type: String,
    resource_id: String,
    /// Whose access to check (`key_…` or `usr_…`); the caller's own when left out. Checking
    /// another subject needs `permissions:read`; one that is no key or member of the
    /// workspace is denied everything.
    subject: Option<String>,
}

/// What `authorize` decided.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"allowed": true, "decision": "grant",
    "subject": "key_01m8pd91emf07nqws6p476403y", "action": "write", "resource_type": "link",
    "resource_id": "lnk_01m8pd91emf07nqws6p476403z"}))]
pub struct PermissionCheck {
    allowed: bool,
    /// `role` (the subject's role and scopes cover every resource of the type), `grant` (a
    /// grant on this resource does) or `denied`.
    decision: Decision,
    subject: String,
    action: Action,
    resource_type: ResourceType,
    resource_id: String,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(ValidationErrors::single(field, "invalid", message))
}

/// The principal `subject` stands for in the caller's workspace, if it is one of its keys or
/// members.
async fn subject_principal(
    state: &AppState,
    caller: &Principal,
    subject: &str,
) -> ApiResult<Option<Principal>> {
    let workspace = caller.workspace_id();
    if let Ok(id) = ApiKeyId::parse(subject) {
        let key = state.identity().api_keys().get(workspace, &id).await?;
        return Ok(key.map(|key| Principal::ApiKey {
            permissions: key.permissions(),
            key_id: key.id,
            workspace_id: key.workspace_id,
            role: key.role,
        }));
    }
    if let Ok(id) = UserId::parse(subject) {
        let users = UserStore::new(state.db().clone(), state.clock().clone());
        let membership = users
            .memberships(&id)
            .await?
            .into_iter()
            .find(|m| &m.workspace_id == workspace);
        return Ok(membership.map(|m| Principal::User {
            user_id: id,
            workspace_id: m.workspace_id,
            role: m.role,
            permissions: m.role.permissions(),
            via_client: None,
        }));
    }
    Ok(None)
}

/// Checks that the resource exists in the caller's workspace and returns its canonical id.
async fn existing(
    state: &AppState,
    caller: &Principal,
    kind: ResourceType,
    id: &str,
) -> ApiResult<String> {
    let workspace = caller.workspace_id();
    let missing = || invalid("resource_id", format!("no such {kind} in this workspace"));
    match kind {
        ResourceType::Link => {
            let id = LinkId::parse(id).map_err(|_| missing())?;
            state
                .links()
                .store()
                .get(workspace, &id)
                .await?
                .ok_or_else(missing)?;
            Ok(id.to_string())
        }
        ResourceType::WebhookEndpoint => {
            let id = EndpointId::parse(id).map_err(|_| missing())?;
            state
                .webhooks()
                .store()
                .endpoint(workspace, &id)
                .await?
                .ok_or_else(missing)?;
            Ok(id.to_string())
        }
        ResourceType::Queue => Ok(queue_name(id)?.as_str().to_owned()),
    }
}

/// Grant a key or a user access to one resource. The caller must itself hold what it grants;
/// granting what exists already returns it (`200`).
#[utoipa::path(
    post,
    path = "/v1/permissions/grants",
    operation_id = "createResourceGrant",
    tag = "permissions",
    security(("bearer" = [])),
    request_body = CreateGrant,
    responses(
        (status = 201, body = GrantView, headers(("Location" = String))),
        (status = 200, body = GrantView, description = "The grant existed already", headers(("Location" = String))),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    State(identity): State<IdentityState>,
    auth: Authed<perm::PermissionsWrite>,
    ApiJson(body): ApiJson<CreateGrant>,
) -> ApiResult<Response> {
    let caller = &auth.principal;
    let kind = body
        .resource_type
        .parse::<ResourceType>()
        .map_err(|e| invalid("resource_type", e))?;
    let relation = body
        .relation
        .parse::<Relation>()
        .map_err(|e| invalid("relation", e))?;
    let action = match relation {
        Relation::Viewer => Action::Read,
        Relation::Editor => Action::Write,
    };
    let needed = kind.permission(action);
    if !caller.can(needed) {
        return Err(ApiError::forbidden(format!(
            "granting {relation} on a {kind} needs `{needed}`, which this credential lacks"
        )));
    }
    if subject_principal(&state, caller, &body.subject)
        .await?
        .is_none()
    {
        return Err(invalid(
            "subject",
            "must be an API key or a member of this workspace",
        ));
    }
    let resource_id = existing(&state, caller, kind, &body.resource_id).await?;
    let resource = Resource {
        kind,
        id: &resource_id,
    };
    let (grant, created) = identity
        .grants()
        .grant(
            caller.workspace_id(),
            &body.subject,
            resource,
            relation,
            caller.subject(),
        )
        .await?;
    let status = if created {
        tracing::info!(grant_id = %grant.id, "resource grant created");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = format!("/v1/permissions/grants/{}", grant.id);
    Ok(located(status, &location, Json(GrantView::from(grant))))
}

/// List the workspace's resource grants, newest first.
#[utoipa::path(
    get,
    path = "/v1/permissions/grants",
    operation_id = "listResourceGrants",
    tag = "permissions",
    security(("bearer" = [])),
    params(ListGrants, PageParams),
    responses((status = 200, body = Page<GrantView>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(identity): State<IdentityState>,
    auth: Authed<perm::PermissionsRead>,
    page: Pagination,
    ApiQuery(query): ApiQuery<ListGrants>,
) -> ApiResult<Page<GrantView>> {
    let resource_type = query
        .resource_type
        .map(|t| t.parse::<ResourceType>())
        .transpose()
        .map_err(|e| invalid("resource_type", e))?;
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("resource_grants", workspace)
        .filter("subject", query.subject.as_deref())
        .filter("resource_type", resource_type.map(ResourceType::as_str))
        .filter("resource_id", query.resource_id.as_deref());
    let after = page.position::<(i64, String)>(state.cursors(), &scope)?;
    let filter = GrantFilter {
        subject: query.subject,
        resource_type,
        resource_id: query.resource_id,
    };
    let rows = identity
        .grants()
        .list(workspace, &filter, after, page.fetch_limit())
        .await?;
    let page = page.page(state.cursors(), &scope, rows, |g| {
        (g.created_at.as_micros(), g.id.as_str().to_owned())
    });
    Ok(page.map(GrantView::from))
}

fn grant_id(id: &str) -> ApiResult<ResourceGrantId> {
    ResourceGrantId::parse(id).map_err(|_| ApiError::not_found("resource grant"))
}

/// Read one grant. Another workspace's is `404`.
#[utoipa::path(
    get,
    path = "/v1/permissions/grants/{id}",
    operation_id = "getResourceGrant",
    tag = "permissions",
    security(("bearer" = [])),
    params(("id" = inline(ResourceGrantId), Path, description = "The grant id")),
    responses((status = 200, body = GrantView))
)]
pub async fn get(
    State(identity): State<IdentityState>,
    auth: Authed<perm::PermissionsRead>,
    Path(id): Path<String>,
) -> ApiResult<Json<GrantView>> {
    let grant = identity
        .grants()
        .get(auth.principal.workspace_id(), &grant_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("resource grant"))?;
    Ok(Json(grant.into()))
}

/// Take a grant back: it stops applying on the next request.
#[utoipa::path(
    delete,
    path = "/v1/permissions/grants/{id}",
    operation_id = "deleteResourceGrant",
    tag = "permissions",
    security(("bearer" = [])),
    params(("id" = inline(ResourceGrantId), Path, description = "The grant id")),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete(
    State(identity): State<IdentityState>,
    auth: Authed<perm::PermissionsWrite>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = grant_id(&id)?;
    if !identity
        .grants()
        .revoke(auth.principal.workspace_id(), &id)
        .await?
    {
        return Err(ApiError::not_found("resource grant"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Whether a subject (the caller by default) may do an action to one resource, and why: the
/// decision every route on a single link, queue or webhook endpoint makes.
#[utoipa::path(
    get,
    path = "/v1/permissions/check",
    operation_id = "checkPermission",
    tag = "permissions",
    security(("bearer" = [])),
    params(Check),
    responses((status = 200, body = PermissionCheck))
)]
pub async fn check(
    State(state): State<AppState>,
    State(identity): State<IdentityState>,
    auth: Authed<perm::WorkspaceRead>,
    ApiQuery(query): ApiQuery<Check>,
) -> ApiResult<Json<PermissionCheck>> {
    let caller = &auth.principal;
    let action = query
        .action
        .parse::<Action>()
        .map_err(|e| invalid("action", e))?;
    let kind = query
        .resource_type
        .parse::<ResourceType>()
        .map_err(|e| invalid("resource_type", e))?;
    let subject = match query.subject.as_deref() {
        None => Some(caller.clone()),
        Some(subject) if subject == caller.subject() => Some(caller.clone()),
        Some(subject) => {
            if !caller.can(pier_auth::Permission::PermissionsRead) {
                return Err(ApiError::forbidden(
                    "checking another subject needs `permissions:read`",
                ));
            }
            subject_principal(&state, caller, subject).await?
        }
    };
    let resource = Resource {
        kind,
        id: &query.resource_id,
    };
    // A subject that is no key or member of the workspace may do nothing.
    let decision = match &subject {
        Some(principal) => {
            identity
                .grants()
                .authorize(principal, action, resource)
                .await?
        }
        None => Decision::Denied,
    };
    let subject = subject
        .as_ref()
        .map_or(query.subject.unwrap_or_default(), |p| {
            p.subject().to_owned()
        });
    Ok(Json(PermissionCheck {
        allowed: decision.allowed(),
        decision,
        subject,
        action,
        resource_type: kind,
        resource_id: query.resource_id,
    }))
}
