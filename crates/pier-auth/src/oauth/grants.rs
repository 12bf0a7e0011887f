//! Grants and what is exchanged for them: authorization codes (single use, bound to the client,
//! the redirect URI and a PKCE challenge) and refresh tokens (rotated on every use).
//!
//! Races are settled by guarded updates, not by reading first: a code is spent by
//! `UPDATE … SET grant_id = … WHERE grant_id IS NULL`, a refresh token by
//! `UPDATE … SET used_at = … WHERE used_at IS NULL`. Of two concurrent uses under READ COMMITTED
//! one wins; the other finds the row already spent, which is reuse, and revokes the grant the
//! winner got (RFC 9700 §2.2.2, §4.14.2): if one of the two was an attacker, neither keeps access.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pier_core::{Timestamp, WorkspaceId, define_id};
use pier_db::{Tx, with_reader, with_tx};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::clients::{ClientId, OAuthClient};
use super::store::OAuthStore;
use crate::opaque::Opaque;
use crate::{PermissionSet, Role, UserId};

define_id!(
    /// A grant id, `grant_…`: named by every token issued under the grant.
    GrantId,
    "grant"
);

/// How long each thing lives.
#[derive(Debug, Clone, Copy)]
pub struct GrantLifetimes {
    /// An authorization code, from consent to exchange.
    pub code: Duration,
    /// An access token.
    pub access: Duration,
    /// A user's grant, and so its refresh tokens, from consent on (rotation does not extend it).
    pub refresh: Duration,
}

/// One authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: GrantId,
    pub client_id: ClientId,
    pub workspace_id: WorkspaceId,
    /// The user who consented; `None` for client credentials.
    pub user_id: Option<UserId>,
    pub scopes: PermissionSet,
    pub expires_at: Timestamp,
}

impl Grant {
    /// Who its tokens act for: the user, or the client itself.
    pub fn subject(&self) -> &str {
        self.user_id
            .as_ref()
            .map_or(self.client_id.as_str(), UserId::as_str)
    }
}

/// A grant in force, with the role its tokens act with now.
#[derive(Debug, Clone)]
pub struct LiveGrant {
    pub grant: Grant,
    /// What its tokens act as: the lower of the user's role in the workspace today and the
    /// client's registered role, or the client's role for client credentials.
    pub role: Role,
}

/// A grant and, when the client may refresh, its next refresh token.
#[derive(Debug)]
pub struct Issued {
    pub grant: Grant,
    pub refresh_token: Option<Opaque>,
}

/// What a user's consent produces a code for.
#[derive(Debug, Clone)]
pub struct NewCode<'a> {
    pub client: &'a OAuthClient,
    pub user_id: &'a UserId,
    pub workspace_id: &'a WorkspaceId,
    pub redirect_uri: &'a str,
    pub scopes: PermissionSet,
    pub code_challenge: &'a str,
}

/// Why an exchange was refused; the variants are RFC 6749's error codes.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("{0}")]
    InvalidScope(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Whether `challenge` has the shape of an S256 challenge (43 base64url characters).
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// RFC 7636 §4.1 and §4.6: the verifier is 43–128 unreserved characters, and its SHA-256 is
/// the challenge.
fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    let shaped = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    shaped && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: String,
    client_id: String,
    workspace_id: String,
    user_id: Option<String>,
    scopes: String,
    expires_at: i64,
}

impl From<GrantRow> for Grant {
    fn from(row: GrantRow) -> Self {
        Self {
            id: GrantId::from_trusted(row.id),
            client_id: ClientId::from_trusted(row.client_id),
            workspace_id: WorkspaceId::from_trusted(row.workspace_id),
            user_id: row.user_id.map(UserId::from_trusted),
            scopes: PermissionSet::from_names(&row.scopes),
            expires_at: Timestamp::from_micros(row.expires_at),
        }
    }
}

#[derive(sqlx::FromRow)]
struct CodeRow {
    client_id: String,
    workspace_id: String,
    user_id: String,
    redirect_uri: String,
    scopes: String,
    code_challenge: String,
    expires_at: i64,
    grant_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    #[sqlx(flatten)]
    grant: GrantRow,
    token_expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
    /// Whether the user (if any) still belongs to the workspace.
    member: bool,
}

