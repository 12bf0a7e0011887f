//! The clients' part of [`OAuthStore`]: registration, listing, reading and deletion, and client
//! authentication at the token endpoint.

use std::sync::Arc;
use std::time::Duration;

use pier_cache::{Cache, Settings};
use pier_core::{Clock, WorkspaceId};
use pier_db::{Bind, Db, Notice, Relay, Statement, Tx, with_reader, with_tx};

use super::clients::{self, COLUMNS, ClientId, ClientRow, ClientType, NewClient, OAuthClient};
use super::grants::{GrantLifetimes, LiveGrant};
use crate::opaque::Opaque;

/// The channel on which a node tells the others a grant ended; the payload is the grant's id,
/// or [`EVERY_GRANT`].
const ENDED: &str = "pier_oauth";
/// The payload that ends what every node remembers (a client's deletion ends all its grants).
pub(super) const EVERY_GRANT: &str = "*";
/// Live grants remembered: a bearer request reads its grant from here, not the database.
const LIVE_GRANTS: Settings = Settings {
    capacity: 10_000,
    // What a missed notification could leave; the relay clears everything when it reconnects.
    ttl: Duration::from_secs(5),
    negative_ttl: Duration::from_secs(1),
    jitter: 0.2,
};

/// Clients, grants, codes and refresh tokens on the configured database.
///
/// Live grants are cached (a bearer JWT's grant is checked on every request). Everything that
/// ends a grant (revoking it, deleting its client, its user's password change) forgets it in the same transaction: on this
/// node when it commits, on the others through a notification sent with it (PostgreSQL). A
/// membership's role is part of what is cached; whatever starts changing memberships must end
/// their grants the same way.
#[derive(Debug, Clone)]
pub struct OAuthStore {
    pub(super) db: Db,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) lifetimes: GrantLifetimes,
    pub(super) live: Cache<LiveGrant>,
}

impl OAuthStore {
    pub fn new(db: Db, clock: Arc<dyn Clock>, lifetimes: GrantLifetimes) -> Self {
        Self {
            db,
            live: Cache::new("oauth_grants", LIVE_GRANTS, clock.clone()),
            clock,
            lifetimes,
        }
    }

    /// Adds the channel of ended grants to `relay`: grants ended on other nodes leave this
    /// node's cache.
    #[must_use]
    pub fn listen(&self, relay: Relay) -> Relay {
        let live = self.live.clone();
        relay.on(ENDED, move |notice| match notice {
            Notice::Message(EVERY_GRANT) | Notice::Connected => live.clear(),
            Notice::Message(id) => live.invalidate(id),
        })
    }

    /// Ends grant `id` (or, with [`EVERY_GRANT`], every grant) on every node when `tx` commits.
    pub(super) async fn forget_on_commit(&self, tx: &mut Tx, id: &str) -> Result<(), sqlx::Error> {
        tx.notify(ENDED, &[id.to_owned()]).await?;
        let (live, id) = (self.live.clone(), id.to_owned());
        tx.after_commit(move || {
            if id == EVERY_GRANT {
                live.clear();
            } else {
                live.invalidate(&id);
            }
        });
        Ok(())
    }

