//! Signing secrets at rest: sealed under a key derived from the server's secret key and bound
//! to their row, so neither the database alone nor a row copied to another endpoint yields one.

use pier_core::{SubKey, Timestamp, WorkspaceId};
use pier_db::{Db, Tx, with_reader, with_tx};
use pier_webhook_verify::SigningSecret;
use rand::RngCore;

use crate::model::EndpointId;

/// The bytes of a new secret: 32, within the 24 to 64 that Standard Webhooks allows.
const SECRET_BYTES: usize = 32;

/// A stored secret that did not open.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "a stored signing secret could not be opened: is the server's secret key the one it was \
     sealed under?"
)]
pub struct SecretUnreadable;

pub(crate) fn generate() -> SigningSecret {
    let mut bytes = vec![0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let Ok(secret) = SigningSecret::from_bytes(bytes) else {
        unreachable!("{SECRET_BYTES} bytes is a valid secret length")
    };
    secret
}

/// What a sealed secret is bound to: its workspace, endpoint and id.
fn context(workspace: &WorkspaceId, endpoint: &EndpointId, id: &str) -> Vec<u8> {
    format!("{workspace}/{endpoint}/{id}").into_bytes()
}

pub(crate) async fn insert(
    tx: &mut Tx,
    sealing: &SubKey,
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
    secret: &SigningSecret,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let id = pier_core::id::new_body(now);
    let sealed = sealing.seal(secret.as_bytes(), &context(workspace, endpoint, &id));
    with_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO webhook_secrets (workspace_id, endpoint_id, id, sealed, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .bind(&id)
        .bind(sealed)
        .bind(now.as_micros())
        .execute(conn)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// Gives the secrets signing now until `until` (unless they expire sooner), and forgets the
/// ones already expired.
pub(crate) async fn retire(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
    now: Timestamp,
    until: Timestamp,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(
            "DELETE FROM webhook_secrets WHERE workspace_id = $1 AND endpoint_id = $2 \
             AND expires_at <= $3",
        )
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .bind(now.as_micros())
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE webhook_secrets SET expires_at = $1 WHERE workspace_id = $2 \
             AND endpoint_id = $3 AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(until.as_micros())
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .execute(conn)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// The secrets that sign at `now`: the current one (which never expires) first.
pub(crate) async fn live(
    db: &Db,
    sealing: &SubKey,
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
    now: Timestamp,
) -> Result<Vec<SigningSecret>, crate::WebhookError> {
    let rows: Vec<(String, Vec<u8>)> = with_reader!(db, pool => {
        sqlx::query_as(
            "SELECT id, sealed FROM webhook_secrets WHERE workspace_id = $1 \
             AND endpoint_id = $2 AND (expires_at IS NULL OR expires_at > $3) \
             ORDER BY COALESCE(expires_at, 9223372036854775807) DESC, id DESC",
        )
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .bind(now.as_micros())
        .fetch_all(pool)
        .await
    })?;
    rows.into_iter()
        .map(|(id, sealed)| {
            let bytes = sealing
                .open(&sealed, &context(workspace, endpoint, &id))
                .map_err(|_| SecretUnreadable)?;
            SigningSecret::from_bytes(bytes).map_err(|_| SecretUnreadable.into())
        })
        .collect()
}
