//! `/v1/rate-limit-policies` and `/v1/rate-limit-checks`: named policies and the decision API.
//!
//! A workspace checks its own policies and those of the server's configuration file; either
//! way its counts are its own. A check answers `200` whether or not it allows (the decision is
//! data) and carries the `RateLimit-Policy` and `RateLimit` fields of the policies it checked.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_core::{Timestamp, ValidationErrors, WorkspaceId, schema, whole};
use pier_ratelimit::{
    Algorithm, Decision, FailureMode, Policy, PolicyName, PolicyRecord, PolicySpec, StoreError,
    bounds, check_name,
};
use serde::{Deserialize, Serialize};
use utoipa::PartialSchema as _;
use utoipa::openapi::schema::{Array, ArrayBuilder, Object};

use super::RateLimitsState;
use crate::AppState;
use crate::extract::{ApiJson, Authed, ETag, IfMatch, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::rate_limit::insert_fields;
use crate::response::located;

/// How many policies one batch check may name.
const BATCH: std::ops::RangeInclusive<usize> = 1..=10;
/// The longest caller key, in characters.
const MAX_KEY_CHARS: usize = 256;

/// A policy as `PUT` takes it. `max(limit, burst) × period_seconds × 1000` may be at most
/// 2^52, so every count stays exact in floating point (Redis scripts count in doubles).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"algorithm": "gcra", "limit": 100, "period_seconds": 60, "burst": 20}))]
pub struct PolicyBody {
    algorithm: Algorithm,
    #[serde(deserialize_with = "whole::required")]
    #[schema(schema_with = policy_limit)]
    limit: u64,
    #[serde(deserialize_with = "whole::required")]
    #[schema(schema_with = period_seconds)]
    period_seconds: u64,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = burst)]
    burst: Option<u64>,
    /// What to decide when Redis cannot answer in time (default: `local`).
    failure_mode: Option<FailureMode>,
}

fn policy_limit() -> Object {
    schema::integer(&bounds::LIMIT)
        .description(Some("Units per period"))
        .build()
}

fn period_seconds() -> Object {
    schema::integer(&bounds::PERIOD_SECONDS)
        .description(Some("The period in seconds"))
        .build()
}

fn burst() -> Object {
    schema::nullable(schema::integer(&bounds::BURST).description(Some(
        "GCRA only: units spendable at once (default: `limit`)",
    )))
}

fn caller_key() -> Object {
    schema::plain_text(1, MAX_KEY_CHARS)
        .description(Some("Whose quota: a user id, an IP address, a tenant…"))
        .build()
}

fn cost() -> Object {
    schema::nullable(
        schema::integer(&(1..=*bounds::BURST.end())).description(Some(
            "Units to spend (default 1); at most the policy's burst",
        )),
    )
}

fn policy_names() -> Array {
    ArrayBuilder::new()
        .items(PolicyName::schema())
        .min_items(Some(*BATCH.start()))
        .max_items(Some(*BATCH.end()))
        .unique_items(true)
        .description(Some("Distinct policy names"))
        .build()
}

/// Where a policy comes from.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// Defined by this workspace through the API.
    Api,
    /// The server's configuration file: every workspace may check it; the API cannot change it.
    Config,
}

/// A named rate-limit policy.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "per-user", "algorithm": "gcra", "limit": 100,
                          "period_seconds": 60, "burst": 20, "failure_mode": "local",
                          "source": "api", "created_at": "2026-11-30T12:00:00.000000Z",
                          "updated_at": "2026-11-30T12:00:00.000000Z"}))]
pub struct RateLimitPolicy {
    name: String,
    algorithm: Algorithm,
    limit: u64,
    period_seconds: u64,
    /// Units spendable at once: the GCRA burst, a window's limit.
    burst: u64,
    failure_mode: FailureMode,
    source: PolicySource,
    /// `null` for configured policies.
    created_at: Option<Timestamp>,
    updated_at: Option<Timestamp>,
}

impl RateLimitPolicy {
    fn new(name: &str, spec: &PolicySpec, source: PolicySource) -> Self {
        Self {
            name: name.to_owned(),
            algorithm: spec.algorithm(),
            limit: spec.limit(),
            period_seconds: spec.period().as_secs(),
            burst: spec.burst(),
            failure_mode: spec.failure_mode(),
            source,
            created_at: None,
            updated_at: None,
        }
    }

    fn stored(record: &PolicyRecord) -> Self {
        Self {
            created_at: Some(record.created_at),
            updated_at: Some(record.updated_at),
            ..Self::new(&record.name, &record.spec, PolicySource::Api)
        }
    }
}

