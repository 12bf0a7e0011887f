//! The external-worker protocol: claim jobs with a lease, then heartbeat, complete or fail them
//! presenting the lease token. A stale token (the lease expired and the job was rescued) is `409`
//! and changes nothing.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use pier_core::validation::plain_text;
use pier_core::{Timestamp, ValidationErrors, schema, whole};
use pier_jobs::{
    ClaimLimits, ClaimTarget, ClaimedJob, Held, LEASE_SECONDS_RANGE, LeaseToken, QueueName,
    WaitRefused,
};
use serde::{Deserialize, Serialize};
use utoipa::openapi::Object;

use super::JobsState;
use super::crud::parse_job_id;
use super::views::ClaimedJobView;
use crate::extract::{ApiJson, Authed, perm};
use crate::problem::{ApiError, ApiResult};

const POLL_FALLBACK: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"max": 10, "wait_seconds": 20, "worker_id": "worker-1"}))]
pub struct Claim {
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = claim_max)]
    max: Option<u32>,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = pier_jobs::lease_seconds)]
    lease_seconds: Option<u32>,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = wait_seconds)]
    wait_seconds: Option<u32>,
    #[schema(schema_with = worker_id)]
    worker_id: Option<String>,
}

fn claim_max() -> Object {
    schema::nullable(
        schema::integer(&CLAIM_MAX).description(Some("How many jobs to take (default 1)")),
    )
}

fn wait_seconds() -> Object {
    schema::nullable(schema::integer(&WAIT_SECONDS).description(Some(
        "Wait up to this many seconds for a job when none is available (default 0)",
    )))
}

fn worker_id() -> Object {
    schema::nullable(
        schema::plain_text(1, WORKER_ID_MAX_CHARS)
            .description(Some("Shown on claimed jobs, to tell workers apart")),
    )
}

const WORKER_ID_MAX_CHARS: usize = 128;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"jobs": [ClaimedJobView::example()]}))]
pub struct Claimed {
    jobs: Vec<ClaimedJobView>,
}

impl From<Vec<ClaimedJob>> for Claimed {
    fn from(jobs: Vec<ClaimedJob>) -> Self {
        let jobs = jobs.into_iter().map(ClaimedJobView::from).collect();
        Self { jobs }
    }
}

/// Claim jobs from a queue of the caller's workspace, waiting up to `wait_seconds` for one.
#[utoipa::path(
    post,
    path = "/v1/queues/{name}/claim",
    operation_id = "claimJobs",
    tag = "workers",
    security(("bearer" = [])),
    params(("name" = inline(QueueName), Path, description = "The queue")),
    request_body = Claim,
    responses(
        (status = 200, description = "The jobs claimed, none if none came within `wait_seconds`", body = Claimed),
        (status = 429, description = "`too_many_waiting_claims`: the workspace has as many long-poll \
                                      claims waiting as it may; `quota_exceeded`: over the rate limit", body = crate::Problem),
        (status = 503, description = "`server_busy`: the node has as many long-poll claims waiting as it \
                                      may; `request_timeout`: the request ran too long", body = crate::Problem)
    )
)]
pub async fn claim(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWork>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Claim>,
) -> ApiResult<Json<Claimed>> {
    let mut errors = ValidationErrors::new();
    let queue = errors.check("name", "invalid", QueueName::parse(&name));
    let max = errors.check_range("max", body.max.unwrap_or(1), &CLAIM_MAX);
    let lease = lease_of(body.lease_seconds, &mut errors);
    let wait = errors.check_range(
        "wait_seconds",
        body.wait_seconds.unwrap_or(0),
        &WAIT_SECONDS,
    );
    if let Some(worker) = &body.worker_id {
        errors.check(
            "worker_id",
            "invalid",
            plain_text(worker, 1, WORKER_ID_MAX_CHARS),
        );
    }
    errors.into_result().map_err(ApiError::validation)?;
    let (Some(queue), Some(max), Some(wait)) = (queue, max, wait) else {
        return Err(ApiError::validation(ValidationErrors::single(
            "body",
            "invalid",
            "invalid claim",
        )));
    };

    let (budget_bytes, jobs) = (jobs.claim_budget_bytes(), jobs.store());
    let workspace = auth.principal.workspace_id();
    let target = ClaimTarget::workspace(workspace.clone(), queue);
    let limits = ClaimLimits { max, budget_bytes };
    let worker_id = body.worker_id.as_deref();
    // Subscribed before the first look, so an enqueue right after it is not missed.
    let mut wake = jobs.notifier().subscribe(Some(workspace), target.queue());
    wake.mark_seen();
    let claimed = jobs.claim(&target, limits, lease, worker_id).await?;
    if !claimed.is_empty() || wait == 0 {
        return Ok(Json(Claimed::from(claimed)));
    }
    // Waiting holds no database connection, only a slot of the waiter caps.
    let _slot = jobs.notifier().wait_slot(workspace).map_err(refused)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.into());
    loop {
        tokio::select! {
            () = wake.changed() => {}
            () = tokio::time::sleep(POLL_FALLBACK) => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
        wake.mark_seen();
        let claimed = jobs.claim(&target, limits, lease, worker_id).await?;
        if !claimed.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(Claimed::from(claimed)));
        }
    }
}

