//! Invitations: instead of a one-time password read out to them, a new user gets a link that
//! lets them choose their own password, once, before it expires. The link carries a secret
//! (`pier_iv_…`, 256 random bits) stored only as its SHA-256. Accepting is settled by a guarded
//! update, so of two concurrent uses of one link only one sets a password.

use std::time::Duration;

use pier_core::Timestamp;
use pier_db::{Tx, with_reader, with_tx};

use crate::opaque::Opaque;
use crate::sessions::{SessionError, SessionStore, SignedIn};
use crate::users::{self, UserId};

/// An invitation's secret, to put in the link, and when it stops working.
#[derive(Debug)]
pub struct Invitation {
    pub token: Opaque,
    pub expires_at: Timestamp,
}

impl Invitation {
    pub(crate) async fn insert(
        tx: &mut Tx,
        user: &UserId,
        now: Timestamp,
        valid_for: Duration,
    ) -> Result<Self, sqlx::Error> {
        let invitation = Self {
            token: Opaque::generate(Opaque::INVITATION),
            expires_at: now.saturating_add(valid_for),
        };
        with_tx!(tx, conn => {
            sqlx::query("INSERT INTO invitations (token_hash, user_id, expires_at) VALUES ($1, $2, $3)")
                .bind(invitation.token.hash())
                .bind(user.as_str())
                .bind(invitation.expires_at.as_micros())
                .execute(conn)
                .await
                .map(drop)
        })?;
        Ok(invitation)
    }
}

impl SessionStore {
    /// Sets the invited user's password and signs them in (in their first workspace), ending
    /// any other session. The link works once: a used, expired or unknown one is refused.
    pub async fn accept_invitation(
        &self,
        token: &str,
        password: &str,
    ) -> Result<SignedIn, SessionError> {
        let token = Opaque::parse(Opaque::INVITATION, token).ok_or(SessionError::Invitation)?;
        users::check_password(password).map_err(SessionError::WeakPassword)?;
        let hash = token.hash();
        let row: Option<(String,)> = with_reader!(self.db(), pool => {
            sqlx::query_as(
                "SELECT user_id FROM invitations \
                 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
            )
            .bind(&hash)
            .bind(self.now().as_micros())
            .fetch_optional(pool)
            .await
        })?;
        let user_id = UserId::from_trusted(row.ok_or(SessionError::Invitation)?.0);
        let (user, stored) = users::by_id_with_password_hash(self.db(), &user_id)
            .await?
            .ok_or(SessionError::Invitation)?;
        let membership = users::memberships_of(self.db(), &user.id)
            .await?
            .into_iter()
            .min_by_key(|m| m.created_at)
            .ok_or(SessionError::NotAMember)?;
        let fresh = self.hash(password).await?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let claimed = with_tx!(&mut tx, conn => {
            sqlx::query(
                "UPDATE invitations SET used_at = $1 \
                 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1",
            )
            .bind(now.as_micros())
            .bind(&hash)
            .execute(conn)
            .await
            .map(|done| done.rows_affected() == 1)
        })?;
        if !claimed
            || !users::replace_password_hash(&mut tx, &user.id, &stored, &fresh, true, now).await?
        {
            return Err(SessionError::Invitation);
        }
        let user = users::User {
            must_change_password: false,
            updated_at: now,
            ..user
        };
        let signed_in = self
            .end_all_and_open(&mut tx, user, &membership.workspace_id, membership.role)
            .await?;
        tx.commit().await?;
        Ok(signed_in)
    }
}