#[derive(sqlx::FromRow)]
struct LiveRow {
    #[sqlx(flatten)]
    grant: GrantRow,
    revoked_at: Option<i64>,
    client_role: String,
    member_role: Option<String>,
}

const GRANT_COLUMNS: &str = "g.id, g.client_id, g.workspace_id, g.user_id, g.scopes, g.expires_at";

impl OAuthStore {
    /// A grant for one client-credentials token: it lives as long as the token.
    pub async fn grant_client_credentials(
        &self,
        client: &OAuthClient,
        scopes: PermissionSet,
    ) -> Result<Grant, sqlx::Error> {
        let now = self.clock.now();
        let grant = Grant {
            id: GrantId::new(now),
            client_id: client.client_id.clone(),
            workspace_id: client.workspace_id.clone(),
            user_id: None,
            scopes,
            expires_at: now.saturating_add(self.lifetimes.access),
        };
        let mut tx = self.db.begin().await?;
        self.insert_grant(&mut tx, &grant).await?;
        tx.commit().await?;
        Ok(grant)
    }

    /// Stores a code for a user's consent and returns it (for the redirect, once).
    pub async fn issue_code(&self, new: NewCode<'_>) -> Result<Opaque, sqlx::Error> {
        let code = Opaque::generate(Opaque::CODE);
        let expires = self.clock.now().saturating_add(self.lifetimes.code);
        let mut tx = self.db.begin().await?;
        with_tx!(&mut tx, conn => {
            sqlx::query(
                "INSERT INTO oauth_codes (code_hash, client_id, workspace_id, user_id, \
                 redirect_uri, scopes, code_challenge, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(code.hash())
            .bind(new.client.client_id.as_str())
            .bind(new.workspace_id.as_str())
            .bind(new.user_id.as_str())
            .bind(new.redirect_uri)
            .bind(new.scopes.to_names())
            .bind(new.code_challenge)
            .bind(expires.as_micros())
            .execute(conn)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        Ok(code)
    }

    /// Exchanges a code for a grant (RFC 6749 §4.1.3, RFC 7636 §4.6). The code must be this
    /// client's, unexpired, unspent, presented with the redirect URI it was issued for and the
    /// PKCE verifier of its challenge. A spent code presented again, with that URI and
    /// verifier, revokes what it was exchanged for.
    pub async fn redeem_code(
        &self,
        client: &OAuthClient,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Issued, GrantError> {
        let invalid = GrantError::InvalidGrant(
            "the code is unknown, expired, used, or was issued for another client or redirect URI",
        );
        let Some(code) = Opaque::parse(Opaque::CODE, code) else {
            return Err(invalid);
        };
        let hash = code.hash();
        let row: Option<CodeRow> = with_reader!(&self.db, pool => {
            sqlx::query_as(
                "SELECT client_id, workspace_id, user_id, redirect_uri, scopes, code_challenge, \
                 expires_at, grant_id FROM oauth_codes WHERE code_hash = $1",
            )
            .bind(&hash)
            .fetch_optional(pool)
            .await
        })?;
        let Some(row) = row.filter(|r| r.client_id == client.client_id.as_str()) else {
            return Err(invalid);
        };
        if row.redirect_uri != redirect_uri {
            return Err(invalid);
        }
        if !verifier_matches(verifier, &row.code_challenge) {
            return Err(GrantError::InvalidGrant(
                "the code_verifier does not match the code_challenge",
            ));
        }
        // Reuse ends the grant only when the whole exchange is repeated (the client, its
        // redirect URI and the PKCE verifier): a leaked code alone cannot end a user's grant.
        if let Some(spent) = &row.grant_id {
            self.revoke_grant_id(spent).await?;
            tracing::warn!(client_id = %client.client_id, "authorization code reused: grant revoked");
            return Err(invalid);
        }
        let now = self.clock.now();
        if row.expires_at <= now.as_micros() {
            return Err(invalid);
        }
        let grant = Grant {
            id: GrantId::new(now),
            client_id: client.client_id.clone(),
            workspace_id: WorkspaceId::from_trusted(row.workspace_id),
            user_id: Some(UserId::from_trusted(row.user_id)),
            scopes: PermissionSet::from_names(&row.scopes),
            expires_at: now.saturating_add(self.lifetimes.refresh),
        };
        let mut tx = self.db.begin().await?;
        self.insert_grant(&mut tx, &grant).await?;
        if !spend(&mut tx, Spend::Code(&grant.id), &hash).await? {
            // Another exchange of this code won the race: that is reuse too.
            drop(tx);
            self.revoke_code_grant(&hash).await?;
            return Err(invalid);
        }
        self.issue(tx, client, grant).await
    }

    /// Rotates a refresh token (RFC 6749 §6): the presented one is spent and a new one issued
    /// in the same grant. A spent token presented again revokes the grant.
    pub async fn refresh(&self, client: &OAuthClient, token: &str) -> Result<Issued, GrantError> {
        let invalid =
            GrantError::InvalidGrant("the refresh token is unknown, expired, used or revoked");
        let Some(token) = Opaque::parse(Opaque::REFRESH_TOKEN, token) else {
            return Err(invalid);
        };
        let hash = token.hash();
        let Some(row) = self.refresh_row(&hash).await? else {
            return Err(invalid);
        };
        if row.grant.client_id != client.client_id.as_str() {
            return Err(invalid);
        }
        let now = self.clock.now().as_micros();
        if row.used_at.is_some() {
            self.revoke_grant_id(&row.grant.id).await?;
            tracing::warn!(client_id = %client.client_id, "refresh token reused: grant revoked");
            return Err(invalid);
        }
        if row.revoked_at.is_some() || row.token_expires_at <= now || !row.member {
            return Err(invalid);
        }
        let grant = Grant::from(row.grant);
        let mut tx = self.db.begin().await?;
        if !spend(&mut tx, Spend::RefreshToken { at: now }, &hash).await? {
            drop(tx);
            self.revoke_grant_id(grant.id.as_str()).await?;
            return Err(invalid);
        }
        self.issue(tx, client, grant).await
    }

    /// Ends an exchange that spent its code or refresh token in `tx`: the grant's next refresh
    /// token, committed with the spending.
    async fn issue(
        &self,
        mut tx: Tx,
        client: &OAuthClient,
        grant: Grant,
    ) -> Result<Issued, GrantError> {
        let refresh_token = self.next_refresh_token(&mut tx, client, &grant).await?;
        tx.commit().await?;
        Ok(Issued {
            grant,
            refresh_token,
        })
    }

    /// The grant a refresh token belongs to while the token is usable (for introspection).
    pub async fn refresh_token_grant(&self, token: &str) -> Result<Option<Grant>, sqlx::Error> {
        let Some(token) = Opaque::parse(Opaque::REFRESH_TOKEN, token) else {
            return Ok(None);
        };
        let now = self.clock.now().as_micros();
        Ok(self.refresh_row(&token.hash()).await?.and_then(|row| {
            let usable = row.used_at.is_none()
                && row.revoked_at.is_none()
                && row.token_expires_at > now
                && row.member;
            usable.then(|| Grant::from(row.grant))
        }))
    }

    /// The grant `id` names, if it is in force: not revoked, its client still registered, its
    /// user still a member of the workspace. Checked on every request a bearer JWT makes, so
    /// answered from the cache of live grants (see [`OAuthStore`]).
    pub async fn live_grant(&self, id: &str) -> Result<Option<LiveGrant>, sqlx::Error> {
        if GrantId::parse(id).is_err() {
            return Ok(None);
        }
        self.live
            .get_or_load(id, || self.read_live_grant(id))
            .await
            .map_err(pier_db::unshare)
    }

    async fn read_live_grant(&self, id: &str) -> Result<Option<LiveGrant>, sqlx::Error> {
        let sql = format!(
            "SELECT {GRANT_COLUMNS}, g.revoked_at, c.role AS client_role, m.role AS member_role \
             FROM oauth_grants g JOIN oauth_clients c ON c.id = g.client_id \
             LEFT JOIN memberships m ON m.user_id = g.user_id AND m.workspace_id = g.workspace_id \
             WHERE g.id = $1"
        );
        let row: Option<LiveRow> = with_reader!(&self.db, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
        })?;
        let Some(row) = row.filter(|r| r.revoked_at.is_none()) else {
            return Ok(None);
        };
        let parse = |role: &str| role.parse::<Role>().map_err(crate::users::decode);
        let client_role = parse(&row.client_role)?;
        // A client acting for a user holds no more than either of them: the user's role today
        // and the role the client was registered with (ASVS 5.0 V8.2.1, V8.2.2: a delegated
        // credential must not reach functions its registrant could not). An admin's client
        // with every scope, consented to by an owner, acts as an admin.
        let role = match (&row.grant.user_id, row.member_role) {
            (None, _) => client_role,
            (Some(_), Some(role)) => parse(&role)?.at_most(client_role),
            (Some(_), None) => return Ok(None),
        };
        Ok(Some(LiveGrant {
            grant: Grant::from(row.grant),
            role,
        }))
    }

    /// Revokes the grant of a refresh token, if it is `client`'s (RFC 7009 §2.1). Whether or
    /// not it was, the endpoint answers the same.
    pub async fn revoke_refresh_token(
        &self,
        client: &OAuthClient,
        token: &str,
    ) -> Result<(), sqlx::Error> {
        let Some(token) = Opaque::parse(Opaque::REFRESH_TOKEN, token) else {
            return Ok(());
        };
        if let Some(row) = self.refresh_row(&token.hash()).await? {
            if row.grant.client_id == client.client_id.as_str() {
                self.revoke_grant_id(&row.grant.id).await?;
            }
        }
        Ok(())
    }

    /// Revokes grant `id` if it was issued to `client`.
    pub async fn revoke_grant(&self, client: &OAuthClient, id: &str) -> Result<(), sqlx::Error> {
        self.revoke_grant_of(id, Some(&client.client_id)).await
    }

    /// Ends everything `user` authorized with their old password, when `tx` commits: every
    /// grant (so its refresh tokens and access tokens) and every code not yet exchanged. A
    /// password change is a re-authentication of the account (ASVS 5.0 V7.4.3: after a
    /// password change, all other active sessions end, OAuth's included).
    pub(crate) async fn end_user_grants(
        &self,
        tx: &mut Tx,
        user: &UserId,
    ) -> Result<(), sqlx::Error> {
        let now = self.clock.now().as_micros();
        let revoked = with_tx!(tx, conn => {
            sqlx::query(
                "UPDATE oauth_grants SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(user.as_str())
            .execute(conn)
            .await
            .map(|done| done.rows_affected())
        })?;
        with_tx!(tx, conn => {
            sqlx::query("DELETE FROM oauth_codes WHERE user_id = $1 AND grant_id IS NULL")
                .bind(user.as_str())
                .execute(conn)
                .await
                .map(drop)
        })?;
        if revoked > 0 {
            // Password changes are rare: forgetting every cached grant costs a reload each.
            self.forget_on_commit(tx, super::store::EVERY_GRANT).await?;
        }
        Ok(())
    }

    /// Deletes expired codes and grants (and so their refresh tokens); returns how many rows.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let now = self.clock.now().as_micros();
        let mut tx = self.db.begin().await?;
        let mut deleted = 0;
        for sql in [
            "DELETE FROM oauth_codes WHERE expires_at <= $1",
            "DELETE FROM oauth_grants WHERE expires_at <= $1",
        ] {
            deleted += with_tx!(&mut tx, conn => {
                sqlx::query(sql)
                    .bind(now)
                    .execute(conn)
                    .await
                    .map(|done| done.rows_affected())
            })?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn refresh_row(&self, hash: &str) -> Result<Option<RefreshRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {GRANT_COLUMNS}, t.expires_at AS token_expires_at, t.used_at, g.revoked_at, \
             (g.user_id IS NULL OR EXISTS (SELECT 1 FROM memberships m \
               WHERE m.user_id = g.user_id AND m.workspace_id = g.workspace_id)) AS member \
             FROM oauth_refresh_tokens t JOIN oauth_grants g ON g.id = t.grant_id \
             WHERE t.token_hash = $1"
        );
        with_reader!(&self.db, pool => {
            sqlx::query_as(&sql).bind(hash).fetch_optional(pool).await
        })
    }

    async fn insert_grant(&self, tx: &mut Tx, grant: &Grant) -> Result<(), sqlx::Error> {
        with_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO oauth_grants (id, client_id, workspace_id, user_id, scopes, \
                 created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(grant.id.as_str())
            .bind(grant.client_id.as_str())
            .bind(grant.workspace_id.as_str())
            .bind(grant.user_id.as_ref().map(UserId::as_str))
            .bind(grant.scopes.to_names())
            .bind(self.clock.now().as_micros())
            .bind(grant.expires_at.as_micros())
            .execute(conn)
            .await
            .map(drop)
        })
    }

    /// A new refresh token in `grant`, if the client may refresh.
    async fn next_refresh_token(
        &self,
        tx: &mut Tx,
        client: &OAuthClient,
        grant: &Grant,
    ) -> Result<Option<Opaque>, sqlx::Error> {
        if !client.allows(super::GrantType::RefreshToken) {
            return Ok(None);
        }
        let token = Opaque::generate(Opaque::REFRESH_TOKEN);
        with_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO oauth_refresh_tokens (token_hash, grant_id, expires_at) \
                 VALUES ($1, $2, $3)",
            )
            .bind(token.hash())
            .bind(grant.id.as_str())
            .bind(grant.expires_at.as_micros())
            .execute(conn)
            .await
            .map(drop)
        })?;
        Ok(Some(token))
    }

    async fn revoke_code_grant(&self, code_hash: &str) -> Result<(), sqlx::Error> {
        let spent: Option<(Option<String>,)> = with_reader!(&self.db, pool => {
            sqlx::query_as("SELECT grant_id FROM oauth_codes WHERE code_hash = $1")
                .bind(code_hash)
                .fetch_optional(pool)
                .await
        })?;
        match spent.and_then(|(id,)| id) {
            Some(id) => self.revoke_grant_id(&id).await,
            None => Ok(()),
        }
    }

    async fn revoke_grant_id(&self, id: &str) -> Result<(), sqlx::Error> {
        self.revoke_grant_of(id, None).await
    }

    /// Revokes grant `id` (only if it was issued to `client`, when one is named) and forgets it
    /// on every node once revoked.
    async fn revoke_grant_of(
        &self,
        id: &str,
        client: Option<&ClientId>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let now = self.clock.now().as_micros();
        let revoked = with_tx!(&mut tx, conn => {
            let query = match client {
                None => sqlx::query(
                    "UPDATE oauth_grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(id),
                Some(client) => sqlx::query(
                    "UPDATE oauth_grants SET revoked_at = $1 \
                     WHERE id = $2 AND client_id = $3 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(id)
                .bind(client.as_str()),
            };
            query.execute(conn).await.map(|done| done.rows_affected() > 0)
        })?;
        if revoked {
            self.forget_on_commit(&mut tx, id).await?;
        }
        tx.commit().await
    }
}

/// What an exchange spends, once: a code (marked with the grant it became) or a refresh token
/// (marked with when it was used).
enum Spend<'a> {
    Code(&'a GrantId),
    RefreshToken { at: i64 },
}

/// The guarded update that spends the code or refresh token with hash `hash`; false when
/// another use spent it first (the module's comment says why that is reuse).
async fn spend(tx: &mut Tx, what: Spend<'_>, hash: &str) -> Result<bool, sqlx::Error> {
    with_tx!(tx, conn => {
        let query = match &what {
            Spend::Code(grant) => sqlx::query(
                "UPDATE oauth_codes SET grant_id = $1 WHERE code_hash = $2 AND grant_id IS NULL",
            )
            .bind(grant.as_str()),
            Spend::RefreshToken { at } => sqlx::query(
                "UPDATE oauth_refresh_tokens SET used_at = $1 \
                 WHERE token_hash = $2 AND used_at IS NULL",
            )
            .bind(*at),
        };
        query
            .bind(hash)
            .execute(conn)
            .await
            .map(|done| done.rows_affected() == 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_as_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_s256_challenge(challenge));
        assert!(verifier_matches(verifier, challenge));
        assert!(!verifier_matches(challenge, challenge));
        // `plain` (the verifier as its own challenge) never matches.
        assert!(!verifier_matches(verifier, verifier));
        assert!(!verifier_matches("short", challenge));
    }
}
