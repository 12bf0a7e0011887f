//! Recording attempts: the attempts of concurrent deliveries are gathered by group commit
//! ([`pier_db::group`]) and recorded in one transaction: one multi-row insert of the attempts,
//! one update of the deliveries that succeeded (per status code), then endpoint by endpoint, in
//! order (so two committers lock endpoint rows in the same order), the failure window and each
//! failed delivery's next step.
//!
//! Relaxed commits: if a crash loses one, it loses the jobs' completions after it too (the log
//! is written in order), so the jobs run again and re-send, which at-least-once delivery
//! already allows.

use std::collections::BTreeMap;
use std::sync::Arc;

use pier_core::{Timestamp, WorkspaceId};
use pier_db::{Tx, ids_in, with_tx};
use pier_jobs::JobFailure;

use super::Response;
use super::load::Pending;
use crate::model::{DeliveryState, DisabledReason, EndpointId, bounds};
use crate::store::{WebhookError, WebhookStore};

/// A request sent, to be recorded.
#[derive(Debug, Clone)]
pub(super) struct Attempted {
    pub workspace: WorkspaceId,
    pub delivery: String,
    pub pending: Arc<Pending>,
    pub endpoint: EndpointId,
    pub response: Response,
}

/// A delivery's final state and what led to it.
pub(super) struct Concluded<'a> {
    pub state: DeliveryState,
    /// `None` when no request was sent.
    pub response: Option<&'a Response>,
    pub error: Option<&'a str>,
}

/// The attempt's metrics, counted once however its record is committed.
pub(super) fn observe(response: &Response, pending: &Pending, now: Timestamp) {
    let succeeded = response.succeeded();
    metrics::counter!("pier_webhook_attempts_total",
        "outcome" => if succeeded { "succeeded" } else { "failed" },
        "status_class" => response.status_class())
    .increment(1);
    metrics::histogram!("pier_webhook_attempt_duration_seconds")
        .record(response.duration.as_secs_f64());
    if succeeded {
        let published = Timestamp::from_micros(pending.event_created_at);
        metrics::histogram!("pier_webhook_delivery_latency_seconds")
            .record(now.duration_since(published).as_secs_f64());
    }
}

/// Records a committer's gathering of attempts (see the module docs); each job fails (to be
/// retried at the schedule's time) only while its delivery has attempts left.
pub(super) async fn record_many(
    store: WebhookStore,
    attempts: Arc<Vec<Attempted>>,
) -> Result<Vec<Option<JobFailure>>, WebhookError> {
    let now = store.now();
    let mut tx = store.db.begin_relaxed().await?;
    insert_attempts(&mut tx, &attempts, now).await?;
    let current = count_attempts(&mut tx, &attempts, now).await?;
    mark_succeeded(&mut tx, &attempts, &current, now).await?;
    let mut failures = vec![None; attempts.len()];
    let mut by_endpoint: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, attempt) in attempts.iter().enumerate() {
        if !current[i] {
            // Another run counted first (this one's job was rescued while it sent, and ran
            // again): that run decided the delivery's fate; this request stays in the log.
            tracing::warn!(delivery_id = %attempt.delivery, "a stale delivery run's outcome changed nothing");
            failures[i] = Some(JobFailure::snooze(
                next_attempt(&mut tx, attempt, now).await?,
            ));
            continue;
        }
        let key = (attempt.workspace.as_str(), attempt.endpoint.as_str());
        by_endpoint.entry(key).or_default().push(i);
    }
    for indices in by_endpoint.into_values() {
        let (succeeded, failed): (Vec<usize>, Vec<usize>) = indices
            .into_iter()
            .partition(|&i| attempts[i].response.succeeded());
        if let Some(&first) = succeeded.first() {
            let attempt = &attempts[first];
            clear_failing(&mut tx, &attempt.workspace, &attempt.endpoint).await?;
        }
        for i in succeeded {
            let attempt = &attempts[i];
            pass_turn(&store, &mut tx, &attempt.workspace, &attempt.pending).await?;
        }
        for i in failed {
            failures[i] = settle_failure(&store, &mut tx, &attempts[i], now).await?;
        }
    }
    tx.commit().await?;
    Ok(failures)
}

