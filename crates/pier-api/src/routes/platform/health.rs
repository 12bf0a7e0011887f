//! Liveness and readiness probes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::AppState;
use crate::problem::{ApiError, ApiResult};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "degraded", "checks": [{"name": "database", "status": "ok"},
    {"name": "redis", "status": "unavailable"}]}))]
pub struct Health {
    /// `ok` when alive; `ready` when every dependency answered, `degraded` when the node serves
    /// without one it can do without (Redis).
    pub status: &'static str,
    /// Each dependency checked and its state (`ok`, or `unavailable`); absent ones were not
    /// configured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    pub name: &'static str,
    pub status: &'static str,
}

/// The process is alive. Checks nothing else, so an orchestrator never restarts a healthy
/// process because its database is slow.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "checkLiveness",
    tag = "health",
    responses((status = 200, body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        checks: Vec::new(),
    })
}

/// The node can serve traffic: it is not shutting down, and its database answered within 2 s.
/// Redis, when configured, is checked too, but a node serves without it (rate limits fall back
/// to their failure mode, links to the database): it is reported as `degraded` with `200`, so
/// a Redis outage does not take every node out of rotation at once.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "checkReadiness",
    tag = "health",
    responses((status = 200, description = "`ready`, or `degraded` when Redis did not answer", body = Health),
        (status = 503, description = "`not_ready`: the database did not answer in time; `draining`: the node is shutting down", body = crate::Problem))
)]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    if state.is_draining() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the node is shutting down; send requests to another",
        ));
    }
    let mut checks = Vec::new();
    state
        .db()
        .ping(PROBE_TIMEOUT)
        .await
        .map_err(|e| not_ready("database", &e))?;
    checks.push(Check {
        name: "database",
        status: "ok",
    });
    let mut status = "ready";
    if let Some(up) = redis_up(&state).await {
        checks.push(Check {
            name: "redis",
            status: if up { "ok" } else { "unavailable" },
        });
        if !up {
            status = "degraded";
        }
    }
    Ok(Json(Health { status, checks }))
}

/// Whether Redis answered a `PING` within 2 s (`None`: no Redis configured), also kept in the
/// `pier_redis_up` gauge. A change is logged once, not at every probe.
pub async fn redis_up(state: &AppState) -> Option<bool> {
    static WAS_UP: AtomicBool = AtomicBool::new(true);
    let redis = state.redis()?;
    let mut conn = redis.0.clone();
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut conn);
    let failure = match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 2 s".to_owned()),
    };
    let up = failure.is_none();
    metrics::gauge!("pier_redis_up").set(if up { 1.0 } else { 0.0 });
    if WAS_UP.swap(up, Ordering::Relaxed) != up {
        match failure {
            Some(error) => {
                tracing::warn!(%error, "Redis is unavailable; serving degraded without it")
            }
            None => tracing::info!("Redis answers again"),
        }
    }
    Some(up)
}

fn not_ready(dependency: &str, err: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(dependency, error = %err, "readiness check failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!("the {dependency} did not answer"),
    )
}
