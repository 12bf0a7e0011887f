//! Resource-level grants: beyond its role, an API key or a user can be given access to a single
//! link, queue or webhook endpoint. Each grant is a relationship tuple
//! `(subject, relation, resource)`: `viewer` may read the resource, `editor` may read and
//! change it. [`ResourceGrants::authorize`] is the one function that decides whether a caller
//! may act on a resource: by its role (and scopes), or else by a tuple.
//!
//! Grants widen what a key or a person may do; they never widen what an OAuth client may do.
//! A client's token acts within the scopes the user consented to, so a user's grants do not
//! travel with it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use pier_core::{Clock, Timestamp, WorkspaceId, define_id};
use pier_db::{Bind, Db, Statement, with_reader, with_tx};
use serde::Serialize;

use crate::{Permission, Principal};

define_id!(
    /// A resource grant's id, `grt_…`.
    ResourceGrantId,
    "grt"
);

macro_rules! named {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        // The texts are the variants' names in snake_case, as the schema derive spells them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),*
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)*
                    other => Err(format!(
                        "`{}` is not one of: {}",
                        pier_core::id::Truncated(other),
                        [$($text),*].join(", ")
                    )),
                }
            }
        }
    };
}

named!(
    /// What can be granted on its own.
    ResourceType {
        Link => "link",
        Queue => "queue",
        WebhookEndpoint => "webhook_endpoint",
    }
);

named!(
    /// What a caller wants to do to a resource.
    Action {
        Read => "read",
        Write => "write",
    }
);

named!(
    /// A subject's relation to a resource: `viewer` reads, `editor` reads and changes.
    Relation {
        Viewer => "viewer",
        Editor => "editor",
    }
);

impl ResourceType {
    /// The role permission that covers `action` on every resource of this type.
    pub fn permission(self, action: Action) -> Permission {
        match (self, action) {
            (Self::Link, Action::Read) => Permission::LinksRead,
            (Self::Link, Action::Write) => Permission::LinksWrite,
            (Self::Queue, Action::Read) => Permission::JobsRead,
            (Self::Queue, Action::Write) => Permission::JobsWrite,
            (Self::WebhookEndpoint, Action::Read) => Permission::WebhooksRead,
            (Self::WebhookEndpoint, Action::Write) => Permission::WebhooksWrite,
        }
    }

    /// The resource type and action a permission is about, if grants can stand in for it.
    pub fn of(permission: Permission) -> Option<(Self, Action)> {
        [Self::Link, Self::Queue, Self::WebhookEndpoint]
            .into_iter()
            .flat_map(|t| [(t, Action::Read), (t, Action::Write)])
            .find(|(t, a)| t.permission(*a) == permission)
    }
}

impl Relation {
    /// The least relation that allows `action` (an editor may do everything a viewer may).
    pub fn for_action(action: Action) -> Self {
        match action {
            Action::Read => Self::Viewer,
            Action::Write => Self::Editor,
        }
    }
}

/// The longest id or name a grant can name.
const MAX_ID_CHARS: usize = 200;

/// Whether `text` could be a stored subject or resource id: no grant names any other, so a
/// lookup by one (a NUL, which PostgreSQL cannot even compare) finds nothing without a query.
fn is_plain(text: &str) -> bool {
    pier_core::validation::plain_text(text, 1, MAX_ID_CHARS).is_ok()
}

/// One resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    pub kind: ResourceType,
    pub id: &'a str,
}

/// Why [`ResourceGrants::authorize`] decided as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The caller's role (within its scopes) covers every resource of the type.
    Role,
    /// A grant on this resource does.
    Grant,
    Denied,
}

impl Decision {
    pub fn allowed(self) -> bool {
        self != Self::Denied
    }
}

/// A grant of a relation on one resource to one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceGrant {
    pub id: ResourceGrantId,
    /// An API key (`key_…`) or a user (`usr_…`) of the workspace.
    pub subject: String,
    pub resource_type: ResourceType,
    pub resource_id: String,
    pub relation: Relation,
    pub created_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: String,
    subject: String,
    resource_type: String,
    resource_id: String,
    relation: String,
    created_at: i64,
}

const COLUMNS: &str = "id, subject, resource_type, resource_id, relation, created_at";

impl TryFrom<GrantRow> for ResourceGrant {
    type Error = sqlx::Error;
    fn try_from(row: GrantRow) -> Result<Self, sqlx::Error> {
        let decode = |e: String| sqlx::Error::Decode(e.into());
        Ok(Self {
            id: ResourceGrantId::from_trusted(row.id),
            subject: row.subject,
            resource_type: row.resource_type.parse().map_err(decode)?,
            resource_id: row.resource_id,
            relation: row.relation.parse().map_err(decode)?,
            created_at: Timestamp::from_micros(row.created_at),
        })
    }
}

/// Filters for listing grants.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub subject: Option<String>,
    pub resource_type: Option<ResourceType>,
    pub resource_id: Option<String>,
}

/// Resource grants on the configured database.
#[derive(Debug, Clone)]
pub struct ResourceGrants {
    db: Db,
    clock: Arc<dyn Clock>,
}