    /// Registers a client; a confidential one gets a secret, returned here once.
    pub async fn create_client(
        &self,
        workspace: &WorkspaceId,
        new: NewClient,
        created_by: &str,
    ) -> Result<(OAuthClient, Option<Opaque>), sqlx::Error> {
        let now = self.clock.now();
        let secret = (new.client_type == ClientType::Confidential)
            .then(|| Opaque::generate(Opaque::CLIENT_SECRET));
        let client = OAuthClient {
            client_id: ClientId::new(now),
            workspace_id: workspace.clone(),
            name: new.name.into_string(),
            client_type: new.client_type,
            redirect_uris: new.redirect_uris,
            grant_types: new.grant_types,
            scopes: new.scopes.iter().collect(),
            role: new.role,
            created_at: now,
        };
        let uris = serde_json::to_string(&client.redirect_uris)
            .map_err(|e| sqlx::Error::Encode(e.into()))?;
        let mut tx = self.db.begin().await?;
        with_tx!(&mut tx, conn => {
            sqlx::query(
                "INSERT INTO oauth_clients (id, workspace_id, name, redirect_uris, grant_types, \
                 scopes, role, secret_hash, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(client.client_id.as_str())
            .bind(workspace.as_str())
            .bind(&client.name)
            .bind(&uris)
            .bind(clients::grant_type_names(&client.grant_types))
            .bind(new.scopes.to_names())
            .bind(client.role.as_str())
            .bind(secret.as_ref().map(Opaque::hash))
            .bind(created_by)
            .bind(now.as_micros())
            .execute(conn)
            .await
            .map(drop)
        })?;
        tx.commit().await?;
        Ok((client, secret))
    }

    /// Newest first, after the `(created_at, id)` of the previous page's last client.
    pub async fn list_clients(
        &self,
        workspace: &WorkspaceId,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<OAuthClient>, sqlx::Error> {
        let rows: Vec<ClientRow> = clients_statement(workspace, after, limit)
            .fetch_all(&self.db)
            .await?;
        rows.into_iter().map(OAuthClient::try_from).collect()
    }

    /// A client of `workspace`; another workspace's is `None`.
    pub async fn client(
        &self,
        workspace: &WorkspaceId,
        id: &ClientId,
    ) -> Result<Option<OAuthClient>, sqlx::Error> {
        let row: Option<ClientRow> = self
            .db
            .find_owned(
                "oauth_clients",
                COLUMNS,
                workspace.as_str(),
                "id",
                id.as_str(),
            )
            .await?;
        row.map(OAuthClient::try_from).transpose()
    }

    /// Deletes a client, and with it every grant and token issued to it, at once on every node.
    pub async fn delete_client(
        &self,
        workspace: &WorkspaceId,
        id: &ClientId,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let deleted = tx
            .delete_owned("oauth_clients", workspace.as_str(), id.as_str(), None)
            .await?;
        if deleted {
            self.forget_on_commit(&mut tx, EVERY_GRANT).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// The client `id` names, in any workspace: the authorization and token endpoints learn the
    /// workspace from the client.
    pub async fn find_client(&self, id: &str) -> Result<Option<OAuthClient>, sqlx::Error> {
        Ok(match self.client_row(id).await? {
            Some(row) => Some(OAuthClient::try_from(row)?),
            None => None,
        })
    }

    /// Authenticates a client at the token endpoint. A confidential client must present its
    /// secret; a public one must present none. `None` for any mismatch, unknown ids included.
    pub async fn authenticate_client(
        &self,
        id: &str,
        secret: Option<&str>,
    ) -> Result<Option<OAuthClient>, sqlx::Error> {
        let Some(row) = self.client_row(id).await? else {
            return Ok(None);
        };
        let ok = match secret {
            Some(secret) => row.secret_matches(secret),
            None => false,
        };
        let client = OAuthClient::try_from(row)?;
        let public_without_secret = client.client_type == ClientType::Public && secret.is_none();
        Ok((ok || public_without_secret).then_some(client))
    }

    async fn client_row(&self, id: &str) -> Result<Option<ClientRow>, sqlx::Error> {
        if ClientId::parse(id).is_err() {
            return Ok(None);
        }
        let sql = format!("SELECT {COLUMNS} FROM oauth_clients WHERE id = $1");
        with_reader!(&self.db, pool => {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await
        })
    }
}

/// The statement [`OAuthStore::list_clients`] runs, along `oauth_clients_by_workspace`.
pub fn clients_statement(
    workspace: &WorkspaceId,
    after: Option<(i64, String)>,
    limit: u32,
) -> Statement {
    Statement::keyset_page(
        &format!("SELECT {COLUMNS} FROM oauth_clients"),
        workspace.as_str(),
        Vec::new(),
        (&["created_at", "id"], true),
        after.map(|(at, id)| vec![Bind::Int(at), Bind::Text(id)]),
        limit,
    )
}
