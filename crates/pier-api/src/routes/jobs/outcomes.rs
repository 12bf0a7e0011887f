//! Workers report how attempts ended: complete or fail one job, or many in one call. Each is
//! fenced by the job's lease token; a stale token changes nothing.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use pier_core::{Timestamp, ValidationErrors};
use pier_jobs::{Completion, Failure, Held, JobId, JobState, JobStore, LeaseToken};
use serde::{Deserialize, Serialize};
use utoipa::openapi::{ArrayBuilder, Ref, RefOr, Schema};

use super::JobsState;
use super::leases::{held, link_worker_span, worker_traceparent};
use crate::extract::{ApiJson, Authed, perm};
use crate::problem::{ApiError, ApiResult};

/// How many jobs one batch report may name.
const REPORTS: std::ops::RangeInclusive<usize> = 1..=1000;

/// Declares the body of a batch report as the document describes it: [`REPORTS`] items of
/// `$item` (a marker: the handler reads a `Vec<$item>`).
macro_rules! batch_body {
    ($name:ident, $item:ty) => {
        struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ArrayBuilder::new()
                    .items(Ref::from_schema_name(<$item as utoipa::ToSchema>::name()))
                    .min_items(Some(*REPORTS.start()))
                    .max_items(Some(*REPORTS.end()))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                let name = <$item as utoipa::ToSchema>::name().into_owned();
                schemas.push((name, <$item as utoipa::PartialSchema>::schema()));
                <$item as utoipa::ToSchema>::schemas(schemas);
            }
        }
    };
}

batch_body!(CompleteBatch, CompleteItem);
batch_body!(FailBatch, FailItem);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"lease_token": "3f9c2a7d51e84b6fa0c9d2e1b7a45f10", "result": {"sent": true}}))]
pub struct CompleteBody {
    #[schema(value_type = LeaseToken)]
    lease_token: String,
    /// What the job produced, any JSON, kept on it (at most 64 KiB as JSON text).
    result: Option<serde_json::Value>,
    #[schema(schema_with = worker_traceparent)]
    traceparent: Option<String>,
}

fn completion(
    auth: &Authed<perm::JobsWork>,
    id: &str,
    body: CompleteBody,
) -> Result<Completion, ApiError> {
    link_worker_span(body.traceparent.as_deref())?;
    let completion = Completion::new(held(auth, id, &body.lease_token)?);
    match &body.result {
        None => Ok(completion),
        Some(result) => completion
            .with_result(result)
            .map_err(|e| ApiError::validation(ValidationErrors::single("result", "too_large", e))),
    }
}

/// Report success.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/complete",
    operation_id = "completeJob",
    tag = "workers",
    security(("bearer" = [])),
    params(("id" = inline(JobId), Path, description = "The job id")),
    request_body = CompleteBody,
    responses((status = 204, description = "Completed"), (status = 409, description = "`stale_lease`: the lease expired and the job was rescued, finished or claimed again", body = crate::Problem))
)]
pub async fn complete(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWork>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> ApiResult<StatusCode> {
    let completion = completion(&auth, &id, body)?;
    let job = completion.job.clone();
    if jobs.group_commit().complete(completion).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(jobs
            .store()
            .why_not_held(&job.workspace, &job.id)
            .await
            .into())
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"lease_token": "3f9c2a7d51e84b6fa0c9d2e1b7a45f10", "error": "SMTP timeout"}))]
pub struct FailBody {
    #[schema(value_type = LeaseToken)]
    lease_token: String,
    /// What went wrong; the first 2000 characters are kept on the job.
    error: String,
    /// Retry at this time instead of after the backoff.
    retry_at: Option<Timestamp>,
    /// A permanent failure: the job is discarded at once, whatever attempts it has left (and
    /// its workflow, if it is a step of one, compensates).
    #[serde(default)]
    discard: bool,
    #[schema(schema_with = worker_traceparent)]
    traceparent: Option<String>,
}

