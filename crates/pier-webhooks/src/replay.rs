//! Sending again what already ended, the attempts history, and the turn-taking of ordered
//! endpoints that both the delivery job and a replay go through.

use pier_core::{Timestamp, WorkspaceId};
use pier_db::{Bind, Statement, Tx, with_tx};
use pier_jobs::JobStore;

use crate::model::{Attempt, AttemptId, Delivery, DeliveryId, Endpoint, EndpointId, EventId};
use crate::store::{WebhookError, WebhookStore, decode};

/// The most deliveries one recover call sends again; the caller repeats it for more.
pub const MAX_RECOVER: u32 = 10_000;

/// Why a delivery cannot be sent again now.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the delivery is still under way; it can be sent again once it has ended")]
    Unfinished,
    #[error("the endpoint is disabled; enable it first")]
    EndpointDisabled,
    #[error(transparent)]
    Webhook(#[from] WebhookError),
}

impl From<sqlx::Error> for ReplayError {
    fn from(err: sqlx::Error) -> Self {
        Self::Webhook(err.into())
    }
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    id: String,
    delivery_id: String,
    event_id: String,
    endpoint_id: String,
    attempted_at: i64,
    duration_ms: i64,
    status_code: Option<i64>,
    response_body: Option<String>,
    error: Option<String>,
    succeeded: bool,
}

impl TryFrom<AttemptRow> for Attempt {
    type Error = sqlx::Error;
    fn try_from(row: AttemptRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: AttemptId::from_trusted(row.id),
            delivery_id: DeliveryId::from_trusted(row.delivery_id),
            event_id: EventId::from_trusted(row.event_id),
            endpoint_id: EndpointId::from_trusted(row.endpoint_id),
            attempted_at: Timestamp::from_micros(row.attempted_at),
            duration_ms: u64::try_from(row.duration_ms).map_err(decode)?,
            status_code: row
                .status_code
                .map(|s| u16::try_from(s).map_err(decode))
                .transpose()?,
            response_body: row.response_body,
            error: row.error,
            succeeded: row.succeeded,
        })
    }
}

/// Which deliveries of an endpoint a replay reopens.
#[derive(Clone, Copy)]
enum Pick<'a> {
    /// This one, if it has ended.
    Ended(&'a DeliveryId),
    /// The failed ones of events published at or after this time, oldest first, at most
    /// [`MAX_RECOVER`].
    FailedSince(Timestamp),
}

impl Pick<'_> {
    /// The condition on the deliveries of the endpoint (`$1`, `$2`) that binds the pick as `$3`.
    fn condition(self) -> String {
        match self {
            Self::Ended(_) => "AND id = $3 AND state IN ('succeeded', 'failed')".to_owned(),
            Self::FailedSince(_) => format!(
                "AND id IN (SELECT id FROM webhook_deliveries WHERE workspace_id = $1 \
                 AND endpoint_id = $2 AND state = 'failed' AND created_at >= $3 \
                 ORDER BY created_at, id LIMIT {MAX_RECOVER})"
            ),
        }
    }
}

impl WebhookStore {
    /// An endpoint's attempts, newest first, `limit` after the one with id `before`.
    pub async fn attempts(
        &self,
        workspace: &WorkspaceId,
        endpoint: &EndpointId,
        before: Option<String>,
        limit: u32,
    ) -> Result<Vec<Attempt>, sqlx::Error> {
        attempts_statement(workspace, endpoint, before, limit)
            .fetch_decoded::<AttemptRow, Attempt>(&self.db)
            .await
    }

    /// Sends an ended delivery (failed or succeeded) again, with a fresh retry schedule.
    /// `None` when there is no such delivery.
    pub async fn retry(
        &self,
        workspace: &WorkspaceId,
        id: &DeliveryId,
    ) -> Result<Option<Delivery>, ReplayError> {
        let Some(delivery) = self.delivery(workspace, id).await? else {
            return Ok(None);
        };
        let Some(endpoint) = self.endpoint(workspace, &delivery.endpoint_id).await? else {
            return Ok(None);
        };
        if !endpoint.enabled {
            return Err(ReplayError::EndpointDisabled);
        }
        let mut tx = self.db.begin().await?;
        let reopened = self.reopen(&mut tx, &endpoint, Pick::Ended(id)).await?;
        if reopened == 0 {
            return Err(ReplayError::Unfinished);
        }
        tx.commit().await?;
        Ok(self.delivery(workspace, id).await?)
    }

