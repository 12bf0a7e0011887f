//! `GET /v1/workspace`: the caller's workspace.

use axum::Json;
use axum::extract::State;
use pier_auth::Workspace;

use pier_core::{Timestamp, WorkspaceId};
use serde::Serialize;

use crate::AppState;
use crate::extract::{Authed, perm};
use crate::problem::{ApiError, ApiResult};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Workspace, example = json!({"id": "ws_01m8hpqca6yrpxjm9wy9jmw19v", "name": "default",
                          "created_at": "2026-11-30T12:00:00.000000Z"}))]
pub struct WorkspaceView {
    id: WorkspaceId,
    name: String,
    created_at: Timestamp,
}

impl From<Workspace> for WorkspaceView {
    fn from(w: Workspace) -> Self {
        Self {
            id: w.id,
            name: w.name,
            created_at: w.created_at,
        }
    }
}

/// The workspace the credential belongs to.
#[utoipa::path(
    get,
    path = "/v1/workspace",
    operation_id = "getWorkspace",
    tag = "workspace",
    security(("bearer" = [])),
    responses((status = 200, body = WorkspaceView))
)]
pub async fn get_workspace(
    State(state): State<AppState>,
    auth: Authed<perm::WorkspaceRead>,
) -> ApiResult<Json<WorkspaceView>> {
    let workspace = state
        .identity()
        .workspaces()
        .get(auth.principal.workspace_id())
        .await?;
    workspace
        .map(|w| Json(w.into()))
        .ok_or_else(|| ApiError::not_found("workspace"))
}