const CLAIM_MAX: std::ops::RangeInclusive<u32> = 1..=1000;
const WAIT_SECONDS: std::ops::RangeInclusive<u32> = 0..=30;
/// The longest a claim may wait, added to its request deadline.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30);

fn lease_of(seconds: Option<u32>, errors: &mut ValidationErrors) -> Option<Duration> {
    let seconds = errors.check_range("lease_seconds", seconds?, &LEASE_SECONDS_RANGE)?;
    Some(Duration::from_secs(seconds.into()))
}

/// A long-poll turned away: the workspace's share is used up (`429`), or the node's (`503`).
fn refused(err: WaitRefused) -> ApiError {
    let (status, code) = match err {
        WaitRefused::Workspace(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_waiting_claims"),
        WaitRefused::Node(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_busy"),
    };
    ApiError::new(
        status,
        code,
        format!("{err}; claim without wait_seconds or retry shortly"),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"lease_token": "3f9c2a7d51e84b6fa0c9d2e1b7a45f10", "lease_seconds": 60}))]
pub struct HeartbeatBody {
    #[schema(value_type = LeaseToken)]
    lease_token: String,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = pier_jobs::lease_seconds)]
    lease_seconds: Option<u32>,
    #[schema(schema_with = worker_traceparent)]
    traceparent: Option<String>,
}

/// The `traceparent` field of a worker's report.
pub(crate) fn worker_traceparent() -> Object {
    schema::nullable(
        schema::string(55, 55)
            .pattern(Some(pier_core::trace::TRACEPARENT_PATTERN))
            .description(Some(
                "The W3C trace context of the worker's span for this job (version 00), \
                 recorded as a span link on this request's span",
            )),
    )
}

/// Links the current request's span to the worker's span `traceparent`, after checking its
/// form. A link rather than a parent: the request continues the trace of its own
/// `traceparent` header, and the worker's span is already in the trace of the job's enqueue.
pub(crate) fn link_worker_span(traceparent: Option<&str>) -> ApiResult<()> {
    let Some(traceparent) = traceparent else {
        return Ok(());
    };
    if !pier_core::trace::well_formed(traceparent) {
        return Err(ApiError::validation(ValidationErrors::single(
            "traceparent",
            "invalid",
            "not a W3C traceparent: 00-<32 hex digits>-<16 hex digits>-<2 hex digits>",
        )));
    }
    pier_core::trace::link_to(&tracing::Span::current(), traceparent);
    Ok(())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"lease_expires_at": "2026-11-30T12:01:00.000000Z", "cancel_requested": false}))]
pub struct HeartbeatReply {
    lease_expires_at: Timestamp,
    /// Stop working on the job and report it with `fail`; it will be cancelled.
    cancel_requested: bool,
}

/// The job a worker names by id and lease token.
pub(crate) fn held(auth: &Authed<perm::JobsWork>, id: &str, token: &str) -> ApiResult<Held> {
    let id = parse_job_id(id)?;
    Held::new(auth.principal.workspace_id().clone(), id, token)
        .map_err(|e| ApiError::validation(ValidationErrors::single("lease_token", "invalid", e)))
}

/// Extend a lease.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/heartbeat",
    operation_id = "heartbeatJob",
    tag = "workers",
    security(("bearer" = [])),
    params(("id" = inline(pier_jobs::JobId), Path, description = "The job id")),
    request_body = HeartbeatBody,
    responses((status = 200, body = HeartbeatReply), (status = 409, description = "`stale_lease`: the lease expired and the job was rescued, finished or claimed again", body = crate::Problem))
)]
pub async fn heartbeat(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWork>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> ApiResult<Json<HeartbeatReply>> {
    let job = held(&auth, &id, &body.lease_token)?;
    let mut errors = ValidationErrors::new();
    let lease = lease_of(body.lease_seconds, &mut errors);
    errors.into_result().map_err(ApiError::validation)?;
    link_worker_span(body.traceparent.as_deref())?;
    match jobs.group_commit().heartbeat(job.clone(), lease).await? {
        Some(beat) => Ok(Json(HeartbeatReply {
            lease_expires_at: beat.lease_expires_at,
            cancel_requested: beat.cancel_requested,
        })),
        None => Err(jobs
            .store()
            .why_not_held(&job.workspace, &job.id)
            .await
            .into()),
    }
}