/// The body of a check.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"key": "user_42", "cost": 1}))]
pub struct CheckBody {
    #[schema(schema_with = caller_key)]
    key: String,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = cost)]
    cost: Option<u64>,
    /// Answer without spending anything.
    #[serde(default)]
    dry_run: bool,
}

/// The body of a batch check: several policies for one caller.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"policies": ["per-user", "per-tenant"], "key": "user_42"}))]
pub struct BatchCheckBody {
    #[schema(schema_with = policy_names)]
    policies: Vec<String>,
    #[schema(schema_with = caller_key)]
    key: String,
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(schema_with = cost)]
    cost: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

/// The body of a reset.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"key": "user_42"}))]
pub struct ResetBody {
    #[schema(schema_with = caller_key)]
    key: String,
}

/// A decision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"allowed": true, "limit": 100, "remaining": 99,
                          "reset_after_ms": 600, "retry_after_ms": 0}))]
pub struct CheckResult {
    allowed: bool,
    limit: u64,
    /// Units still available after this request.
    remaining: u64,
    /// Milliseconds until the quota is whole again.
    reset_after_ms: u64,
    /// Milliseconds until the same request would be allowed; 0 when it was.
    retry_after_ms: u64,
}

impl From<&Decision> for CheckResult {
    fn from(d: &Decision) -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            allowed: d.allowed,
            limit: d.limit,
            remaining: d.remaining,
            reset_after_ms: ms(d.reset_after),
            retry_after_ms: ms(d.retry_after),
        }
    }
}

/// One policy's decision in a batch.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyDecision {
    policy: String,
    #[serde(flatten)]
    result: CheckResult,
}

/// A batch's decisions: allowed only if every policy allows, and then spent on all.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"allowed": false, "decisions": [
    {"policy": "per-user", "allowed": true, "limit": 100, "remaining": 99,
     "reset_after_ms": 600, "retry_after_ms": 0},
    {"policy": "per-tenant", "allowed": false, "limit": 1000, "remaining": 0,
     "reset_after_ms": 60000, "retry_after_ms": 60}]}))]
pub struct BatchCheckResult {
    allowed: bool,
    decisions: Vec<PolicyDecision>,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(ValidationErrors::single(field, "invalid", message))
}

fn with_etag(status: StatusCode, policy: &RateLimitPolicy) -> Response {
    let mut response = (status, Json(policy)).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, ETag::of(policy).header_value());
    response
}

/// The policy `name` as this workspace sees it: the configuration file's, else its own (from
/// the node's policy cache: a check reads no database).
async fn resolve(state: &AppState, workspace: &WorkspaceId, name: &str) -> ApiResult<Policy> {
    let not_found = || ApiError::not_found("rate-limit policy");
    check_name(name).map_err(|_| not_found())?;
    if let Some(spec) = state.rate_limits().configured_policy(name) {
        return Ok(Policy::workspace(workspace, name, *spec));
    }
    state
        .rate_limits()
        .policies()
        .policy(workspace, name)
        .await?
        .ok_or_else(not_found)
}

fn check_key(key: &str) -> ApiResult<()> {
    pier_core::validation::plain_text(key, 1, MAX_KEY_CHARS).map_err(|e| invalid("key", e))
}

fn refuse_configured(state: &AppState, name: &str) -> ApiResult<()> {
    if state.rate_limits().configured_policy(name).is_some() {
        return Err(ApiError::conflict(
            "policy_configured",
            format!("`{name}` is defined in the server's configuration file; change it there"),
        ));
    }
    Ok(())
}

/// Decides `policies` for the body's caller and puts their fields on the response.
async fn decide(
    state: &AppState,
    policies: &[Policy],
    key: &str,
    cost: Option<u64>,
    dry_run: bool,
) -> ApiResult<(HeaderMap, Vec<Decision>)> {
    check_key(key)?;
    let cost = cost.unwrap_or(1);
    let verdict = state
        .limiter()
        .check_all(policies, key, cost, !dry_run)
        .await
        .map_err(|e| invalid("cost", e.to_string()))?;
    let mut headers = HeaderMap::new();
    let decided: Vec<(&Policy, &Decision)> = policies.iter().zip(&verdict.decisions).collect();
    insert_fields(&mut headers, &decided);
    Ok((headers, verdict.decisions))
}

