//! The keys that sign access tokens: Ed25519 (`EdDSA`), made by Pier and rotated on a schedule.
//!
//! The private half is stored sealed under the server's secret key, so the database alone signs
//! nothing; the public halves are served as a JWK set (`/.well-known/jwks.json`). The newest key
//! signs; an older one still verifies until every token it can have signed has expired (its
//! successor is older than a token's lifetime plus the clock leeway), and is then deleted.
//!
//! Nodes share the keys through the database. A node that meets a `kid` it does not know reloads
//! the set (at most once a second), so a key another node made is trusted as soon as it is
//! stored. A `kid` is only ever looked up here: no token header can point verification at a key
//! somewhere else.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use pier_core::{Clock, SubKey, Timestamp};
use pier_db::{Db, with_reader, with_tx};
use ring::signature::{Ed25519KeyPair, KeyPair};

/// The one algorithm Pier signs with, and so the only one it accepts.
pub const ALGORITHM: jsonwebtoken::Algorithm = jsonwebtoken::Algorithm::EdDSA;
const ALGORITHM_NAME: &str = "EdDSA";
/// How often an unknown `kid` may make a node reload the keys.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// One key of the set.
pub struct SigningKey {
    pub kid: String,
    pub created_at: Timestamp,
    /// The raw 32-byte Ed25519 public key, base64url.
    public_x: String,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// When keys rotate and how long tokens they sign can live.
#[derive(Debug, Clone, Copy)]
pub struct KeySchedule {
    /// A new key is made when the newest is this old.
    pub rotate_after: Duration,
    /// An old key verifies this long after its successor appeared: the access tokens' lifetime
    /// plus the clock leeway.
    pub verify_for: Duration,
}

#[derive(Debug, Default)]
struct Ring {
    /// Oldest first.
    keys: Vec<Arc<SigningKey>>,
    loaded_at: Option<Timestamp>,
}

/// The signing keys, shared by clones.
#[derive(Debug, Clone)]
pub struct SigningKeys(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    db: Db,
    clock: Arc<dyn Clock>,
    seal: SubKey,
    schedule: KeySchedule,
    ring: RwLock<Ring>,
    reload: tokio::sync::Mutex<()>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    public_key: String,
    private_key: String,
    created_at: i64,
}

/// Why the keys could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key `{0}` does not open under this server's secret key")]
    Sealed(String),
    #[error("signing key `{0}` is corrupt")]
    Corrupt(String),
    #[error("could not generate a signing key")]
    Generate,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl SigningKeys {
    /// Loads the stored keys, making the first (or a due) one.
    pub async fn load(
        db: Db,
        clock: Arc<dyn Clock>,
        seal: SubKey,
        schedule: KeySchedule,
    ) -> Result<Self, KeyError> {
        let keys = Self(Arc::new(Inner {
            db,
            clock,
            seal,
            schedule,
            ring: RwLock::new(Ring::default()),
            reload: tokio::sync::Mutex::new(()),
        }));
        keys.rotate_if_due().await?;
        Ok(keys)
    }

    /// Makes a new key when the newest is older than the schedule says, and deletes keys no
    /// token can need any more. Returns whether it made one. Run at start and periodically.
    pub async fn rotate_if_due(&self) -> Result<bool, KeyError> {
        self.reload().await?;
        let now = self.0.clock.now();
        let due = self
            .newest()
            .is_none_or(|key| key.created_at.saturating_add(self.0.schedule.rotate_after) <= now);
        if due {
            self.rotate().await?;
        }
        self.prune().await?;
        Ok(due)
    }

    /// Makes a new key, which signs from now on.
    pub async fn rotate(&self) -> Result<(), KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Generate)?;
        let now = self.0.clock.now();
        let kid = pier_core::id::new_body(now);
        let sealed = self.0.seal.seal(pkcs8.as_ref(), kid.as_bytes());
        let mut tx = self.0.db.begin().await?;
        with_tx!(&mut tx, conn => {
            sqlx::query(
                "INSERT INTO signing_keys (kid, algorithm, public_key, private_key, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&kid)
            .bind(ALGORITHM_NAME)
            .bind(URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()))
            .bind(STANDARD.encode(sealed))
            .bind(now.as_micros())
            .execute(conn)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        tracing::info!(kid, "new token signing key");
        self.reload().await
    }

    /// The key that signs now.
    pub fn newest(&self) -> Option<Arc<SigningKey>> {
        self.read(|ring| ring.keys.last().cloned())
    }

    /// The key named `kid`, if it may still verify; reloads once a second at most when it is
    /// not known, in case another node made it.
    pub async fn find(&self, kid: &str) -> Result<Option<Arc<SigningKey>>, KeyError> {
        if let Some(key) = self.verifying(kid) {
            return Ok(Some(key));
        }
        let recent = self
            .read(|ring| ring.loaded_at)
            .is_some_and(|at| at.saturating_add(RELOAD_EVERY) > self.0.clock.now());
        if !recent {
            self.reload().await?;
        }
        Ok(self.verifying(kid))
    }

    /// The public keys that may verify tokens, as a JWK set (RFC 7517, RFC 8037).
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self.read(|ring| {
            self.live(ring)
                .map(|key| {
                    serde_json::json!({
                        "kty": "OKP", "crv": "Ed25519", "x": key.public_x,
                        "kid": key.kid, "alg": ALGORITHM_NAME, "use": "sig",
                    })
                })
                .collect()
        });
        serde_json::json!({ "keys": keys })
    }

