//! `/v1/queues`: statistics, pause and resume, and concurrency limits.

use axum::Json;
use axum::extract::{Path, State};
use pier_auth::Principal;
use pier_core::ValidationErrors;
use pier_jobs::{QueueInfo, QueueName};
use serde::Deserialize;

use crate::AppState;
use crate::extract::{ApiJson, Authed, perm};
use crate::pagination::{Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};

/// List the workspace's queues with per-state counts, by name.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "queues",
    security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = Page<QueueInfo>))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Authed<perm::JobsRead>,
    page: Pagination,
) -> ApiResult<Page<QueueInfo>> {
    let workspace = auth.principal.workspace_id();
    let scope = format!("queues|{workspace}");
    let after = page.position::<String>(state.cursors(), &scope)?;
    let rows: Vec<QueueInfo> = state
        .jobs()
        .queues(workspace)
        .await?
        .into_iter()
        .filter(|q| after.as_ref().is_none_or(|a| q.name.as_str() > a.as_str()))
        .take(page.fetch_limit() as usize)
        .collect();
    Ok(page.page(state.cursors(), &scope, rows, |q| q.name.clone()))
}

fn queue_name(name: &str) -> ApiResult<QueueName> {
    QueueName::parse(name)
        .map_err(|e| ApiError::validation(ValidationErrors::single("name", "invalid", e)))
}

async fn show(
    state: &AppState,
    principal: &Principal,
    queue: &QueueName,
) -> ApiResult<Json<QueueInfo>> {
    let queues = state.jobs().queues(principal.workspace_id()).await?;
    queues
        .into_iter()
        .find(|q| q.name == queue.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::not_found("queue"))
}

/// Stop handing out jobs from a queue; running jobs finish.
#[utoipa::path(
    post,
    path = "/v1/queues/{name}/pause",
    tag = "queues",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The queue")),
    responses((status = 200, body = QueueInfo))
)]
pub async fn pause(
    State(state): State<AppState>,
    auth: Authed<perm::JobsWrite>,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueInfo>> {
    let queue = queue_name(&name)?;
    state
        .jobs()
        .set_paused(auth.principal.workspace_id(), &queue, true)
        .await?;
    show(&state, &auth.principal, &queue).await
}

/// Hand out jobs from a paused queue again.
#[utoipa::path(
    post,
    path = "/v1/queues/{name}/resume",
    tag = "queues",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The queue")),
    responses((status = 200, body = QueueInfo))
)]
pub async fn resume(
    State(state): State<AppState>,
    auth: Authed<perm::JobsWrite>,
    Path(name): Path<String>,
) -> ApiResult<Json<QueueInfo>> {
    let queue = queue_name(&name)?;
    state
        .jobs()
        .set_paused(auth.principal.workspace_id(), &queue, false)
        .await?;
    show(&state, &auth.principal, &queue).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuePatch {
    /// The most jobs of the queue running at once across all nodes (1 to 100000); `null` for no
    /// limit.
    concurrency_limit: Option<u32>,
}

/// Change a queue's settings (JSON Merge Patch).
#[utoipa::path(
    patch,
    path = "/v1/queues/{name}",
    tag = "queues",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The queue")),
    request_body(content = QueuePatch, content_type = "application/merge-patch+json"),
    responses((status = 200, body = QueueInfo))
)]
pub async fn update(
    State(state): State<AppState>,
    auth: Authed<perm::JobsWrite>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<QueuePatch>,
) -> ApiResult<Json<QueueInfo>> {
    let queue = queue_name(&name)?;
    if body
        .concurrency_limit
        .is_some_and(|l| !(1..=100_000).contains(&l))
    {
        return Err(ApiError::validation(ValidationErrors::single(
            "concurrency_limit",
            "out_of_range",
            "must be from 1 to 100000, or null",
        )));
    }
    state
        .jobs()
        .set_concurrency_limit(
            auth.principal.workspace_id(),
            &queue,
            body.concurrency_limit,
        )
        .await?;
    show(&state, &auth.principal, &queue).await
}
