//! `/v1/jobs`: enqueue (one or a batch), inspect, cancel and retry jobs.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_core::{Timestamp, ValidationErrors};
use pier_jobs::{
    Enqueued, Job, JobFilter, JobId, JobKind, JobState, NewJob, QueueName, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::extract::{ApiJson, ApiQuery, Authed, perm};
use crate::pagination::{Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};

/// Retry timing for one job; both default to the queue-wide policy (1 s and 1 h).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffBody {
    /// Delay after the first failure, in seconds (doubling after each further failure).
    base_seconds: Option<u32>,
    /// The longest delay, in seconds.
    max_seconds: Option<u32>,
}

/// A job to enqueue. Only `kind` is required.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// Defaults to `default`.
    queue: Option<String>,
    /// What the job does; workers dispatch on it.
    kind: String,
    /// Any JSON; defaults to `{}`.
    #[schema(value_type = Option<Object>)]
    payload: Option<serde_json::Value>,
    /// Not before this time; omit to run now.
    run_at: Option<Timestamp>,
    /// Smaller runs first; default 0, from -1000000 to 1000000.
    priority: Option<i32>,
    /// Attempts before the job is discarded (dead-lettered); default 20, at most 1000.
    max_attempts: Option<u32>,
    /// While an unfinished job has this key, enqueuing another returns it instead.
    unique_key: Option<String>,
    backoff: Option<BackoffBody>,
    /// How long a claim holds the job without a heartbeat; default 30, 1 to 3600.
    lease_seconds: Option<u32>,
}

impl CreateJob {
    fn validate(self, prefix: &str, errors: &mut ValidationErrors) -> Option<NewJob> {
        let field = |name: &str| format!("{prefix}{name}");
        let queue = match self.queue {
            None => Some(QueueName::default_queue()),
            Some(q) => errors.check(&field("queue"), "invalid", QueueName::parse(&q)),
        };
        let kind = errors.check(&field("kind"), "invalid", JobKind::parse(&self.kind));
        let priority = self.priority.unwrap_or(0);
        if !(-1_000_000..=1_000_000).contains(&priority) {
            errors.add(
                &field("priority"),
                "out_of_range",
                "must be from -1000000 to 1000000",
            );
        }
        let mut retry = RetryPolicy::default();
        if let Some(max) = self.max_attempts {
            if (1..=1000).contains(&max) {
                retry.max_attempts = max;
            } else {
                errors.add(
                    &field("max_attempts"),
                    "out_of_range",
                    "must be from 1 to 1000",
                );
            }
        }
        if let Some(backoff) = self.backoff {
            if let Some(base) = backoff.base_seconds {
                retry.backoff_base = Duration::from_secs(base.into());
            }
            if let Some(max) = backoff.max_seconds {
                retry.backoff_max = Duration::from_secs(max.into());
            }
            if retry.backoff_base.is_zero() || retry.backoff_base > retry.backoff_max {
                errors.add(
                    &field("backoff"),
                    "invalid",
                    "base_seconds must be at least 1 and at most max_seconds",
                );
            }
        }
        if let Some(key) = &self.unique_key
            && !(1..=255).contains(&key.len())
        {
            errors.add(&field("unique_key"), "invalid", "must be 1 to 255 bytes");
        }
        let lease = self.lease_seconds.unwrap_or(30);
        if !(1..=3600).contains(&lease) {
            errors.add(
                &field("lease_seconds"),
                "out_of_range",
                "must be from 1 to 3600",
            );
        }
        Some(NewJob {
            queue: queue?,
            kind: kind?,
            payload: self.payload.unwrap_or_else(|| serde_json::json!({})),
            run_at: self.run_at,
            priority,
            retry,
            unique_key: self.unique_key,
            lease: Duration::from_secs(lease.into()),
        })
    }
}

/// A job, and whether an enqueue returned an existing one.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnqueuedJob {
    #[serde(flatten)]
    job: Job,
    /// True when an unfinished job with the same `unique_key` was returned instead of a new one.
    existing: bool,
}

impl From<Enqueued> for EnqueuedJob {
    fn from(e: Enqueued) -> Self {
        Self {
            job: e.job,
            existing: e.existing,
        }
    }
}