/// Create or replace a policy. Honours `If-Match`.
#[utoipa::path(
    put,
    path = "/v1/rate-limit-policies/{name}",
    operation_id = "putRateLimitPolicy",
    tag = "rate-limits",
    security(("bearer" = [])),
    params(
        ("name" = inline(PolicyName), Path, description = "The policy's name"),
        ("If-Match" = Option<String>, Header, description = "Replace only if the ETag still matches")
    ),
    request_body = PolicyBody,
    responses(
        (status = 201, body = RateLimitPolicy, headers(("Location" = String), ("ETag" = String))),
        (status = 200, body = RateLimitPolicy, headers(("ETag" = String)))
    )
)]
pub async fn put(
    State(state): State<AppState>,
    State(limits): State<RateLimitsState>,
    auth: Authed<perm::RateLimitsWrite>,
    if_match: IfMatch,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<PolicyBody>,
) -> ApiResult<Response> {
    check_name(&name).map_err(|e| invalid("name", e))?;
    let spec = PolicySpec::new(
        body.algorithm,
        body.limit,
        body.period_seconds,
        body.burst,
        body.failure_mode.unwrap_or(FailureMode::Local),
    )
    .map_err(|e| invalid(e.field, e.message))?;
    refuse_configured(&state, &name)?;
    let workspace = auth.principal.workspace_id();
    let seen = if if_match.is_present() {
        let current = limits.policies().get(workspace, &name).await?;
        let etag = current
            .as_ref()
            .map(|r| ETag::of(&RateLimitPolicy::stored(r)));
        match etag {
            Some(etag) => if_match.check(&etag)?,
            None => return Err(ApiError::precondition_failed()),
        }
        current
    } else {
        None
    };
    let (record, created) = limits
        .policies()
        .put(workspace, &name, spec, seen.as_ref())
        .await
        .map_err(|e| match e {
            StoreError::TooMany { .. } => ApiError::conflict("too_many_policies", e.to_string()),
            StoreError::Changed => ApiError::precondition_failed(),
            StoreError::Db(db) => db.into(),
        })?;
    let view = RateLimitPolicy::stored(&record);
    if created {
        let location = format!("/v1/rate-limit-policies/{name}");
        Ok(located(
            StatusCode::CREATED,
            &location,
            with_etag(StatusCode::CREATED, &view),
        ))
    } else {
        Ok(with_etag(StatusCode::OK, &view))
    }
}

/// Read a policy (this workspace's, or the configuration file's).
#[utoipa::path(
    get,
    path = "/v1/rate-limit-policies/{name}",
    operation_id = "getRateLimitPolicy",
    tag = "rate-limits",
    security(("bearer" = [])),
    params(("name" = inline(PolicyName), Path, description = "The policy's name")),
    responses((status = 200, body = RateLimitPolicy, headers(("ETag" = String))))
)]
pub async fn get(
    State(limits): State<RateLimitsState>,
    auth: Authed<perm::RateLimitsRead>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    if let Some(spec) = limits.configured_policy(&name) {
        let view = RateLimitPolicy::new(&name, spec, PolicySource::Config);
        return Ok(with_etag(StatusCode::OK, &view));
    }
    let record = match check_name(&name) {
        Ok(()) => {
            limits
                .policies()
                .get(auth.principal.workspace_id(), &name)
                .await?
        }
        Err(_) => None,
    };
    let record = record.ok_or_else(|| ApiError::not_found("rate-limit policy"))?;
    Ok(with_etag(StatusCode::OK, &RateLimitPolicy::stored(&record)))
}

/// Delete a policy; its counts are forgotten as they run out. Honours `If-Match`.
#[utoipa::path(
    delete,
    path = "/v1/rate-limit-policies/{name}",
    operation_id = "deleteRateLimitPolicy",
    tag = "rate-limits",
    security(("bearer" = [])),
    params(
        ("name" = inline(PolicyName), Path, description = "The policy's name"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the ETag still matches")
    ),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete(
    State(state): State<AppState>,
    State(limits): State<RateLimitsState>,
    auth: Authed<perm::RateLimitsWrite>,
    if_match: IfMatch,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    refuse_configured(&state, &name)?;
    let not_found = || ApiError::not_found("rate-limit policy");
    check_name(&name).map_err(|_| not_found())?;
    let workspace = auth.principal.workspace_id();
    let current = limits
        .policies()
        .get(workspace, &name)
        .await?
        .ok_or_else(not_found)?;
    if_match.check(&ETag::of(&RateLimitPolicy::stored(&current)))?;
    let seen = if_match.is_present().then_some(&current);
    if limits.policies().delete(workspace, &name, seen).await? {
        Ok(StatusCode::NO_CONTENT)
    } else if seen.is_some() {
        Err(ApiError::precondition_failed())
    } else {
        Err(not_found())
    }
}

/// List the policies this workspace can check, by name: its own and the configuration file's.
#[utoipa::path(
    get,
    path = "/v1/rate-limit-policies",
    operation_id = "listRateLimitPolicies",
    tag = "rate-limits",
    security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = Page<RateLimitPolicy>))
)]
pub async fn list(
    State(state): State<AppState>,
    State(limits): State<RateLimitsState>,
    auth: Authed<perm::RateLimitsRead>,
    page: Pagination,
) -> ApiResult<Page<RateLimitPolicy>> {
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("rate_limit_policies", workspace);
    let after = page.position::<String>(state.cursors(), &scope)?;
    let stored = limits
        .policies()
        .list(workspace, after.as_deref(), page.fetch_limit())
        .await?;
    let mut rows: Vec<RateLimitPolicy> = stored.iter().map(RateLimitPolicy::stored).collect();
    rows.extend(
        limits
            .configured_policies()
            .iter()
            .filter(|(name, _)| after.as_deref().is_none_or(|a| name.as_str() > a))
            .map(|(name, spec)| RateLimitPolicy::new(name, spec, PolicySource::Config)),
    );
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows.truncate(page.fetch_limit() as usize);
    Ok(page.page(state.cursors(), &scope, rows, |p| p.name.clone()))
}

