//! `/v1/rate-limit-policies` and `/v1/rate-limit-checks`: named policies and the decision API.
//!
//! A workspace checks its own policies and those of the server's configuration file; either
//! way its counts are its own. A check answers `200` whether or not it allows (the decision is
//! data) and carries the `RateLimit-Policy` and `RateLimit` fields of the policies it checked.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_core::{Timestamp, ValidationErrors, WorkspaceId};
use pier_ratelimit::{
    Algorithm, Decision, FailureMode, Policy, PolicyRecord, PolicySpec, StoreError, check_name,
};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::extract::{ApiJson, Authed, ETag, IfMatch, perm};
use crate::pagination::{CursorScope, Page, PageParams, Pagination};
use crate::problem::{ApiError, ApiResult};
use crate::rate_limit::insert_fields;
use crate::response::located;

/// The most policies one batch check may name.
const MAX_BATCH: usize = 10;
/// The longest caller key, in characters.
const MAX_KEY_CHARS: usize = 256;

/// A policy as `PUT` takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    algorithm: Algorithm,
    /// Units per period, 1 to 1,000,000,000.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    limit: u64,
    /// The period in seconds, 1 to 31,622,400 (366 days).
    #[schema(minimum = 1, maximum = 31_622_400)]
    period_seconds: u64,
    /// GCRA only: units spendable at once (default: `limit`).
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    burst: Option<u64>,
    /// What to decide when Redis cannot answer in time (default: `local`).
    failure_mode: Option<FailureMode>,
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
pub struct CheckBody {
    /// Whose quota: a user id, an IP address, a tenant… 1 to 256 characters.
    key: String,
    /// Units to spend (default 1); at most the policy's burst.
    #[schema(minimum = 1)]
    cost: Option<u64>,
    /// Answer without spending anything.
    #[serde(default)]
    dry_run: bool,
}

/// The body of a batch check: several policies for one caller.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCheckBody {
    /// 1 to 10 distinct policy names.
    #[schema(min_items = 1, max_items = 10)]
    policies: Vec<String>,
    key: String,
    #[schema(minimum = 1)]
    cost: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

/// The body of a reset.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    key: String,
}

/// A decision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

/// The policy `name` as this workspace sees it: the configuration file's, else its own.
async fn resolve(state: &AppState, workspace: &WorkspaceId, name: &str) -> ApiResult<Policy> {
    let not_found = || ApiError::not_found("rate-limit policy");
    check_name(name).map_err(|_| not_found())?;
    if let Some(spec) = state.configured_policy(name) {
        return Ok(Policy::workspace(workspace, name, *spec));
    }
    let record = state.policies().get(workspace, name).await?;
    record
        .map(|r| Policy::workspace(workspace, name, r.spec))
        .ok_or_else(not_found)
}

fn check_key(key: &str) -> ApiResult<()> {
    pier_core::validation::plain_text(key, 1, MAX_KEY_CHARS).map_err(|e| invalid("key", e))
}

fn refuse_configured(state: &AppState, name: &str) -> ApiResult<()> {
    if state.configured_policy(name).is_some() {
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
    tag = "rate-limits",
    security(("bearer" = [])),
    params(
        ("name" = String, Path, description = "1 to 64 letters, digits, `.`, `_` or `-`"),
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
        let current = state.policies().get(workspace, &name).await?;
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
    let (record, created) = state
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
    tag = "rate-limits",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The policy's name")),
    responses((status = 200, body = RateLimitPolicy, headers(("ETag" = String))))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authed<perm::RateLimitsRead>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    if let Some(spec) = state.configured_policy(&name) {
        let view = RateLimitPolicy::new(&name, spec, PolicySource::Config);
        return Ok(with_etag(StatusCode::OK, &view));
    }
    let record = match check_name(&name) {
        Ok(()) => {
            state
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
    tag = "rate-limits",
    security(("bearer" = [])),
    params(
        ("name" = String, Path, description = "The policy's name"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the ETag still matches")
    ),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete(
    State(state): State<AppState>,
    auth: Authed<perm::RateLimitsWrite>,
    if_match: IfMatch,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    refuse_configured(&state, &name)?;
    let not_found = || ApiError::not_found("rate-limit policy");
    check_name(&name).map_err(|_| not_found())?;
    let workspace = auth.principal.workspace_id();
    let current = state
        .policies()
        .get(workspace, &name)
        .await?
        .ok_or_else(not_found)?;
    if_match.check(&ETag::of(&RateLimitPolicy::stored(&current)))?;
    let seen = if_match.is_present().then_some(&current);
    if state.policies().delete(workspace, &name, seen).await? {
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
    tag = "rate-limits",
    security(("bearer" = [])),
    params(PageParams),
    responses((status = 200, body = Page<RateLimitPolicy>))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Authed<perm::RateLimitsRead>,
    page: Pagination,
) -> ApiResult<Page<RateLimitPolicy>> {
    let workspace = auth.principal.workspace_id();
    let scope = CursorScope::new("rate_limit_policies", workspace);
    let after = page.position::<String>(state.cursors(), &scope)?;
    let stored = state
        .policies()
        .list(workspace, after.as_deref(), page.fetch_limit())
        .await?;
    let mut rows: Vec<RateLimitPolicy> = stored.iter().map(RateLimitPolicy::stored).collect();
    rows.extend(
        state
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
    tag = "rate-limits",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The policy's name")),
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
    tag = "rate-limits",
    security(("bearer" = [])),
    request_body = BatchCheckBody,
    responses((status = 200, body = BatchCheckResult, headers(("RateLimit-Policy" = String), ("RateLimit" = String))))
)]
pub async fn check_batch(
    State(state): State<AppState>,
    auth: Authed<perm::RateLimitsCheck>,
    ApiJson(body): ApiJson<BatchCheckBody>,
) -> ApiResult<Response> {
    if body.policies.is_empty() || body.policies.len() > MAX_BATCH {
        return Err(invalid(
            "policies",
            format!("must name 1 to {MAX_BATCH} policies"),
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
    tag = "rate-limits",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The policy's name")),
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
