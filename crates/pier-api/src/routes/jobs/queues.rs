//! `/v1/queues`: statistics, pause and resume, and concurrency limits.

use axum::Json;
use axum::extract::{Path, State};
use pier_core::{Patch, ValidationErrors};
use pier_jobs::{CONCURRENCY_LIMIT, QueueName, QueuePatch};
use serde::Deserialize;

use super::JobsState;
use super::views::QueueView;
use crate::AppState;
use crate::extract::{ApiJson, Authed, OnResource, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};

/// List the workspace's queues with per-state counts, by name.
#[utoipa::path(
    get,
    path = "/v1/queues",
    operation_id = "listQueues",
    tag = "queues",
    security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = Page<QueueView>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsRead>,
    page: Pagination,
) -> ApiResult<Page<QueueView>> {
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("queues", workspace);
    let after = page.position::<String>(state.cursors(), &scope)?;
    let rows = jobs
        .store()
        .queues(workspace, after.as_deref(), page.fetch_limit())
        .await?;
    let page = page.page(state.cursors(), &scope, rows, |q| q.name.clone());
    Ok(page.map(QueueView::from))
}

/// A queue name from the path: a tenant's queue, never one of Pier's own.
pub(crate) fn queue_name(name: &str) -> ApiResult<QueueName> {
    QueueName::parse(name)
        .map_err(|e| ApiError::validation(ValidationErrors::single("name", "invalid", e)))
}

async fn apply(
    state: &AppState,
    auth: &OnResource<perm::JobsWrite>,
    name: &str,
    patch: QueuePatch,
) -> ApiResult<Json<QueueView>> {
    let queue = queue_name(name)?;
    let info = state
        .jobs()
        .store()
        .update_queue(auth.principal.workspace_id(), &queue, patch)
        .await?;
    Ok(Json(info.into()))
}

/// Stop handing out jobs from a queue; running jobs finish.
#[utoipa::path(
    post,
    path = "/v1/queues/{name}/pause",
    operation_id = "pauseQueue",
    tag = "queues",
    security(("bearer" = [])),
    params(("name" = inline(QueueName), Path, description = "The queue")),
    responses((status = 200, body = QueueView))
)]
pub async fn pause(
    State(state): State<AppState>,
    auth: OnResource<perm::JobsWrite>,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueView>> {
    apply(&state, &auth, &name, QueuePatch::paused(true)).await
}

/// Hand out jobs from a paused queue again.
#[utoipa::path(
    post,
    path = "/v1/queues/{name}/resume",
    operation_id = "resumeQueue",
    tag = "queues",
    security(("bearer" = [])),
    params(("name" = inline(QueueName), Path, description = "The queue")),
    responses((status = 200, body = QueueView))
)]
pub async fn resume(
    State(state): State<AppState>,
    auth: OnResource<perm::JobsWrite>,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueView>> {
    apply(&state, &auth, &name, QueuePatch::paused(false)).await
}

/// A JSON Merge Patch of a queue's settings: a missing member changes nothing, `null` resets it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"concurrency_limit": 5}))]
pub struct QueuePatchBody {
    /// Pause (`true`) or resume (`false`) the queue.
    #[serde(default)]
    paused: Option<bool>,
    #[serde(default, deserialize_with = "pier_core::patch::whole")]
    #[schema(schema_with = concurrency_limit)]
    concurrency_limit: Patch<u32>,
}

fn concurrency_limit() -> utoipa::openapi::Object {
    pier_core::schema::nullable(
        pier_core::schema::integer(&CONCURRENCY_LIMIT).description(Some(
            "The most jobs of the queue running at once across all nodes; `null` for no limit",
        )),
    )
}

/// Change a queue's settings (JSON Merge Patch: `{}` changes nothing, `null` removes the limit).
#[utoipa::path(
    patch,
    path = "/v1/queues/{name}",
    operation_id = "updateQueue",
    tag = "queues",
    security(("bearer" = [])),
    params(("name" = inline(QueueName), Path, description = "The queue")),
    request_body(content = QueuePatchBody, content_type = "application/merge-patch+json"),
    responses((status = 200, body = QueueView))
)]
pub async fn update(
    State(state): State<AppState>,
    auth: OnResource<perm::JobsWrite>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<QueuePatchBody>,
) -> ApiResult<Json<QueueView>> {
    let patch =
        QueuePatch::new(body.paused, body.concurrency_limit).map_err(ApiError::validation)?;
    apply(&state, &auth, &name, patch).await
}