/// Enqueue a job. `201` when created, `200` when an unfinished job holds its `unique_key`.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    security(("bearer" = [])),
    request_body = CreateJob,
    responses(
        (status = 201, body = EnqueuedJob, headers(("Location" = String))),
        (status = 200, description = "An unfinished job with this unique_key exists", body = EnqueuedJob)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    auth: Authed<perm::JobsWrite>,
    ApiJson(body): ApiJson<CreateJob>,
) -> ApiResult<Response> {
    let mut errors = ValidationErrors::new();
    let new = body.validate("", &mut errors);
    errors.into_result().map_err(ApiError::validation)?;
    let new = new.ok_or_else(|| {
        ApiError::validation(ValidationErrors::single("body", "invalid", "invalid job"))
    })?;
    let mut enqueued = state
        .jobs()
        .enqueue(auth.principal.workspace_id(), vec![new])
        .await?;
    let enqueued = enqueued
        .pop()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("enqueue returned nothing")))?;
    let status = if enqueued.existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let location = format!("/v1/jobs/{}", enqueued.job.id);
    let mut response = (status, Json(EnqueuedJob::from(enqueued))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobs {
    /// 1 to 1000 jobs, enqueued together in one transaction.
    jobs: Vec<CreateJob>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnqueuedJobs {
    /// One entry per requested job, in order.
    data: Vec<EnqueuedJob>,
}

/// Enqueue up to 1000 jobs atomically: all are accepted or none.
#[utoipa::path(
    post,
    path = "/v1/jobs/batch",
    tag = "jobs",
    security(("bearer" = [])),
    request_body = CreateJobs,
    responses((status = 201, body = EnqueuedJobs))
)]
pub async fn create_batch(
    State(state): State<AppState>,
    auth: Authed<perm::JobsWrite>,
    ApiJson(body): ApiJson<CreateJobs>,
) -> ApiResult<(StatusCode, Json<EnqueuedJobs>)> {
    let mut errors = ValidationErrors::new();
    if !(1..=1000).contains(&body.jobs.len()) {
        errors.add("jobs", "out_of_range", "send 1 to 1000 jobs");
    }
    let jobs: Vec<Option<NewJob>> = body
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| job.validate(&format!("jobs[{i}]."), &mut errors))
        .collect();
    errors.into_result().map_err(ApiError::validation)?;
    let jobs: Vec<NewJob> = jobs.into_iter().flatten().collect();
    let enqueued = state
        .jobs()
        .enqueue(auth.principal.workspace_id(), jobs)
        .await?;
    let data = enqueued.into_iter().map(EnqueuedJob::from).collect();
    Ok((StatusCode::CREATED, Json(EnqueuedJobs { data })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListJobs {
    /// Only jobs of this queue.
    queue: Option<String>,
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// Only jobs of this kind.
    kind: Option<String>,
}

/// List jobs, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    security(("bearer" = [])),
    params(ListJobs, PageParams),
    responses((status = 200, body = Page<Job>))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Authed<perm::JobsRead>,
    page: Pagination,
    ApiQuery(query): ApiQuery<ListJobs>,
) -> ApiResult<Page<Job>> {
    let mut errors = ValidationErrors::new();
    let job_state = query
        .state
        .as_deref()
        .and_then(|s| errors.check("state", "invalid", s.parse::<JobState>()));
    errors.into_result().map_err(ApiError::validation)?;
    let filter = JobFilter {
        queue: query.queue,
        state: job_state,
        kind: query.kind,
    };
    let workspace = auth.principal.workspace_id();
    let scope = format!(
        "jobs|{workspace}|queue={}|state={}|kind={}",
        filter.queue.as_deref().unwrap_or_default(),
        filter.state.map_or("", JobState::as_str),
        filter.kind.as_deref().unwrap_or_default()
    );
    let before = page.position::<String>(state.cursors(), &scope)?;
    let rows = state
        .jobs()
        .list(workspace, &filter, before, page.fetch_limit())
        .await?;
    Ok(page.page(state.cursors(), &scope, rows, |j| j.id.to_string()))
}

pub(crate) fn parse_job_id(id: &str) -> ApiResult<JobId> {
    JobId::parse(id).map_err(|_| ApiError::not_found("job"))
}

/// Read one job.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id, `job_…`")),
    responses((status = 200, body = Job))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authed<perm::JobsRead>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    let id = parse_job_id(&id)?;
    let job = state.jobs().get(auth.principal.workspace_id(), &id).await?;
    job.map(Json).ok_or_else(|| ApiError::not_found("job"))
}

/// Cancel a job: a waiting job is cancelled at once; a running one gets `cancel_requested` and
/// its worker is told on its next heartbeat.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id, `job_…`")),
    responses((status = 200, body = Job), (status = 409, description = "The job already finished", body = crate::Problem))
)]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Authed<perm::JobsWrite>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    let id = parse_job_id(&id)?;
    Ok(Json(
        state
            .jobs()
            .cancel(auth.principal.workspace_id(), &id)
            .await?,
    ))
}

/// Run a job again now, e.g. a dead letter after fixing its cause.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id, `job_…`")),
    responses((status = 200, body = Job), (status = 409, description = "The job is running, or its unique key is taken", body = crate::Problem))
)]
pub async fn retry(
    State(state): State<AppState>,
    auth: Authed<perm::JobsWrite>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    let id = parse_job_id(&id)?;
    Ok(Json(
        state
            .jobs()
            .retry(auth.principal.workspace_id(), &id)
            .await?,
    ))
}