/// Spend `cost` units of `key`'s quota under a policy, if it allows (`dry_run`: only answer).
#[utoipa::path(
    post,
    path = "/v1/rate-limit-policies/{name}/check",
    operation_id = "checkRateLimit",
    tag = "rate-limits",
    security(("bearer" = [])),
    params(("name" = inline(PolicyName), Path, description = "The policy's name")),
    request_body = CheckBody,
    responses((status = 200, body = CheckResult, headers(("RateLimit-Policy" = String), ("RateLimit" = String))))
)]
pub async fn check(
    State(state): State<AppState>,
    auth: Authed<perm::RateLimitsCheck>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<CheckBody>,
) -> ApiResult<Response> {
    let policy = resolve(&state, auth.principal.workspace_id(), &name).await?;
    let (headers, decisions) = decide(
        &state,
        std::slice::from_ref(&policy),
        &body.key,
        body.cost,
        body.dry_run,
    )
    .await?;
    Ok((headers, Json(CheckResult::from(&decisions[0]))).into_response())
}

/// Check several policies for one caller at once: spent on all of them only if all allow.
#[utoipa::path(
    post,
    path = "/v1/rate-limit-checks",
    operation_id = "checkRateLimits",
    tag = "rate-limits",
    security(("bearer" = [])),
    request_body = BatchCheckBody,
    responses(
        (status = 200, body = BatchCheckResult, headers(("RateLimit-Policy" = String), ("RateLimit" = String))),
        (status = 404, description = "`not_found`: a named policy does not exist", body = crate::Problem)
    )
)]
pub async fn check_batch(
    State(state): State<AppState>,
    auth: Authed<perm::RateLimitsCheck>,
    ApiJson(body): ApiJson<BatchCheckBody>,
) -> ApiResult<Response> {
    if !BATCH.contains(&body.policies.len()) {
        return Err(invalid(
            "policies",
            format!("must name {} to {} policies", BATCH.start(), BATCH.end()),
        ));
    }
    let mut policies = Vec::with_capacity(body.policies.len());
    for (i, name) in body.policies.iter().enumerate() {
        if body.policies[..i].contains(name) {
            return Err(invalid(&format!("policies[{i}]"), "is named twice"));
        }
        policies.push(resolve(&state, auth.principal.workspace_id(), name).await?);
    }
    let (headers, decisions) =
        decide(&state, &policies, &body.key, body.cost, body.dry_run).await?;
    let result = BatchCheckResult {
        allowed: decisions.iter().all(|d| d.allowed),
        decisions: policies
            .iter()
            .zip(&decisions)
            .map(|(p, d)| PolicyDecision {
                policy: p.name().to_owned(),
                result: d.into(),
            })
            .collect(),
    };
    Ok((headers, Json(result)).into_response())
}

/// Make `key`'s quota under a policy whole again.
#[utoipa::path(
    post,
    path = "/v1/rate-limit-policies/{name}/reset",
    operation_id = "resetRateLimit",
    tag = "rate-limits",
    security(("bearer" = [])),
    params(("name" = inline(PolicyName), Path, description = "The policy's name")),
    request_body = ResetBody,
    responses((status = 204, description = "The quota is whole again"))
)]
pub async fn reset(
    State(state): State<AppState>,
    auth: Authed<perm::RateLimitsWrite>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ResetBody>,
) -> ApiResult<StatusCode> {
    let policy = resolve(&state, auth.principal.workspace_id(), &name).await?;
    check_key(&body.key)?;
    state
        .limiter()
        .reset(&policy, &body.key)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}