impl ResourceGrants {
    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    /// Whether `principal` may do `action` to `resource` of its workspace: by its role (no
    /// database read), or else by a grant to its subject.
    pub async fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: Resource<'_>,
    ) -> Result<Decision, sqlx::Error> {
        if principal.can(resource.kind.permission(action)) {
            return Ok(Decision::Role);
        }
        if principal.is_delegated() || !is_plain(resource.id) {
            return Ok(Decision::Denied);
        }
        let found: Option<(String,)> = with_reader!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id FROM resource_grants WHERE workspace_id = $1 AND subject = $2 \
                 AND resource_type = $3 AND resource_id = $4 AND relation IN ($5, 'editor') LIMIT 1",
            )
            .bind(principal.workspace_id().as_str())
            .bind(principal.subject())
            .bind(resource.kind.as_str())
            .bind(resource.id)
            .bind(Relation::for_action(action).as_str())
            .fetch_optional(pool)
            .await
        })?;
        Ok(match found {
            Some(_) => Decision::Grant,
            None => Decision::Denied,
        })
    }

    /// Grants `relation` on a resource to `subject`; granting what exists already returns it.
    pub async fn grant(
        &self,
        workspace: &WorkspaceId,
        subject: &str,
        resource: Resource<'_>,
        relation: Relation,
        created_by: &str,
    ) -> Result<(ResourceGrant, bool), sqlx::Error> {
        let now = self.clock.now();
        let grant = ResourceGrant {
            id: ResourceGrantId::new(now),
            subject: subject.to_owned(),
            resource_type: resource.kind,
            resource_id: resource.id.to_owned(),
            relation,
            created_at: now,
        };
        let mut tx = self.db.begin().await?;
        let inserted = with_tx!(&mut tx, conn => {
            sqlx::query(
                "INSERT INTO resource_grants (id, workspace_id, subject, resource_type, \
                 resource_id, relation, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .bind(grant.id.as_str())
            .bind(workspace.as_str())
            .bind(subject)
            .bind(resource.kind.as_str())
            .bind(resource.id)
            .bind(relation.as_str())
            .bind(created_by)
            .bind(now.as_micros())
            .execute(conn)
            .await
            .map(|done| done.rows_affected() == 1)
        })?;
        tx.commit().await?;
        if inserted {
            return Ok((grant, true));
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM resource_grants WHERE workspace_id = $1 AND subject = $2 \
             AND resource_type = $3 AND resource_id = $4 AND relation = $5"
        );
        let row: GrantRow = with_reader!(&self.db, pool => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(subject)
                .bind(resource.kind.as_str())
                .bind(resource.id)
                .bind(relation.as_str())
                .fetch_one(pool)
                .await
        })?;
        Ok((ResourceGrant::try_from(row)?, false))
    }

    /// Newest first, after the `(created_at, id)` of the previous page's last grant.
    pub async fn list(
        &self,
        workspace: &WorkspaceId,
        filter: &GrantFilter,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<ResourceGrant>, sqlx::Error> {
        let filters = [filter.subject.as_deref(), filter.resource_id.as_deref()];
        if filters.into_iter().flatten().any(|text| !is_plain(text)) {
            return Ok(Vec::new());
        }
        let rows: Vec<GrantRow> = grants_statement(workspace, filter, after, limit)
            .fetch_all(&self.db)
            .await?;
        rows.into_iter().map(ResourceGrant::try_from).collect()
    }

    pub async fn get(
        &self,
        workspace: &WorkspaceId,
        id: &ResourceGrantId,
    ) -> Result<Option<ResourceGrant>, sqlx::Error> {
        let row: Option<GrantRow> = self
            .db
            .find_owned(
                "resource_grants",
                COLUMNS,
                workspace.as_str(),
                "id",
                id.as_str(),
            )
            .await?;
        row.map(ResourceGrant::try_from).transpose()
    }

    /// Takes a grant back; `false` when there was none (in this workspace).
    pub async fn revoke(
        &self,
        workspace: &WorkspaceId,
        id: &ResourceGrantId,
    ) -> Result<bool, sqlx::Error> {
        self.db
            .delete_owned("resource_grants", workspace.as_str(), id.as_str())
            .await
    }
}

/// The statement [`ResourceGrants::list`] runs. Each filter has an index ending in the order
/// (migration 23): `resource_grants_by_subject`, `…_by_type` and `…_by_resource_id`; with
/// several, the database walks the most selective and checks the others on its rows.
pub fn grants_statement(
    workspace: &WorkspaceId,
    filter: &GrantFilter,
    after: Option<(i64, String)>,
    limit: u32,
) -> Statement {
    let text = |column, value: &Option<String>| value.clone().map(|v| (column, Bind::Text(v)));
    let filters = [
        text("subject", &filter.subject),
        filter
            .resource_type
            .map(|t| ("resource_type", Bind::Text(t.as_str().to_owned()))),
        text("resource_id", &filter.resource_id),
    ];
    Statement::keyset_page(
        &format!("SELECT {COLUMNS} FROM resource_grants"),
        workspace.as_str(),
        filters.into_iter().flatten().collect(),
        (&["created_at", "id"], true),
        after.map(|(at, id)| vec![Bind::Int(at), Bind::Text(id)]),
        limit,
    )
}
