//! `/v1/jobs`: enqueue (one or a batch), inspect, cancel and retry jobs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use pier_core::ValidationErrors;
use pier_jobs::{Enqueued, JobFilter, JobId, JobKind, JobSpec, JobState, NewJob, QueueName};
use serde::{Deserialize, Serialize};

use super::JobsState;
use super::views::JobView;
use crate::AppState;
use crate::extract::{ApiJson, ApiQuery, Authed, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::response::located;

/// A job, and whether an enqueue returned an existing one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = enqueued_example)]
pub struct EnqueuedJob {
    #[serde(flatten)]
    job: JobView,
    /// True when an unfinished job with the same `unique_key` was returned instead of a new one.
    existing: bool,
}

fn enqueued_example() -> serde_json::Value {
    let mut job = JobView::example();
    job["existing"] = false.into();
    job
}

impl From<Enqueued> for EnqueuedJob {
    fn from(e: Enqueued) -> Self {
        Self {
            job: e.job.into(),
            existing: e.existing,
        }
    }
}

/// Enqueue a job. `201` when created, `200` when an unfinished job holds its `unique_key`.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "enqueueJob",
    tag = "jobs",
    security(("bearer" = [])),
    request_body = JobSpec,
    responses(
        (status = 201, body = EnqueuedJob, headers(("Location" = String))),
        (status = 200, description = "An unfinished job with this unique_key exists", body = EnqueuedJob)
    )
)]
pub async fn create(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWrite>,
    ApiJson(body): ApiJson<JobSpec>,
) -> ApiResult<Response> {
    let new = body.build().map_err(ApiError::validation)?;
    let enqueued = jobs
        .group_commit()
        .enqueue(auth.principal.workspace_id().clone(), new)
        .await?;
    let status = if enqueued.existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let location = format!("/v1/jobs/{}", enqueued.job.id);
    Ok(located(
        status,
        &location,
        Json(EnqueuedJob::from(enqueued)),
    ))
}

/// How many jobs one batch enqueue may carry.
const BATCH: std::ops::RangeInclusive<usize> = 1..=1000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"jobs": [{"kind": "resize_image", "payload": {"image": 1}},
                                   {"kind": "resize_image", "payload": {"image": 2}}]}))]
pub struct CreateJobs {
    /// Jobs enqueued together in one transaction.
    #[schema(schema_with = batch_schema)]
    jobs: Vec<JobSpec>,
}

fn batch_schema() -> utoipa::openapi::Array {
    utoipa::openapi::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name("JobSpec"))
        .min_items(Some(*BATCH.start()))
        .max_items(Some(*BATCH.end()))
        .build()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"data": [enqueued_example()]}))]
pub struct EnqueuedJobs {
    /// One entry per requested job, in order.
    data: Vec<EnqueuedJob>,
}

/// Enqueue many jobs atomically: all are accepted or none.
#[utoipa::path(
    post,
    path = "/v1/jobs/batch",
    operation_id = "enqueueJobs",
    tag = "jobs",
    security(("bearer" = [])),
    request_body = CreateJobs,
    responses((status = 201, body = EnqueuedJobs))
)]
pub async fn create_batch(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWrite>,
    ApiJson(body): ApiJson<CreateJobs>,
) -> ApiResult<(StatusCode, Json<EnqueuedJobs>)> {
    let mut errors = ValidationErrors::new();
    errors.check_range("jobs", body.jobs.len(), &BATCH);
    let checked: Vec<Option<NewJob>> = body
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| job.check(&format!("jobs[{i}]."), &mut errors))
        .collect();
    errors.into_result().map_err(ApiError::validation)?;
    let new_jobs: Vec<NewJob> = checked.into_iter().flatten().collect();
    let enqueued = jobs
        .store()
        .enqueue(auth.principal.workspace_id(), new_jobs)
        .await?;
    let data = enqueued.into_iter().map(EnqueuedJob::from).collect();
    Ok((StatusCode::CREATED, Json(EnqueuedJobs { data })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListJobs {
    /// Only jobs of this queue.
    #[param(value_type = Option<QueueName>, inline)]
    queue: Option<String>,
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>, inline)]
    state: Option<String>,
    /// Only jobs of this kind.
    #[param(value_type = Option<JobKind>, inline)]
    kind: Option<String>,
}

/// List jobs, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "listJobs",
    tag = "jobs",
    security(("bearer" = [])),
    params(ListJobs, PageParams),
    responses((status = 200, body = Page<JobView>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsRead>,
    page: Pagination,
    ApiQuery(query): ApiQuery<ListJobs>,
) -> ApiResult<Page<JobView>> {
    let mut errors = ValidationErrors::new();
    let filter = JobFilter {
        queue: query
            .queue
            .as_deref()
            .and_then(|q| errors.check("queue", "invalid", QueueName::parse(q))),
        state: query
            .state
            .as_deref()
            .and_then(|s| errors.check("state", "invalid", s.parse::<JobState>())),
        kind: query
            .kind
            .as_deref()
            .and_then(|k| errors.check("kind", "invalid", JobKind::parse(k))),
    };
    errors.into_result().map_err(ApiError::validation)?;
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("jobs", workspace)
        .filter("queue", filter.queue.as_ref().map(QueueName::as_str))
        .filter("state", filter.state.map(JobState::as_str))
        .filter("kind", filter.kind.as_ref().map(JobKind::as_str));
    let before = page.position::<String>(state.cursors(), &scope)?;
    let rows = jobs
        .store()
        .list(workspace, &filter, before, page.fetch_limit())
        .await?;
    let page = page.page(state.cursors(), &scope, rows, |j| j.id.to_string());
    Ok(page.map(JobView::from))
}

pub(crate) fn parse_job_id(id: &str) -> ApiResult<JobId> {
    JobId::parse(id).map_err(|_| ApiError::not_found("job"))
}

/// Read one job.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "getJob",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = inline(JobId), Path, description = "The job id")),
    responses((status = 200, body = JobView))
)]
pub async fn get(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsRead>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let id = parse_job_id(&id)?;
    let job = jobs.store().get(auth.principal.workspace_id(), &id).await?;
    job.map(|j| Json(j.into()))
        .ok_or_else(|| ApiError::not_found("job"))
}

/// Cancel a job: a waiting job is cancelled at once; a running one gets `cancel_requested` and
/// its worker is told on its next heartbeat.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    operation_id = "cancelJob",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = inline(JobId), Path, description = "The job id")),
    responses((status = 200, body = JobView), (status = 409, description = "`invalid_state`: the job already finished", body = crate::Problem))
)]
pub async fn cancel(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWrite>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let id = parse_job_id(&id)?;
    let job = jobs.store().cancel(auth.principal.workspace_id(), &id);
    Ok(Json(job.await?.into()))
}

/// Run a job again now, e.g. a dead letter after fixing its cause.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    operation_id = "retryJob",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = inline(JobId), Path, description = "The job id")),
    responses((status = 200, body = JobView), (status = 409, description = "`invalid_state`: the job is running; `unique_key_taken`: another unfinished job holds its unique key", body = crate::Problem))
)]
pub async fn retry(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWrite>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let id = parse_job_id(&id)?;
    let job = jobs.store().retry(auth.principal.workspace_id(), &id);
    Ok(Json(job.await?.into()))
}