fn failure(auth: &Authed<perm::JobsWork>, id: &str, body: FailBody) -> ApiResult<Failure> {
    link_worker_span(body.traceparent.as_deref())?;
    Ok(Failure {
        job: held(auth, id, &body.lease_token)?,
        error: body.error,
        retry_at: body.retry_at,
        discard: body.discard,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"state": "retryable"}))]
pub struct Failed {
    /// `retryable`, `discarded` (out of attempts, or `discard` asked) or `cancelled`
    /// (cancellation acknowledged).
    state: JobState,
}

/// Report failure: the job is retried after its backoff (or at `retry_at`), or discarded when
/// out of attempts or when the failure is permanent (`discard`), or cancelled if cancellation
/// was requested.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/fail",
    operation_id = "failJob",
    tag = "workers",
    security(("bearer" = [])),
    params(("id" = inline(JobId), Path, description = "The job id")),
    request_body = FailBody,
    responses((status = 200, body = Failed), (status = 409, description = "`stale_lease`: the lease expired and the job was rescued, finished or claimed again", body = crate::Problem))
)]
pub async fn fail(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWork>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FailBody>,
) -> ApiResult<Json<Failed>> {
    let failure = failure(&auth, &id, body)?;
    let job = failure.job.clone();
    match jobs.group_commit().fail(failure).await? {
        Some(state) => Ok(Json(Failed { state })),
        None => Err(jobs
            .store()
            .why_not_held(&job.workspace, &job.id)
            .await
            .into()),
    }
}

/// One job named in a batch report: [`CompleteBody`]'s fields and the job's id. Spelled out
/// rather than flattened, because JSON Schema cannot say "these fields and no others" of a
/// flattened struct.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "job_01m8pd9e61ya13bwk7fzzb9vzj",
                          "lease_token": "3f9c2a7d51e84b6fa0c9d2e1b7a45f10"}))]
pub struct CompleteItem {
    #[schema(value_type = JobId)]
    id: String,
    #[schema(value_type = LeaseToken)]
    lease_token: String,
    /// What the job produced, any JSON, kept on it (at most 64 KiB as JSON text).
    result: Option<serde_json::Value>,
    #[schema(schema_with = worker_traceparent)]
    traceparent: Option<String>,
}

/// A batch item: a job's id and the body its single-job report would take.
trait BatchItem {
    type Body;
    fn split(self) -> (String, Self::Body);
}

impl BatchItem for CompleteItem {
    type Body = CompleteBody;
    fn split(self) -> (String, CompleteBody) {
        let body = CompleteBody {
            lease_token: self.lease_token,
            result: self.result,
            traceparent: self.traceparent,
        };
        (self.id, body)
    }
}

/// One job named in a batch failure report: [`FailBody`]'s fields and the job's id.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "job_01m8pd9e61ya13bwk7fzzb9vzj",
                          "lease_token": "3f9c2a7d51e84b6fa0c9d2e1b7a45f10", "error": "timeout"}))]
pub struct FailItem {
    #[schema(value_type = JobId)]
    id: String,
    #[schema(value_type = LeaseToken)]
    lease_token: String,
    /// What went wrong; the first 2000 characters are kept on the job.
    error: String,
    /// Retry at this time instead of after the backoff.
    retry_at: Option<Timestamp>,
    /// A permanent failure: the job is discarded at once, whatever attempts it has left (and
    /// its workflow, if it is a step of one, compensates).
    #[serde(default)]
    discard: bool,
    #[schema(schema_with = worker_traceparent)]
    traceparent: Option<String>,
}

impl BatchItem for FailItem {
    type Body = FailBody;
    fn split(self) -> (String, FailBody) {
        let body = FailBody {
            lease_token: self.lease_token,
            error: self.error,
            retry_at: self.retry_at,
            discard: self.discard,
            traceparent: self.traceparent,
        };
        (self.id, body)
    }
}