    /// Sends again the endpoint's failed deliveries of events published at or after `since`
    /// (at most [`MAX_RECOVER`] per call); returns how many.
    pub async fn recover(&self, endpoint: &Endpoint, since: Timestamp) -> Result<u64, ReplayError> {
        if !endpoint.enabled {
            return Err(ReplayError::EndpointDisabled);
        }
        let mut tx = self.db.begin().await?;
        let reopened = self
            .reopen(&mut tx, endpoint, Pick::FailedSince(since))
            .await?;
        tx.commit().await?;
        Ok(reopened)
    }

    /// Reopens the endpoint's deliveries that `pick` names: pending with a job each, or on an
    /// ordered endpoint back in line by their original order, the first of them started if
    /// the endpoint is idle.
    async fn reopen(
        &self,
        tx: &mut Tx,
        endpoint: &Endpoint,
        pick: Pick<'_>,
    ) -> Result<u64, WebhookError> {
        let workspace = &endpoint.workspace_id;
        // An ordered endpoint's deliveries go back in line (all of them carry a place in it if
        // it was ordered when they were published).
        let sql = format!(
            "UPDATE webhook_deliveries SET state = CASE WHEN seq IS NULL THEN 'pending' \
             ELSE 'waiting' END, next_attempt_at = NULL, updated_at = $4 \
             WHERE workspace_id = $1 AND endpoint_id = $2 {} \
             RETURNING id, seq IS NULL AS free, attempts",
            pick.condition()
        );
        let reopened: Vec<(String, bool, i64)> = with_tx!(tx, conn => {
            let query = sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(endpoint.id.as_str());
            let query = match pick {
                Pick::Ended(id) => query.bind(id.as_str()),
                Pick::FailedSince(at) => query.bind(at.as_micros()),
            };
            query.bind(self.clock.now().as_micros()).fetch_all(conn).await
        })?;
        let free: Vec<(&str, i64)> = reopened
            .iter()
            .filter(|(_, free, _)| *free)
            .map(|(id, _, sent)| (id.as_str(), *sent))
            .collect();
        crate::publish::enqueue(&self.jobs, tx, workspace, &free).await?;
        if reopened.iter().any(|(_, free, _)| !free) {
            start_next(&self.jobs, tx, workspace, &endpoint.id).await?;
        }
        Ok(reopened.len() as u64)
    }
}

/// Starts an ordered endpoint's next waiting delivery unless one is under way. The
/// endpoint's row lock orders this against a publish deciding whether its delivery waits
/// (see [`crate::publish`]) and against another delivery ending.
pub(crate) async fn start_next(
    jobs: &JobStore,
    tx: &mut Tx,
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
) -> Result<(), sqlx::Error> {
    let next: Option<(String, i64)> = with_tx!(tx, conn => {
        sqlx::query(
            "UPDATE webhook_endpoints SET next_seq = next_seq WHERE workspace_id = $1 \
             AND id = $2",
        )
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .execute(&mut *conn)
        .await?;
        sqlx::query_as(
            "UPDATE webhook_deliveries SET state = 'pending' WHERE workspace_id = $1 \
             AND id = (SELECT id FROM webhook_deliveries WHERE workspace_id = $1 \
             AND endpoint_id = $2 AND seq IS NOT NULL AND state = 'waiting' \
             ORDER BY seq LIMIT 1) \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries WHERE workspace_id = $1 \
             AND endpoint_id = $2 AND seq IS NOT NULL AND state = 'pending') \
             RETURNING id, attempts",
        )
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .fetch_optional(conn)
        .await
    })?;
    match next {
        Some((id, sent)) => crate::publish::enqueue(jobs, tx, workspace, &[(&id, sent)]).await,
        None => Ok(()),
    }
}

/// The statement [`WebhookStore::attempts`] runs, along `webhook_attempts_by_endpoint`.
pub fn attempts_statement(
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
    before: Option<String>,
    limit: u32,
) -> Statement {
    Statement::keyset_page(
        "SELECT id, delivery_id, event_id, endpoint_id, attempted_at, duration_ms, status_code, \
         response_body, error, succeeded FROM webhook_attempts",
        workspace.as_str(),
        vec![("endpoint_id", Bind::Text(endpoint.as_str().to_owned()))],
        (&["id"], true),
        before.map(|id| vec![Bind::Text(id)]),
        limit,
    )
}
