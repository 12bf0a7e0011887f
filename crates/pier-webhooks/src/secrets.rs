//! Signing keys at rest: sealed under a key derived from the server's secret key and bound to
//! their row, so neither the database alone nor a row copied to another endpoint yields one.
//! An endpoint always has an HMAC secret (`whsec_`, signatures `v1`) and, if it asks for one,
//! an Ed25519 key (`whsk_`, signatures `v1a`, verified with its public `whpk_` key).

use pier_core::{SubKey, Timestamp, WorkspaceId};
use pier_db::{Db, Tx, with_reader, with_tx};
use pier_webhook_verify::{SigningKey, SigningSecret};
use rand::RngCore;

use crate::model::EndpointId;

/// The bytes of a new HMAC secret: 32, within the 24 to 64 that Standard Webhooks allows.
const SECRET_BYTES: usize = 32;
const HMAC: &str = "hmac";
const ED25519: &str = "ed25519";

/// A stored secret that did not open.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "a stored signing secret could not be opened: is the server's secret key the one it was \
     sealed under?"
)]
pub struct SecretUnreadable;

/// The keys that sign an endpoint's deliveries, the current one of each kind first.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub hmac: Vec<SigningSecret>,
    pub ed25519: Vec<SigningKey>,
}

impl Keys {
    /// A fresh HMAC secret, and an Ed25519 key if `ed25519`.
    pub(crate) fn generate(ed25519: bool) -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let Ok(secret) = SigningSecret::from_bytes(bytes) else {
            unreachable!("{SECRET_BYTES} bytes is a valid secret length")
        };
        Self {
            hmac: vec![secret],
            ed25519: if ed25519 {
                vec![generate_ed25519()]
            } else {
                Vec::new()
            },
        }
    }

    /// The `webhook-signature` value: a `v1` signature per HMAC secret and, when `ed25519`, a
    /// `v1a` one per Ed25519 key, space-separated.
    pub(crate) fn signature_header(
        &self,
        ed25519: bool,
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> String {
        let symmetric = self
            .hmac
            .iter()
            .map(|s| pier_webhook_verify::sign(s, msg_id, timestamp, body));
        let asymmetric = self
            .ed25519
            .iter()
            .filter(|_| ed25519)
            .map(|k| pier_webhook_verify::sign_ed25519(k, msg_id, timestamp, body));
        symmetric.chain(asymmetric).collect::<Vec<_>>().join(" ")
    }
}

pub(crate) fn generate_ed25519() -> SigningKey {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    SigningKey::from_seed(seed)
}

/// What a sealed key is bound to: its workspace, endpoint and id.
fn context(workspace: &WorkspaceId, endpoint: &EndpointId, id: &str) -> Vec<u8> {
    format!("{workspace}/{endpoint}/{id}").into_bytes()
}

/// Stores every key of `keys`, sealed.
pub(crate) async fn insert(
    tx: &mut Tx,
    sealing: &SubKey,
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
    keys: &Keys,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let hmac = keys.hmac.iter().map(|s| (HMAC, s.as_bytes().to_vec()));
    let ed25519 = keys.ed25519.iter().map(|k| (ED25519, k.seed().to_vec()));
    for (kind, bytes) in hmac.chain(ed25519) {
        let id = pier_core::id::new_body(now);
        let sealed = sealing.seal(&bytes, &context(workspace, endpoint, &id));
        with_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO webhook_secrets (workspace_id, endpoint_id, id, kind, sealed, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(workspace.as_str())
            .bind(endpoint.as_str())
            .bind(&id)
            .bind(kind)
            .bind(sealed)
            .bind(now.as_micros())
            .execute(conn)
            .await
            .map(drop)
        })?;
    }
    Ok(())
}

/// Gives the current keys (those without an expiry) until `until` to keep signing, and drops
/// the ones an earlier rotation was already retiring: a rotation during an overlap ends it, so
/// an endpoint never has more than two keys of a kind signing, however often it rotates.
pub(crate) async fn retire(
    tx: &mut Tx,
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
    until: Timestamp,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, conn => {
        sqlx::query(
            "DELETE FROM webhook_secrets WHERE workspace_id = $1 AND endpoint_id = $2 \
             AND expires_at IS NOT NULL",
        )
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE webhook_secrets SET expires_at = $1 WHERE workspace_id = $2 \
             AND endpoint_id = $3",
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

/// The keys that sign at `now`: of each kind, the current one (which never expires) first; and
/// when the first of them stops signing (`None` while no rotation's overlap runs).
pub(crate) async fn live(
    db: &Db,
    sealing: &SubKey,
    workspace: &WorkspaceId,
    endpoint: &EndpointId,
    now: Timestamp,
) -> Result<(Keys, Option<Timestamp>), crate::WebhookError> {
    let rows: Vec<(String, String, Vec<u8>, Option<i64>)> = with_reader!(db, pool => {
        sqlx::query_as(
            "SELECT id, kind, sealed, expires_at FROM webhook_secrets WHERE workspace_id = $1 \
             AND endpoint_id = $2 AND (expires_at IS NULL OR expires_at > $3) \
             ORDER BY COALESCE(expires_at, 9223372036854775807) DESC, id DESC",
        )
        .bind(workspace.as_str())
        .bind(endpoint.as_str())
        .bind(now.as_micros())
        .fetch_all(pool)
        .await
    })?;
    let until = rows
        .iter()
        .filter_map(|row| row.3)
        .min()
        .map(Timestamp::from_micros);
    let mut keys = Keys::default();
    for (id, kind, sealed, _) in rows {
        let bytes = sealing
            .open(&sealed, &context(workspace, endpoint, &id))
            .map_err(|_| SecretUnreadable)?;
        match kind.as_str() {
            ED25519 => {
                let seed: [u8; 32] = bytes.try_into().map_err(|_| SecretUnreadable)?;
                keys.ed25519.push(SigningKey::from_seed(seed));
            }
            _ => keys
                .hmac
                .push(SigningSecret::from_bytes(bytes).map_err(|_| SecretUnreadable)?),
        }
    }
    Ok((keys, until))
}
