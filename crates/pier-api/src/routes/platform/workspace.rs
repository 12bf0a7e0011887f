//! `GET /v1/workspace`: the caller's workspace.

use axum::Json;
use axum::extract::State;
use pier_auth::Workspace;

use crate::AppState;
use crate::extract::{Authed, perm};
use crate::problem::{ApiError, ApiResult};

/// The workspace the credential belongs to.
#[utoipa::path(
    get,
    path = "/v1/workspace",
    operation_id = "getWorkspace",
    tag = "workspace",
    security(("bearer" = [])),
    responses((status = 200, body = Workspace))
)]
pub async fn get_workspace(
    State(state): State<AppState>,
    auth: Authed<perm::WorkspaceRead>,
) -> ApiResult<Json<Workspace>> {
    let workspace = state
        .identity()
        .workspaces()
        .get(auth.principal.workspace_id())
        .await?;
    workspace
        .map(Json)
        .ok_or_else(|| ApiError::not_found("workspace"))
}