    fn verifying(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.read(|ring| self.live(ring).find(|key| key.kid == kid).cloned())
    }

    /// The keys whose tokens may still be alive: the newest, and those whose successor is
    /// younger than a token's lifetime plus leeway.
    fn live<'a>(&self, ring: &'a Ring) -> impl Iterator<Item = &'a Arc<SigningKey>> {
        let horizon = self
            .0
            .clock
            .now()
            .saturating_sub(self.0.schedule.verify_for);
        let successors = ring.keys.iter().skip(1).map(Some).chain([None]);
        ring.keys
            .iter()
            .zip(successors)
            .filter(move |(_, next)| next.is_none_or(|next| next.created_at > horizon))
            .map(|(key, _)| key)
    }

    fn read<T>(&self, f: impl FnOnce(&Ring) -> T) -> T {
        let ring = self.0.ring.read().unwrap_or_else(|e| e.into_inner());
        f(&ring)
    }

    async fn reload(&self) -> Result<(), KeyError> {
        let _one_at_a_time = self.0.reload.lock().await;
        let rows: Vec<KeyRow> = with_reader!(&self.0.db, pool => {
            sqlx::query_as(
                "SELECT kid, public_key, private_key, created_at FROM signing_keys \
                 WHERE algorithm = $1 ORDER BY created_at, kid",
            )
            .bind(ALGORITHM_NAME)
            .fetch_all(pool)
            .await
        })?;
        let known = self.read(|ring| ring.keys.clone());
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            match known.iter().find(|k| k.kid == row.kid) {
                Some(key) => keys.push(key.clone()),
                // A key sealed under another secret key (a node configured with a different
                // `secret_key`) is not trusted: its tokens fail here, and this node signs with
                // a key of its own.
                None => match self.open(row) {
                    Ok(key) => keys.push(Arc::new(key)),
                    Err(err) => tracing::warn!(error = %err, "token signing key skipped"),
                },
            }
        }
        let mut ring = self.0.ring.write().unwrap_or_else(|e| e.into_inner());
        *ring = Ring {
            keys,
            loaded_at: Some(self.0.clock.now()),
        };
        Ok(())
    }

    fn open(&self, row: KeyRow) -> Result<SigningKey, KeyError> {
        let corrupt = || KeyError::Corrupt(row.kid.clone());
        let sealed = STANDARD.decode(&row.private_key).map_err(|_| corrupt())?;
        let pkcs8 = self
            .0
            .seal
            .open(&sealed, row.kid.as_bytes())
            .map_err(|_| KeyError::Sealed(row.kid.clone()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| corrupt())?;
        let public_x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        if public_x != row.public_key {
            return Err(corrupt());
        }
        Ok(SigningKey {
            decoding: DecodingKey::from_ed_components(&public_x).map_err(|_| corrupt())?,
            encoding: EncodingKey::from_ed_der(&pkcs8),
            kid: row.kid,
            created_at: Timestamp::from_micros(row.created_at),
            public_x,
        })
    }

    /// Deletes keys that verify nothing any more.
    async fn prune(&self) -> Result<(), KeyError> {
        let dead: Vec<String> = self.read(|ring| {
            let live: Vec<&str> = self.live(ring).map(|k| k.kid.as_str()).collect();
            ring.keys
                .iter()
                .filter(|k| !live.contains(&k.kid.as_str()))
                .map(|k| k.kid.clone())
                .collect()
        });
        if dead.is_empty() {
            return Ok(());
        }
        let mut tx = self.0.db.begin().await?;
        for kid in &dead {
            with_tx!(&mut tx, conn => {
                sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                    .bind(kid)
                    .execute(conn)
                    .await
                    .map(drop)
            })?;
        }
        tx.commit().await?;
        self.reload().await
    }
}
