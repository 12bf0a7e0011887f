//! Liveness and readiness probes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::AppState;
use crate::problem::{ApiError, ApiResult};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "ready", "checks": [{"name": "database", "status": "ok"}]}))]
pub struct Health {
    /// `ok` when alive, `ready` when every dependency answered.
    pub status: &'static str,
    /// Each dependency checked and its state (`ok`); absent ones were not configured.
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

/// The node can serve traffic: it is not shutting down, and the database (and Redis, when
/// configured) answered within 2 s.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "checkReadiness",
    tag = "health",
    responses((status = 200, body = Health),
        (status = 503, description = "`not_ready`: the database or Redis did not answer in time; `draining`: the node is shutting down", body = crate::Problem))
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
    if let Some(redis) = state.redis() {
        let mut conn = redis.0.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
            Ok(Ok(_)) => checks.push(Check {
                name: "redis",
                status: "ok",
            }),
            Ok(Err(e)) => return Err(not_ready("redis", &e)),
            Err(e) => return Err(not_ready("redis", &e)),
        }
    }
    Ok(Json(Health {
        status: "ready",
        checks,
    }))
}

fn not_ready(dependency: &str, err: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(dependency, error = %err, "readiness check failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!("the {dependency} did not answer"),
    )
}
