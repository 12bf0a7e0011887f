//! Sign-in sessions: what a browser's session cookie stands for.
//!
//! A session id is 32 random bytes (256 bits) that only the cookie carries; the database keeps
//! its SHA-256, so a copy of the table signs nobody in. A session acts in one workspace, with
//! the user's role there. It ends after `idle` without use or `absolute` after sign-in, whichever
//! comes first; it is replaced by a new id whenever its privileges change (sign-in itself, a
//! password change), so an id planted before cannot ride along (session fixation).
//!
//! Signing in with an unknown email costs the same Argon2id work as a wrong password, and both
//! get the same answer: the response and its timing tell an attacker nothing about which
//! addresses have accounts.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pier_core::{Busy, Clock, HashGate, Timestamp, WorkspaceId};
use pier_db::{Db, Tx, with_reader, with_tx};
use sha2::{Digest, Sha256};

use crate::oauth::OAuthStore;
use crate::sign_in_addresses;
use crate::users::{self, Email, User, UserId};
use crate::{PermissionSet, Role};

/// A session id as the cookie carries it. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSecret(String);

impl SessionSecret {
    const BYTES: usize = 32;

    fn generate() -> Self {
        Self(URL_SAFE_NO_PAD.encode(rand::random::<[u8; Self::BYTES]>()))
    }

    /// A cookie's value, if it has the shape of a session id; whether it is one is for the
    /// database to say.
    pub fn parse(text: &str) -> Option<Self> {
        let ok = URL_SAFE_NO_PAD
            .decode(text)
            .is_ok_and(|bytes| bytes.len() == Self::BYTES);
        ok.then(|| Self(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// The session's anti-CSRF token: derived from the id, so it needs no storage, and
    /// unguessable without the id, which scripts of other sites cannot read.
    pub fn csrf_token(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(b"pier csrf token\0");
        digest.update(self.0.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.finalize())
    }
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret([redacted])")
    }
}

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session unused for this long ends.
    pub idle: Duration,
    /// A session ends this long after sign-in, however much it is used.
    pub absolute: Duration,
}

/// A session a user is signed in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: UserId,
    pub workspace_id: WorkspaceId,
    pub role: Role,
    /// Until the user chose their own password, the session may do nothing else.
    pub must_change_password: bool,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// The absolute end.
    pub expires_at: Timestamp,
}

impl Session {
    pub fn permissions(&self) -> PermissionSet {
        self.role.permissions()
    }

    /// When the session ends if it is not used before.
    pub fn idle_until(&self, limits: SessionLimits) -> Timestamp {
        self.last_seen_at
            .saturating_add(limits.idle)
            .min(self.expires_at)
    }
}

/// Why signing in or changing a password was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Unknown email or wrong password: deliberately one answer.
    #[error("the email or the password is wrong")]
    WrongCredentials,
    #[error("the user is not a member of that workspace")]
    NotAMember,
    #[error("the new password: {0}")]
    WeakPassword(String),
    #[error("the invitation link is unknown, used or expired: ask for a new one")]
    Invitation,
    #[error("could not hash the password: {0}")]
    Hash(String),
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A fresh session and the id to set in the cookie.
#[derive(Debug)]
pub struct SignedIn {
    pub secret: SessionSecret,
    pub session: Session,
    pub user: User,
}

/// Checked against when the email is unknown, so that case costs what a wrong password costs.
static UNKNOWN_USER_HASH: LazyLock<String> = LazyLock::new(pier_core::password::unmatchable);

/// Only writes `last_seen_at` when it is older than this: a busy session costs one write a
/// minute, not one per request. Idle expiry is as precise as this.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

#[derive(sqlx::FromRow)]
struct SessionRow {
    user_id: String,
    workspace_id: String,
    role: String,
    must_change_password: bool,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
}

impl TryFrom<SessionRow> for Session {
    type Error = sqlx::Error;

    fn try_from(row: SessionRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            user_id: UserId::from_trusted(row.user_id),
            workspace_id: WorkspaceId::from_trusted(row.workspace_id),
            role: row.role.parse::<Role>().map_err(users::decode)?,
            must_change_password: row.must_change_password,
            created_at: Timestamp::from_micros(row.created_at),
            last_seen_at: Timestamp::from_micros(row.last_seen_at),
            expires_at: Timestamp::from_micros(row.expires_at),
        })
    }
}

/// Sessions, and the OAuth grants a password change ends with them.
#[derive(Debug, Clone)]
pub struct SessionStore {
    db: Db,
    clock: Arc<dyn Clock>,
    limits: SessionLimits,
    oauth: OAuthStore,
    hashing: HashGate,
}

