//! The external-worker protocol: claim jobs with a lease, then heartbeat, complete or fail them
//! presenting the lease token. A stale token (the lease expired and the job was rescued) is `409`
//! and changes nothing.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use pier_core::{Timestamp, ValidationErrors};
use pier_jobs::{ClaimTarget, ClaimedJob, JobError, JobState, QueueName};
use serde::{Deserialize, Serialize};

use super::jobs::parse_job_id;
use crate::AppState;
use crate::extract::{ApiJson, Authed, perm};
use crate::problem::{ApiError, ApiResult};

const POLL_FALLBACK: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// How many jobs to take, 1 to 1000 (default 1).
    max: Option<u32>,
    /// The lease length, 1 to 3600 seconds (default: each job's own, 30 unless set).
    lease_seconds: Option<u32>,
    /// Wait up to this many seconds (0 to 30) for a job when none is available.
    wait_seconds: Option<u32>,
    /// Shown on claimed jobs, to tell workers apart; up to 128 characters.
    worker_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Claimed {
    jobs: Vec<ClaimedJob>,
}

/// Claim jobs from a queue of the caller's workspace, waiting up to `wait_seconds` for one.
#[utoipa::path(
    post,
    path = "/v1/queues/{name}/claim",
    tag = "workers",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The queue")),
    request_body = Claim,
    responses((status = 200, body = Claimed))
)]
pub async fn claim(
    State(state): State<AppState>,
    auth: Authed<perm::JobsWork>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Claim>,
) -> ApiResult<Json<Claimed>> {
    let mut errors = ValidationErrors::new();
    let queue = errors.check("name", "invalid", QueueName::parse(&name));
    let max = body.max.unwrap_or(1);
    if !(1..=1000).contains(&max) {
        errors.add("max", "out_of_range", "must be from 1 to 1000");
    }
    let lease = body.lease_seconds.map(|s| Duration::from_secs(s.into()));
    if body.lease_seconds.is_some_and(|s| !(1..=3600).contains(&s)) {
        errors.add("lease_seconds", "out_of_range", "must be from 1 to 3600");
    }
    let wait = body.wait_seconds.unwrap_or(0);
    if wait > 30 {
        errors.add("wait_seconds", "out_of_range", "must be from 0 to 30");
    }
    if body
        .worker_id
        .as_ref()
        .is_some_and(|w| w.chars().count() > 128)
    {
        errors.add("worker_id", "too_long", "must be at most 128 characters");
    }
    errors.into_result().map_err(ApiError::validation)?;
    let Some(queue) = queue else {
        return Err(ApiError::not_found("queue"));
    };

    let jobs = state.jobs();
    let mut wake = jobs.notifier().subscribe(queue.as_str());
    let target = ClaimTarget {
        workspace: Some(auth.principal.workspace_id().clone()),
        queue,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.into());
    loop {
        wake.borrow_and_update();
        let claimed = jobs
            .claim(&target, max, lease, body.worker_id.as_deref())
            .await?;
        if !claimed.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(Claimed { jobs: claimed }));
        }
        tokio::select! {
            _ = wake.changed() => {}
            () = tokio::time::sleep(POLL_FALLBACK) => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    lease_token: String,
    /// Extend by this many seconds from now (default: the job's lease length).
    lease_seconds: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeartbeatReply {
    lease_expires_at: Timestamp,
    /// Stop working on the job and report it with `fail`; it will be cancelled.
    cancel_requested: bool,
}

fn stale() -> ApiError {
    ApiError::from(JobError::StaleLease)
}

/// Extend a lease.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/heartbeat",
    tag = "workers",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id, `job_…`")),
    request_body = HeartbeatBody,
    responses((status = 200, body = HeartbeatReply), (status = 409, description = "Stale lease token", body = crate::Problem))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    auth: Authed<perm::JobsWork>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> ApiResult<Json<HeartbeatReply>> {
    let id = parse_job_id(&id)?;
    if body.lease_seconds.is_some_and(|s| !(1..=3600).contains(&s)) {
        return Err(ApiError::validation(ValidationErrors::single(
            "lease_seconds",
            "out_of_range",
            "must be from 1 to 3600",
        )));
    }
    let lease = body.lease_seconds.map(|s| Duration::from_secs(s.into()));
    let workspace = auth.principal.workspace_id();
    match state
        .jobs()
        .heartbeat(workspace, &id, &body.lease_token, lease)
        .await?
    {
        Some(beat) => Ok(Json(HeartbeatReply {
            lease_expires_at: beat.lease_expires_at,
            cancel_requested: beat.cancel_requested,
        })),
        None if state.jobs().get(workspace, &id).await?.is_none() => {
            Err(ApiError::not_found("job"))
        }
        None => Err(stale()),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    lease_token: String,
}

/// Report success.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/complete",
    tag = "workers",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id, `job_…`")),
    request_body = CompleteBody,
    responses((status = 204, description = "Completed"), (status = 409, description = "Stale lease token", body = crate::Problem))
)]
pub async fn complete(
    State(state): State<AppState>,
    auth: Authed<perm::JobsWork>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> ApiResult<StatusCode> {
    let id = parse_job_id(&id)?;
    state
        .jobs()
        .complete(auth.principal.workspace_id(), &id, &body.lease_token)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    lease_token: String,
    /// What went wrong; kept on the job (up to 2000 characters).
    error: String,
    /// Retry at this time instead of after the backoff.
    retry_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Failed {
    /// `retryable`, `discarded` (out of attempts) or `cancelled` (cancellation acknowledged).
    state: JobState,
}

/// Report failure: the job is retried after its backoff (or at `retry_at`), or discarded when
/// out of attempts, or cancelled if cancellation was requested.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/fail",
    tag = "workers",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id, `job_…`")),
    request_body = FailBody,
    responses((status = 200, body = Failed), (status = 409, description = "Stale lease token", body = crate::Problem))
)]
pub async fn fail(
    State(state): State<AppState>,
    auth: Authed<perm::JobsWork>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FailBody>,
) -> ApiResult<Json<Failed>> {
    let id = parse_job_id(&id)?;
    let workspace = auth.principal.workspace_id();
    let state_after = state
        .jobs()
        .fail(
            workspace,
            &id,
            &body.lease_token,
            &body.error,
            body.retry_at,
        )
        .await?;
    Ok(Json(Failed { state: state_after }))
}