/// Counts each attempt on its delivery, fenced: only where the delivery is still pending with
/// the number of requests its run loaded (`sent`). A run whose job was rescued while it sent
/// finds the count moved on (the new run counted first) or the delivery ended, and changes
/// nothing. One statement per workspace and count (usually one in all); returns, per attempt,
/// whether it was counted. The rows stay locked to the end of the transaction.
async fn count_attempts(
    tx: &mut Tx,
    attempts: &[Attempted],
    now: Timestamp,
) -> Result<Vec<bool>, WebhookError> {
    let mut groups: BTreeMap<(&str, u32), Vec<&str>> = BTreeMap::new();
    for attempt in attempts {
        let key = (attempt.workspace.as_str(), attempt.pending.sent);
        groups
            .entry(key)
            .or_default()
            .push(attempt.delivery.as_str());
    }
    let mut counted = std::collections::HashSet::new();
    for ((workspace, sent), mut deliveries) in groups {
        deliveries.sort_unstable();
        let sql = format!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, updated_at = $1 \
             WHERE workspace_id = $2 AND state = 'pending' AND attempts = $3 AND {} RETURNING id",
            ids_in(4, deliveries.len())
        );
        let ids: Vec<String> = with_tx!(tx, conn => {
            let mut query = sqlx::query_scalar(&sql)
                .persistent(false)
                .bind(now.as_micros())
                .bind(workspace)
                .bind(i64::from(sent));
            for id in &deliveries {
                query = query.bind(*id);
            }
            query.fetch_all(conn).await
        })?;
        counted.extend(ids.into_iter().map(|id| (workspace, id)));
    }
    Ok(attempts
        .iter()
        .map(|a| counted.contains(&(a.workspace.as_str(), a.delivery.clone())))
        .collect())
}

/// When a stale run's job should run again: the job may still be the delivery's (the run that
/// decided may have lost the lease to this one), so it is given back until the delivery's next
/// attempt, or at once if it has ended (the next run then finds nothing to send and completes).
async fn next_attempt(
    tx: &mut Tx,
    attempt: &Attempted,
    now: Timestamp,
) -> Result<Timestamp, WebhookError> {
    let next: Option<Option<i64>> = with_tx!(tx, conn => {
        sqlx::query_scalar(
            "SELECT next_attempt_at FROM webhook_deliveries WHERE workspace_id = $1 AND id = $2 \
             AND state = 'pending'",
        )
        .bind(attempt.workspace.as_str())
        .bind(attempt.delivery.as_str())
        .fetch_optional(conn)
        .await
    })?;
    Ok(next.flatten().map_or(now, Timestamp::from_micros))
}

/// Concludes the deliveries whose attempt succeeded and was counted: one statement per
/// workspace and status code (usually one in all).
async fn mark_succeeded(
    tx: &mut Tx,
    attempts: &[Attempted],
    current: &[bool],
    now: Timestamp,
) -> Result<(), WebhookError> {
    let mut groups: BTreeMap<(&str, Option<u16>), Vec<&str>> = BTreeMap::new();
    let counted = attempts.iter().zip(current).filter(|(_, c)| **c);
    for (attempt, _) in counted.filter(|(a, _)| a.response.succeeded()) {
        let key = (attempt.workspace.as_str(), attempt.response.status);
        groups
            .entry(key)
            .or_default()
            .push(attempt.delivery.as_str());
    }
    for ((workspace, status), deliveries) in groups {
        let sql = format!(
            "UPDATE webhook_deliveries SET state = $1, last_status = $2, last_error = NULL, \
             next_attempt_at = NULL, updated_at = $3 WHERE workspace_id = $4 AND {}",
            ids_in(5, deliveries.len())
        );
        with_tx!(tx, conn => {
            let mut query = sqlx::query(&sql)
                .persistent(false)
                .bind(DeliveryState::Succeeded.as_str())
                .bind(status.map(i64::from))
                .bind(now.as_micros())
                .bind(workspace);
            for id in &deliveries {
                query = query.bind(*id);
            }
            query.execute(conn).await.map(drop)
        })?;
    }
    Ok(())
}