impl SessionStore {
    /// Sessions on `db`; password checks and hashes pass through `hashing`, the node's bound.
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        limits: SessionLimits,
        oauth: OAuthStore,
        hashing: HashGate,
    ) -> Self {
        Self {
            db,
            clock,
            limits,
            oauth,
            hashing,
        }
    }

    /// Deletes the sessions that have ended (idle or past their absolute end) and were not
    /// presented since, and the sign-in addresses no longer familiar; returns how many rows.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let forgotten = sign_in_addresses::forget_older(
            &mut tx,
            now.saturating_sub(sign_in_addresses::FAMILIAR_FOR),
        )
        .await?;
        let deleted = forgotten
            + with_tx!(&mut tx, conn => {
                sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
                    .bind(now.as_micros())
                    .bind(now.saturating_sub(self.limits.idle).as_micros())
                    .execute(conn)
                    .await
                    .map(|done| done.rows_affected())
            })?;
        tx.commit().await?;
        Ok(deleted)
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Checks the password and opens a session in `workspace` (or the user's first workspace).
    /// A hash made with older parameters is replaced by one made with today's. The session is
    /// only opened if the password is still the one checked (see
    /// [`users::replace_password_hash`]).
    /// `from` is the client's address, remembered as familiar to the account on success (see
    /// [`SessionStore::is_familiar`]).
    pub async fn sign_in(
        &self,
        email: &Email,
        password: &str,
        workspace: Option<&WorkspaceId>,
        from: Option<&str>,
    ) -> Result<SignedIn, SessionError> {
        let found = users::with_password_hash(&self.db, email).await?;
        let (user, stored) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, UNKNOWN_USER_HASH.clone()),
        };
        if !self.verify(password, &stored).await? {
            return Err(SessionError::WrongCredentials);
        }
        let user = user.ok_or(SessionError::WrongCredentials)?;
        let hash = if pier_core::password::needs_rehash(&stored) {
            self.hash(password).await?
        } else {
            stored.clone()
        };
        let memberships = users::memberships_of(&self.db, &user.id).await?;
        let membership = match workspace {
            Some(wanted) => memberships.iter().find(|m| &m.workspace_id == wanted),
            None => memberships.iter().min_by_key(|m| m.created_at),
        }
        .ok_or(SessionError::NotAMember)?;
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        if !users::replace_password_hash(&mut tx, &user.id, &stored, &hash, false, now).await? {
            return Err(SessionError::WrongCredentials);
        }
        if let Some(address) = from {
            sign_in_addresses::remember(&mut tx, &user.id, address, now).await?;
        }
        let signed_in = self
            .open(&mut tx, user, &membership.workspace_id, membership.role)
            .await?;
        tx.commit().await?;
        Ok(signed_in)
    }

    /// Whether the account of `email` signed in from `address` in the last
    /// [`FAMILIAR_FOR`](sign_in_addresses::FAMILIAR_FOR) (see [`crate::sign_in_addresses`]).
    pub async fn is_familiar(&self, email: &Email, address: &str) -> Result<bool, sqlx::Error> {
        let since = self
            .clock
            .now()
            .saturating_sub(sign_in_addresses::FAMILIAR_FOR);
        sign_in_addresses::is_familiar(&self.db, email, address, since).await
    }

    /// The signed-in user (without their password hash).
    pub async fn user(&self, id: &UserId) -> Result<Option<User>, sqlx::Error> {
        Ok(users::by_id_with_password_hash(&self.db, id)
            .await?
            .map(|(user, _)| user))
    }

    /// The live session `secret` stands for, if any. An expired one is deleted on sight.
    pub async fn authenticate(
        &self,
        secret: &SessionSecret,
    ) -> Result<Option<Session>, sqlx::Error> {
        let hash = secret.hash();
        let row: Option<SessionRow> = with_reader!(&self.db, pool => {
            sqlx::query_as(
                "SELECT sessions.user_id, sessions.workspace_id, memberships.role, \
                 users.must_change_password, sessions.created_at, sessions.last_seen_at, \
                 sessions.expires_at FROM sessions \
                 JOIN users ON users.id = sessions.user_id \
                 JOIN memberships ON memberships.user_id = sessions.user_id \
                   AND memberships.workspace_id = sessions.workspace_id \
                 WHERE sessions.id_hash = $1",
            )
            .bind(&hash)
            .fetch_optional(pool)
            .await
        })?;
        let Some(session) = row.map(Session::try_from).transpose()? else {
            return Ok(None);
        };
        let now = self.clock.now();
        if session.idle_until(self.limits) <= now {
            self.delete(&hash).await?;
            return Ok(None);
        }
        if session.last_seen_at.saturating_add(TOUCH_EVERY) <= now {
            let mut tx = self.db.begin().await?;
            with_tx!(&mut tx, conn => {
                sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
                    .bind(now.as_micros())
                    .bind(&hash)
                    .execute(conn)
                    .await
                    .map(drop)
            })?;
            tx.commit().await?;
        }
        Ok(Some(session))
    }

    /// Ends the session (signing out). Ending one that has already ended is not an error.
    pub async fn sign_out(&self, secret: &SessionSecret) -> Result<(), sqlx::Error> {
        self.delete(&secret.hash()).await
    }

    /// Checks the current password, stores the new one, ends every session and OAuth grant of
    /// the user and opens a new session in the same workspace: other devices and applications
    /// are signed out, and this one continues under a new id.
    pub async fn change_password(
        &self,
        session: &Session,
        current: &str,
        new: &str,
    ) -> Result<SignedIn, SessionError> {
        users::check_password(new).map_err(SessionError::WeakPassword)?;
        let user = users::by_id_with_password_hash(&self.db, &session.user_id).await?;
        let Some((user, stored)) = user else {
            return Err(SessionError::WrongCredentials);
        };
        if !self.verify(current, &stored).await? {
            return Err(SessionError::WrongCredentials);
        }
        let fresh = self.hash(new).await?;
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        if !users::replace_password_hash(&mut tx, &user.id, &stored, &fresh, true, now).await? {
            return Err(SessionError::WrongCredentials);
        }
        let user = User {
            must_change_password: false,
            updated_at: now,
            ..user
        };
        let signed_in = self
            .end_all_and_open(&mut tx, user, &session.workspace_id, session.role)
            .await?;
        tx.commit().await?;
        Ok(signed_in)
    }

    /// Checks a password within the node's bound on concurrent hashes.
    pub(crate) async fn verify(&self, password: &str, phc: &str) -> Result<bool, SessionError> {
        Ok(self.hashing.verify(password, phc).await?)
    }

    /// Hashes a password within the node's bound on concurrent hashes.
    pub(crate) async fn hash(&self, password: &str) -> Result<String, SessionError> {
        self.hashing
            .hash(password)
            .await?
            .map_err(SessionError::Hash)
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Ends every session of `user`, every OAuth grant they gave and every code not yet
    /// exchanged, and opens a new session: after their password changed or was set.
    pub(crate) async fn end_all_and_open(
        &self,
        tx: &mut Tx,
        user: User,
        workspace: &WorkspaceId,
        role: Role,
    ) -> Result<SignedIn, sqlx::Error> {
        with_tx!(tx, conn => {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(user.id.as_str())
                .execute(conn)
                .await
                .map(drop)
        })?;
        self.oauth.end_user_grants(tx, &user.id).await?;
        self.open(tx, user, workspace, role).await
    }

    async fn open(
        &self,
        tx: &mut Tx,
        user: User,
        workspace: &WorkspaceId,
        role: Role,
    ) -> Result<SignedIn, sqlx::Error> {
        let secret = SessionSecret::generate();
        let now = self.clock.now();
        let session = Session {
            user_id: user.id.clone(),
            workspace_id: workspace.clone(),
            role,
            must_change_password: user.must_change_password,
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(self.limits.absolute),
        };
        with_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO sessions (id_hash, user_id, workspace_id, created_at, last_seen_at, \
                 expires_at) VALUES ($1, $2, $3, $4, $4, $5)",
            )
            .bind(secret.hash())
            .bind(user.id.as_str())
            .bind(workspace.as_str())
            .bind(now.as_micros())
            .bind(session.expires_at.as_micros())
            .execute(conn)
            .await
            .map(drop)
        })?;
        Ok(SignedIn {
            secret,
            session,
            user,
        })
    }

    async fn delete(&self, hash: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        with_tx!(&mut tx, conn => {
            sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                .bind(hash)
                .execute(conn)
                .await
                .map(drop)
        })?;
        tx.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_256_random_bits_shown_to_nobody() {
        let secret = SessionSecret::generate();
        assert_eq!(secret.expose().len(), 43);
        assert_eq!(SessionSecret::parse(secret.expose()), Some(secret.clone()));
        assert_ne!(secret, SessionSecret::generate());
        assert!(!format!("{secret:?}").contains(secret.expose()));
        assert_ne!(secret.hash(), secret.expose());
        assert_ne!(secret.csrf_token(), SessionSecret::generate().csrf_token());
        for bad in [
            "",
            "short",
            &"A".repeat(44),
            &format!("{}!", &secret.expose()[1..]),
        ] {
            assert_eq!(SessionSecret::parse(bad), None, "{bad:?}");
        }
    }
}
