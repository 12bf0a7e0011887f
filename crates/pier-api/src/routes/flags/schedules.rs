//! `/v1/flags/{key}/schedules`: changes of a flag's definition scheduled for a set time (a
//! JSON Merge Patch applied then by the job queue), listed, read and cancelled while pending.
//! Like the audit trail, a flag's schedules outlive it (deleting it cancels the pending ones).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pier_core::Timestamp;
use pier_flags::schedule::Status;
use pier_flags::{FlagKey, Schedule, ScheduleId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{FlagsState, key_of};
use crate::AppState;
use crate::extract::{ApiJson, Authed, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::response::located;

/// A scheduled change of a flag.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "sched_01m8hq5v2c8r3t9w6y4z7x1b0n", "flag_key": "new-checkout",
    "apply_at": "2026-12-09T09:00:00.000000Z", "patch": {"state": "ENABLED"},
    "status": "pending", "reason": null, "applied_version": null,
    "created_by": "key_01m8hpqca6yrpxjm9wy9jmw19v", "created_at": "2026-12-08T17:30:00.000000Z",
    "ended_at": null}))]
pub struct ScheduleView {
    #[schema(value_type = ScheduleId)]
    id: String,
    #[schema(value_type = FlagKey)]
    flag_key: String,
    apply_at: Timestamp,
    /// The JSON Merge Patch of the flag's definition.
    patch: Value,
    status: Status,
    /// Why the schedule failed, or was cancelled by the flag's deletion.
    reason: Option<String>,
    /// The flag's version the change made, once applied.
    applied_version: Option<i64>,
    /// The API key or user that scheduled the change.
    created_by: String,
    created_at: Timestamp,
    /// When it was applied, cancelled or failed.
    ended_at: Option<Timestamp>,
}

impl From<Schedule> for ScheduleView {
    fn from(schedule: Schedule) -> Self {
        Self {
            id: schedule.id.to_string(),
            flag_key: schedule.flag_key,
            apply_at: schedule.apply_at,
            patch: schedule.patch,
            status: schedule.status,
            reason: schedule.reason,
            applied_version: schedule.applied_version,
            created_by: schedule.created_by,
            created_at: schedule.created_at,
            ended_at: schedule.ended_at,
        }
    }
}

/// The body of `POST /v1/flags/{key}/schedules`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"apply_at": "2026-12-09T09:00:00Z", "patch": {"state": "ENABLED"}}))]
pub struct CreateSchedule {
    /// When to apply the change: in the future, at most 366 days ahead.
    apply_at: Timestamp,
    /// A JSON Merge Patch of the definition (as `definition` in `PATCH /v1/flags/{key}`),
    /// applied to the definition as it is at `apply_at`.
    patch: Map<String, Value>,
}

fn id_of(text: &str) -> ApiResult<ScheduleId> {
    ScheduleId::parse(text).map_err(|_| ApiError::not_found("schedule"))
}

/// Schedule a change of a flag.
#[utoipa::path(
    post,
    path = "/v1/flags/{key}/schedules",
    operation_id = "createFlagSchedule",
    tag = "flags",
    security(("bearer" = [])),
    request_body = CreateSchedule,
    params(("key" = inline(FlagKey), Path, description = "The flag's key")),
    responses((status = 201, body = ScheduleView, headers(("Location" = String))))
)]
pub async fn create(
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsWrite>,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<CreateSchedule>,
) -> ApiResult<Response> {
    let key = key_of(&key)?;
    let principal = &auth.principal;
    let schedule = flags
        .schedules()
        .create(
            principal.workspace_id(),
            principal.subject(),
            &key,
            body.apply_at,
            body.patch,
        )
        .await?;
    tracing::info!(flag = %key, schedule = %schedule.id, "flag change scheduled");
    let location = format!("/v1/flags/{key}/schedules/{}", schedule.id);
    let view = ScheduleView::from(schedule);
    Ok(located(
        StatusCode::CREATED,
        &location,
        (StatusCode::CREATED, Json(view)).into_response(),
    ))
}

/// List a flag's scheduled changes, newest first.
#[utoipa::path(
    get,
    path = "/v1/flags/{key}/schedules",
    operation_id = "listFlagSchedules",
    tag = "flags",
    security(("bearer" = [])),
    params(("key" = inline(FlagKey), Path, description = "The flag's key"), PageParams),
    responses((status = 200, body = Page<ScheduleView>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsRead>,
    Path(key): Path<String>,
    page: Pagination,
) -> ApiResult<Page<ScheduleView>> {
    let key = key_of(&key)?;
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("flag_schedules", workspace).filter("key", Some(key.as_str()));
    let after = page.position::<String>(state.cursors(), &scope)?;
    let schedules = flags
        .schedules()
        .list(workspace, &key, after, page.fetch_limit())
        .await?;
    let views = schedules.into_iter().map(ScheduleView::from).collect();
    Ok(
        page.page(state.cursors(), &scope, views, |s: &ScheduleView| {
            s.id.clone()
        }),
    )
}

/// Read a scheduled change.
#[utoipa::path(
    get,
    path = "/v1/flags/{key}/schedules/{id}",
    operation_id = "getFlagSchedule",
    tag = "flags",
    security(("bearer" = [])),
    params(
        ("key" = inline(FlagKey), Path, description = "The flag's key"),
        ("id" = inline(ScheduleId), Path, description = "The schedule's id")
    ),
    responses((status = 200, body = ScheduleView))
)]
pub async fn get(
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsRead>,
    Path((key, id)): Path<(String, String)>,
) -> ApiResult<Json<ScheduleView>> {
    let (key, id) = (key_of(&key)?, id_of(&id)?);
    let schedule = flags
        .schedules()
        .get(auth.principal.workspace_id(), &key, &id)
        .await?;
    schedule
        .map(|s| Json(s.into()))
        .ok_or_else(|| ApiError::not_found("schedule"))
}

/// Cancel a scheduled change that is still pending.
#[utoipa::path(
    post,
    path = "/v1/flags/{key}/schedules/{id}/cancel",
    operation_id = "cancelFlagSchedule",
    tag = "flags",
    security(("bearer" = [])),
    params(
        ("key" = inline(FlagKey), Path, description = "The flag's key"),
        ("id" = inline(ScheduleId), Path, description = "The schedule's id")
    ),
    responses(
        (status = 200, body = ScheduleView),
        (status = 409, description = "`invalid_state`: the schedule was applied, failed or cancelled already", body = crate::Problem)
    )
)]
pub async fn cancel(
    State(flags): State<FlagsState>,
    auth: Authed<perm::FlagsWrite>,
    Path((key, id)): Path<(String, String)>,
) -> ApiResult<Json<ScheduleView>> {
    let (key, id) = (key_of(&key)?, id_of(&id)?);
    let schedule = flags
        .schedules()
        .cancel(auth.principal.workspace_id(), &key, &id)
        .await?;
    tracing::info!(flag = %key, schedule = %id, "scheduled flag change cancelled");
    Ok(Json(schedule.into()))
}