/// Moves a delivery on after a failed attempt: to be retried, or failed for good; and its
/// endpoint's failure window with it.
async fn settle_failure(
    store: &WebhookStore,
    tx: &mut Tx,
    attempt: &Attempted,
    now: Timestamp,
) -> Result<Option<JobFailure>, WebhookError> {
    let Attempted {
        workspace,
        delivery,
        pending,
        endpoint,
        response,
    } = attempt;
    let error = response
        .error
        .clone()
        .unwrap_or_else(|| match response.status {
            Some(status) => format!("the endpoint answered {status}"),
            None => "no response".to_owned(),
        });
    let disable = if response.status == Some(410) {
        Some(DisabledReason::Gone)
    } else {
        let settings = &store.settings;
        let streak_gap = settings.schedule.streak_gap(settings.max_retry_after);
        let since = mark_failing(tx, workspace, endpoint, now, streak_gap).await?;
        (now.duration_since(since) >= store.settings.disable_after)
            .then_some(DisabledReason::Failing)
    };
    let next = match disable {
        Some(reason) => {
            store.disable(tx, workspace, endpoint, reason).await?;
            None
        }
        None => store.settings.schedule.after_failure(
            pending.sent.saturating_add(1),
            response.retry_after,
            store.settings.max_retry_after,
        ),
    };
    match next {
        Some(wait) => {
            let at = now.saturating_add(wait);
            let change = Change {
                state: DeliveryState::Pending,
                status: response.status,
                error: Some(&error),
                next_attempt_at: Some(at),
            };
            update_delivery(tx, workspace, delivery, now, change).await?;
            Ok(Some(JobFailure::new(error).retry_at(at)))
        }
        None => {
            let outcome = Concluded {
                state: DeliveryState::Failed,
                response: Some(response),
                error: Some(&error),
            };
            conclude(store, tx, workspace, delivery, pending, outcome).await?;
            Ok(None)
        }
    }
}

/// Gives a delivery its final state, and on an ordered endpoint the turn to the next in line.
pub(super) async fn conclude(
    store: &WebhookStore,
    tx: &mut Tx,
    workspace: &WorkspaceId,
    delivery: &str,
    pending: &Pending,
    outcome: Concluded<'_>,
) -> Result<(), WebhookError> {
    let change = Change {
        state: outcome.state,
        status: outcome.response.and_then(|r| r.status),
        error: outcome.error,
        next_attempt_at: None,
    };
    if update_delivery(tx, workspace, delivery, store.now(), change).await? {
        pass_turn(store, tx, workspace, pending).await?;
    }
    Ok(())
}

/// On an ordered endpoint, hands the turn to the next waiting delivery.
async fn pass_turn(
    store: &WebhookStore,
    tx: &mut Tx,
    workspace: &WorkspaceId,
    pending: &Pending,
) -> Result<(), WebhookError> {
    if pending.seq.is_some() {
        let endpoint = EndpointId::from_trusted(pending.endpoint_id.clone());
        crate::replay::start_next(&store.jobs, tx, workspace, &endpoint).await?;
    }
    Ok(())
}

/// Attempts per `INSERT`: 11 parameters each stays far below either engine's limit.
const INSERT_CHUNK: usize = 100;

