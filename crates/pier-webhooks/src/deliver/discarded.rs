//! A delivery whose job the engine discards (its runs used up by lease rescues or errors), or
//! the dispatch carrying it, ends `failed` in the same transaction, with the reason, and an ordered endpoint's line moves on:
//! no delivery stays `pending` without a live job behind it.

use pier_core::WorkspaceId;
use pier_db::{Publishing, Tx, with_tx};
use pier_jobs::{JobStore, OnDiscard};

use crate::dispatch::DispatchJob;
use crate::model::{DeliveryState, EndpointId, bounds};
use crate::publish::DeliverJob;

/// The [`OnDiscard`] hook of delivery and dispatch jobs.
#[derive(Debug)]
pub(crate) struct Discarded;

impl OnDiscard for Discarded {
    fn discarded<'a>(
        &'a self,
        jobs: &'a JobStore,
        tx: &'a mut Tx,
        workspace: &'a WorkspaceId,
        payload: serde_json::Value,
        error: &'a str,
    ) -> Publishing<'a> {
        Box::pin(async move {
            let (what, deliveries) = match serde_json::from_value::<DeliverJob>(payload.clone()) {
                Ok(job) => ("delivery", vec![job.delivery]),
                Err(_) => match serde_json::from_value::<DispatchJob>(payload) {
                    Ok(job) => (
                        "dispatch",
                        job.deliveries.into_iter().map(|d| d.delivery).collect(),
                    ),
                    Err(_) => return Ok(()),
                },
            };
            let reason: String = format!("the {what} job ran out of runs: {error}")
                .chars()
                .take(bounds::ERROR_CHARS)
                .collect();
            for delivery in &deliveries {
                end(jobs, tx, workspace, delivery, &reason).await?;
            }
            Ok(())
        })
    }
}

/// Ends a delivery still `pending` as `failed`, and moves an ordered endpoint's line on.
async fn end(
    jobs: &JobStore,
    tx: &mut Tx,
    workspace: &WorkspaceId,
    delivery: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    let ended: Option<(String, Option<i64>)> = with_tx!(tx, conn => {
        sqlx::query_as(
            "UPDATE webhook_deliveries SET state = $1, last_error = $2, \
             next_attempt_at = NULL, updated_at = $3 \
             WHERE workspace_id = $4 AND id = $5 AND state = 'pending' \
             RETURNING endpoint_id, seq",
        )
        .bind(DeliveryState::Failed.as_str())
        .bind(reason)
        .bind(jobs.now().as_micros())
        .bind(workspace.as_str())
        .bind(delivery)
        .fetch_optional(conn)
        .await
    })?;
    match ended {
        Some((endpoint, Some(_))) => {
            let endpoint = EndpointId::from_trusted(endpoint);
            crate::replay::start_next(jobs, tx, workspace, &endpoint).await
        }
        _ => Ok(()),
    }
}