/// How one job of a batch report fared.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reported {
    id: JobId,
    /// `completed` or `failed` when recorded; `stale_lease` or `not_found` when not.
    outcome: &'static str,
    /// For failures: `retryable`, `discarded` or `cancelled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<JobState>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"data": [
    {"id": "job_01m8pd9e61ya13bwk7fzzb9vzj", "outcome": "completed"},
    {"id": "job_01m8pd9e4m7br6fm9ty0k66418", "outcome": "stale_lease"}]}))]
pub struct Reports {
    /// One entry per reported job, in order.
    data: Vec<Reported>,
}

/// Checks every item, naming bad fields by position (`[3].lease_token`).
fn parse_items<T: BatchItem, U>(
    items: Vec<T>,
    parse: impl Fn(&str, T::Body) -> ApiResult<U>,
) -> ApiResult<Vec<U>> {
    let mut errors = ValidationErrors::new();
    if errors.check_range("body", items.len(), &REPORTS).is_none() {
        return Err(ApiError::validation(errors));
    }
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let (id, body) = item.split();
        match parse(&id, body) {
            Ok(item) => parsed.push(item),
            Err(err) => errors.add(&format!("[{i}]"), err.code(), err.detail()),
        }
    }
    errors.into_result().map_err(ApiError::validation)?;
    Ok(parsed)
}

/// The batch's reports: each job's outcome, `recorded` when it counted, else why not (one query
/// for the batch), with its state where the report gave one.
async fn reports(
    store: &JobStore,
    jobs: &[&Held],
    counted: &[bool],
    states: Vec<Option<JobState>>,
    recorded: &'static str,
) -> ApiResult<Json<Reports>> {
    let missed: Vec<&Held> = jobs
        .iter()
        .zip(counted)
        .filter(|(_, counted)| !**counted)
        .map(|(job, _)| *job)
        .collect();
    let existing = store.existing(&missed).await?;
    let data = jobs
        .iter()
        .zip(counted)
        .zip(states)
        .map(|((job, counted), state)| Reported {
            id: job.id.clone(),
            outcome: match (counted, existing.contains(&job.key())) {
                (true, _) => recorded,
                (false, true) => "stale_lease",
                (false, false) => "not_found",
            },
            state,
        })
        .collect();
    Ok(Json(Reports { data }))
}

/// Report many successes in one call (one statement), each fenced by its own lease token.
#[utoipa::path(
    post,
    path = "/v1/jobs/complete",
    operation_id = "completeJobs",
    tag = "workers",
    security(("bearer" = [])),
    request_body(content = inline(CompleteBatch)),
    responses((status = 200, body = Reports))
)]
pub async fn complete_many(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWork>,
    ApiJson(items): ApiJson<Vec<CompleteItem>>,
) -> ApiResult<Json<Reports>> {
    let completions = parse_items(items, |id, body| completion(&auth, id, body))?;
    let done = jobs.store().complete_many(&completions).await?;
    let held: Vec<&Held> = completions.iter().map(|c| &c.job).collect();
    let states = vec![None; held.len()];
    reports(jobs.store(), &held, &done, states, "completed").await
}

/// Report many failures in one call (one transaction), each fenced by its own lease token.
#[utoipa::path(
    post,
    path = "/v1/jobs/fail",
    operation_id = "failJobs",
    tag = "workers",
    security(("bearer" = [])),
    request_body(content = inline(FailBatch)),
    responses((status = 200, body = Reports))
)]
pub async fn fail_many(
    State(jobs): State<JobsState>,
    auth: Authed<perm::JobsWork>,
    ApiJson(items): ApiJson<Vec<FailItem>>,
) -> ApiResult<Json<Reports>> {
    let failures = parse_items(items, |id, body| failure(&auth, id, body))?;
    let states = jobs.store().fail_many(&failures).await?;
    let held: Vec<&Held> = failures.iter().map(|f| &f.job).collect();
    let counted: Vec<bool> = states.iter().map(Option::is_some).collect();
    reports(jobs.store(), &held, &counted, states, "failed").await
}