/// Inserts the attempts' rows, many per statement.
async fn insert_attempts(
    tx: &mut Tx,
    attempts: &[Attempted],
    now: Timestamp,
) -> Result<(), WebhookError> {
    for chunk in attempts.chunks(INSERT_CHUNK) {
        let rows = (0..chunk.len())
            .map(|i| {
                let params = (1..=11).map(|p| format!("${}", i * 11 + p));
                format!("({})", params.collect::<Vec<_>>().join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO webhook_attempts (workspace_id, id, delivery_id, event_id, endpoint_id, \
             attempted_at, duration_ms, status_code, response_body, error, succeeded) VALUES {rows}"
        );
        with_tx!(tx, conn => {
            let mut query = sqlx::query(&sql);
            for attempt in chunk {
                let response = &attempt.response;
                let error = response
                    .error
                    .as_ref()
                    .map(|e| e.chars().take(bounds::ERROR_CHARS).collect::<String>());
                query = query
                    .bind(attempt.workspace.as_str())
                    .bind(crate::model::AttemptId::new(now).as_str().to_owned())
                    .bind(attempt.delivery.as_str())
                    .bind(attempt.pending.event_id.as_str())
                    .bind(attempt.endpoint.as_str())
                    .bind(now.as_micros())
                    .bind(i64::try_from(response.duration.as_millis()).unwrap_or(i64::MAX))
                    .bind(response.status.map(i64::from))
                    .bind(response.body.as_deref())
                    .bind(error)
                    .bind(response.succeeded());
            }
            query.execute(conn).await.map(drop)
        })?;
    }
    Ok(())
}

/// A delivery's new state after an attempt (or after finding it cannot be sent).
struct Change<'a> {
    state: DeliveryState,
    status: Option<u16>,
    error: Option<&'a str>,
    next_attempt_at: Option<Timestamp>,
}

/// Moves a pending delivery on; false (and nothing changed) if it is no longer pending.
async fn update_delivery(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    delivery: &str,
    now: Timestamp,
    change: Change<'_>,
) -> Result<bool, WebhookError> {
    let error = change
        .error
        .map(|e| e.chars().take(bounds::ERROR_CHARS).collect::<String>());
    let changed = with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, last_status = COALESCE($2, last_status), \
             last_error = $3, next_attempt_at = $4, updated_at = $5 \
             WHERE workspace_id = $6 AND id = $7 AND state = 'pending'",
        )
        .bind(change.state.as_str())
        .bind(change.status.map(i64::from))
        .bind(error)
        .bind(change.next_attempt_at.map(Timestamp::as_micros))
        .bind(now.as_micros())
        .bind(workspace.as_str())
        .bind(delivery)
        .execute(conn)
        .await
        .map(|done| done.rows_affected() > 0)
    })?;
    Ok(changed)
}

/// Extends the endpoint's failure streak, or starts one if none is running or the last failure
/// lies more than `streak_gap` back (a success ends a streak too: [`clear_failing`]); returns
/// when the streak started.
async fn mark_failing(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
    now: Timestamp,
    streak_gap: std::time::Duration,
) -> Result<Timestamp, WebhookError> {
    let since: Option<(i64,)> = with_tx!(tx, conn => {
        sqlx::query_as(
            "UPDATE webhook_endpoints SET failing_since = CASE WHEN failing_since IS NULL \
             OR last_failure_at IS NULL OR last_failure_at < $4 THEN $1 ELSE failing_since END, \
             last_failure_at = $1 WHERE workspace_id = $2 AND id = $3 RETURNING failing_since",
        )
        .bind(now.as_micros())
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .bind(now.saturating_sub(streak_gap).as_micros())
        .fetch_optional(conn)
        .await
    })?;
    Ok(since.map_or(now, |(s,)| Timestamp::from_micros(s)))
}

async fn clear_failing(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
) -> Result<(), WebhookError> {
    with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE webhook_endpoints SET failing_since = NULL WHERE workspace_id = $1 \
             AND id = $2 AND failing_since IS NOT NULL",
        )
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .execute(conn)
        .await
        .map(drop)
    })?;
    Ok(())
}
