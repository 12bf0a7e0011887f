//! `/v1/workflows`: create a workflow of jobs, read it with its steps, list and cancel.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use pier_jobs::{WorkflowId, WorkflowSpec};

use super::JobsState;
use super::views::{WorkflowSummaryView, WorkflowView};
use crate::AppState;
use crate::extract::{ApiJson, Authed, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::response::located;

fn parse_workflow_id(id: &str) -> ApiResult<WorkflowId> {
    WorkflowId::parse(id).map_err(|_| ApiError::not_found("workflow"))
}

/// Create a workflow: every step's job in one transaction. Steps without dependencies are
/// available at once; the others wait (`pending`) until each step they depend on completed,
/// and then receive those steps' results as `inputs`. The graph is checked first: unknown or
/// repeated step names, cycles and too many steps are `422`, naming the step.
#[utoipa::path(
    post,
    path = "/v1/workflows",
    operation_id = "createWorkflow",
    tag = "workflows",
    security(("bearer" = [])),
    request_body = WorkflowSpec,
    responses((status = 201, body = WorkflowView, headers(("Location" = String))))
)]
pub async fn create(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWrite>,
    ApiJson(body): ApiJson<WorkflowSpec>,
) -> ApiResult<Response> {
    let new = body
        .build(jobs.max_workflow_steps())
        .map_err(ApiError::validation)?;
    let workflow = jobs
        .store()
        .create_workflow(auth.principal.workspace_id(), new)
        .await?;
    let location = format!("/v1/workflows/{}", workflow.id);
    Ok(located(
        StatusCode::CREATED,
        &location,
        Json(WorkflowView::from(workflow)),
    ))
}

/// List workflows, newest first (without their steps).
#[utoipa::path(
    get,
    path = "/v1/workflows",
    operation_id = "listWorkflows",
    tag = "workflows",
    security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = Page<WorkflowSummaryView>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsRead>,
    page: Pagination,
) -> ApiResult<Page<WorkflowSummaryView>> {
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("workflows", workspace);
    let before = page.position::<String>(state.cursors(), &scope)?;
    let rows = jobs
        .store()
        .workflows(workspace, before, page.fetch_limit())
        .await?;
    let page = page.page(state.cursors(), &scope, rows, |w| w.id.to_string());
    Ok(page.map(WorkflowSummaryView::from))
}

/// Read a workflow and the state of each of its steps (and their compensations).
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}",
    operation_id = "getWorkflow",
    tag = "workflows",
    security(("bearer" = [])),
    params(("id" = inline(WorkflowId), Path, description = "The workflow id")),
    responses((status = 200, body = WorkflowView))
)]
pub async fn get(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsRead>,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkflowView>> {
    let id = parse_workflow_id(&id)?;
    let workflow = jobs
        .store()
        .workflow(auth.principal.workspace_id(), &id)
        .await?;
    workflow
        .map(|w| Json(w.into()))
        .ok_or_else(|| ApiError::not_found("workflow"))
}

/// Cancel a running workflow: its waiting steps are cancelled, its running ones are asked to
/// stop, and no further step runs. Cancelling a cancelled workflow changes nothing.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/cancel",
    operation_id = "cancelWorkflow",
    tag = "workflows",
    security(("bearer" = [])),
    params(("id" = inline(WorkflowId), Path, description = "The workflow id")),
    responses((status = 200, body = WorkflowView), (status = 409, description = "`invalid_state`: the workflow finished, or is compensating", body = crate::Problem))
)]
pub async fn cancel(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWrite>,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkflowView>> {
    let id = parse_workflow_id(&id)?;
    let workflow = jobs
        .store()
        .cancel_workflow(auth.principal.workspace_id(), &id)
        .await?;
    Ok(Json(workflow.into()))
}
