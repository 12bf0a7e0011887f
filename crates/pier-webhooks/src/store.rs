//! Webhook state on the configured database: event types, endpoints and their sealed signing
//! secrets. Publishing and delivery live in [`crate::publish`] and [`crate::deliver`].

use std::sync::Arc;
use std::time::Duration;

use pier_core::{Clock, SubKey, Timestamp, WorkspaceId};
use pier_db::{Bind, Db, Statement, Tx, with_tx};
use pier_jobs::JobStore;

use crate::fields::EndpointFields;
use crate::guard::Guard;
use crate::model::{DisabledReason, Endpoint, EndpointId, EventType, EventTypeName, Metadata};
use crate::schedule::RetrySchedule;
use crate::schemas::{Rule, Schemas};
use crate::secrets::{self, Keys};
use crate::targets::{Target, Targets};

/// How deliveries behave; the server's configuration fills it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub schedule: RetrySchedule,
    pub connect_timeout: Duration,
    /// For a whole request, from connecting to the end of the response.
    pub timeout: Duration,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// An endpoint whose attempts all failed for this long is disabled.
    pub disable_after: Duration,
    /// How long a rotated-out secret keeps signing.
    pub secret_overlap: Duration,
    /// Of an event's payload, as JSON text.
    pub max_payload_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            schedule: RetrySchedule::standard(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_retry_after: Duration::from_secs(3600),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            secret_overlap: Duration::from_secs(24 * 3600),
            max_payload_bytes: 256 * 1024,
        }
    }
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the event type `{0}` exists already")]
    EventTypeExists(String),
    /// The JSON Schema given for an event type is not one.
    #[error("the schema is not a valid JSON Schema: {0}")]
    InvalidSchema(String),
    /// A payload failed its event type's schema.
    #[error("the payload does not match the schema of `{event_type}` at `{path}`: {message}")]
    PayloadMismatch {
        event_type: String,
        path: String,
        message: String,
    },
    #[error("the payload is {size} bytes; at most {max} are accepted")]
    PayloadTooLarge { size: usize, max: usize },
    /// A client's event id was published before with another type or payload.
    #[error("the event id `{0}` was published before with another type or payload")]
    EventIdReused(String),
    #[error(transparent)]
    Sealed(#[from] secrets::SecretUnreadable),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Webhooks on the configured database. Clones share everything.
#[derive(Clone)]
pub struct WebhookStore {
    pub(crate) db: Db,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) jobs: JobStore,
    pub(crate) sealing: SubKey,
    pub(crate) settings: Arc<Settings>,
    pub(crate) guard: Guard,
    targets: Targets,
    schemas: Schemas,
}

impl std::fmt::Debug for WebhookStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookStore")
            .field("settings", &self.settings)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct EventTypeRow {
    name: String,
    description: Option<String>,
    schema: Option<String>,
    created_at: i64,
}

impl TryFrom<EventTypeRow> for EventType {
    type Error = sqlx::Error;
    fn try_from(row: EventTypeRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            name: EventTypeName::parse(&row.name).map_err(decode)?,
            description: row.description,
            schema: row.schema.as_deref().map(json).transpose()?,
            created_at: Timestamp::from_micros(row.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EndpointRow {
    id: String,
    workspace_id: String,
    url: String,
    description: Option<String>,
    event_types: String,
    enabled: bool,
    disabled_reason: Option<String>,
    rate_limit_per_second: Option<i64>,
    ordered: bool,
    ed25519: bool,
    metadata: String,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

pub(crate) const ENDPOINT_COLUMNS: &str = "id, workspace_id, url, description, event_types, \
                                           enabled, disabled_reason, rate_limit_per_second, \
                                           ordered, ed25519, metadata, version, created_at, \
                                           updated_at";

impl TryFrom<EndpointRow> for Endpoint {
    type Error = sqlx::Error;
    fn try_from(row: EndpointRow) -> Result<Self, sqlx::Error> {
        let disabled_reason = match row.disabled_reason {
            None => None,
            Some(text) => Some(
                DisabledReason::parse(&text)
                    .ok_or_else(|| decode(format!("disabled reason {text}")))?,
            ),
        };
        Ok(Self {
            id: EndpointId::from_trusted(row.id),
            workspace_id: WorkspaceId::from_trusted(row.workspace_id),
            url: row.url,
            description: row.description,
            event_types: serde_json::from_str(&row.event_types).map_err(decode)?,
            enabled: row.enabled,
            disabled_reason,
            rate_limit_per_second: row
                .rate_limit_per_second
                .map(|r| u32::try_from(r).map_err(decode))
                .transpose()?,
            ordered: row.ordered,
            ed25519: row.ed25519,
            metadata: serde_json::from_str::<Metadata>(&row.metadata).map_err(decode)?,
            version: row.version,
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
        })
    }
}

pub(crate) fn decode(err: impl ToString) -> sqlx::Error {
    sqlx::Error::Decode(err.to_string().into())
}

pub(crate) fn json(text: &str) -> Result<serde_json::Value, sqlx::Error> {
    serde_json::from_str(text).map_err(decode)
}

fn type_list(fields: &EndpointFields) -> String {
    serde_json::Value::from(
        fields
            .event_types
            .iter()
            .map(EventTypeName::as_str)
            .collect::<Vec<_>>(),
    )
    .to_string()
}

fn metadata_json(metadata: &Metadata) -> String {
    serde_json::to_string(metadata).unwrap_or_else(|_| "{}".to_owned())
}

/// Binds an endpoint's owner-set fields as `$1` to `$8`: url, description, event_types, enabled,
/// rate_limit_per_second, ordered, metadata, ed25519 (the order both writes name them in).
macro_rules! bind_fields {
    ($query:expr, $fields:expr) => {
        $query
            .bind($fields.url.as_str())
            .bind($fields.description.as_deref())
            .bind(type_list($fields))
            .bind($fields.enabled)
            .bind($fields.rate_limit_per_second.map(i64::from))
            .bind($fields.ordered)
            .bind(metadata_json(&$fields.metadata))
            .bind($fields.ed25519)
    };
}

impl WebhookStore {
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        jobs: JobStore,
        sealing: SubKey,
        settings: Settings,
        guard: Guard,
    ) -> Self {
        // A discarded delivery or dispatch job ends its deliveries (see `deliver::Discarded`).
        for kind in [crate::publish::DELIVER, crate::dispatch::DISPATCH] {
            jobs.on_discard(kind, Arc::new(crate::deliver::Discarded));
        }
        Self {
            db,
            clock: clock.clone(),
            jobs,
            sealing,
            settings: Arc::new(settings),
            guard,
            targets: Targets::new(clock.clone()),
            schemas: Schemas::new(clock),
        }
    }

    /// Adds the channels of changed endpoints and registered event types to `relay`: what
    /// changed on other nodes leaves this node's caches (PostgreSQL; on SQLite every write
    /// happens in this process).
    #[must_use]
    pub fn listen(&self, relay: pier_db::Relay) -> pier_db::Relay {
        self.schemas.listen(self.targets.listen(relay))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The SSRF guard every endpoint URL passes, at create and update and at every send.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // --- Event types ---

    /// Registers an event type; `schema` must be a valid JSON Schema.
    pub async fn create_event_type(
        &self,
        workspace: &WorkspaceId,
        name: &EventTypeName,
        description: Option<&str>,
        schema: Option<&serde_json::Value>,
    ) -> Result<EventType, WebhookError> {
        if let Some(schema) = schema {
            crate::payload::compile(schema)?;
        }
        let sql = "INSERT INTO webhook_event_types (workspace_id, name, description, schema, \
                   created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING \
                   RETURNING name, description, schema, created_at";
        let mut tx = self.db.begin().await?;
        let row: Option<EventTypeRow> = with_tx!(&mut tx, conn => {
            sqlx::query_as(sql)
                .bind(workspace.as_str())
                .bind(name.as_str())
                .bind(description)
                .bind(schema.map(serde_json::Value::to_string))
                .bind(self.clock.now().as_micros())
                .fetch_optional(conn)
                .await
        })?;
        let Some(row) = row else {
            return Err(WebhookError::EventTypeExists(name.to_string()));
        };
        self.schemas
            .forget_on_commit(&mut tx, workspace, name.as_str())
            .await?;
        tx.commit().await?;
        Ok(row.try_into()?)
    }

    /// The rule publications of an event type are held to, from this node's cache when it can
    /// be; `None` when the type is not registered.
    pub(crate) async fn rule(
        &self,
        workspace: &WorkspaceId,
        name: &str,
    ) -> Result<Option<Arc<Rule>>, sqlx::Error> {
        let load = || async {
            let Some(found) = self.event_type(workspace, name).await? else {
                return Ok(None);
            };
            let validator = found
                .schema
                .as_ref()
                .map(crate::payload::compile)
                .transpose()
                .map_err(decode)?;
            Ok(Some(Arc::new(Rule::new(validator))))
        };
        self.schemas.get(workspace, name, load).await
    }

    pub async fn event_type(
        &self,
        workspace: &WorkspaceId,
        name: &str,
    ) -> Result<Option<EventType>, sqlx::Error> {
        let columns = "name, description, schema, created_at";
        let row: Option<EventTypeRow> = self
            .db
            .find_owned(
                "webhook_event_types",
                columns,
                workspace.as_str(),
                "name",
                name,
            )
            .await?;
        row.map(EventType::try_from).transpose()
    }

    /// Event types by name, `limit` after `after`.
    pub async fn event_types(
        &self,
        workspace: &WorkspaceId,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<EventType>, sqlx::Error> {
        event_types_statement(workspace, after, limit)
            .fetch_decoded::<EventTypeRow, EventType>(&self.db)
            .await
    }

    // --- Endpoints ---

    /// Creates an endpoint with a fresh signing secret (and an Ed25519 key if it asks for
    /// one), returned here and by [`secrets`](Self::secrets) later.
    pub async fn create_endpoint(
        &self,
        workspace: &WorkspaceId,
        fields: &EndpointFields,
    ) -> Result<(Endpoint, Keys), WebhookError> {
        let now = self.clock.now();
        let id = EndpointId::new(now);
        let mut tx = self.db.begin().await?;
        let sql = format!(
            "INSERT INTO webhook_endpoints (url, description, event_types, enabled, \
             rate_limit_per_second, ordered, metadata, ed25519, workspace_id, id, version, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, \
             $11) RETURNING {ENDPOINT_COLUMNS}"
        );
        let row: EndpointRow = with_tx!(&mut tx, conn => {
            bind_fields!(sqlx::query_as(&sql), fields)
                .bind(workspace.as_str())
                .bind(id.as_str())
                .bind(now.as_micros())
                .fetch_one(conn)
                .await
        })?;
        let keys = Keys::generate(fields.ed25519);
        secrets::insert(&mut tx, &self.sealing, workspace, &id, &keys, now).await?;
        tx.commit().await?;
        Ok((row.try_into()?, keys))
    }

    pub async fn endpoint(
        &self,
        workspace: &WorkspaceId,
        id: &EndpointId,
    ) -> Result<Option<Endpoint>, sqlx::Error> {
        read_endpoint(&self.db, workspace, id).await
    }

    /// The endpoint with the keys that sign for it now, as deliveries see it (cached; see
    /// [`crate::targets`]).
    pub(crate) async fn target(
        &self,
        workspace: &WorkspaceId,
        id: &EndpointId,
    ) -> Result<Option<Arc<Target>>, WebhookError> {
        self.targets
            .get(&self.db, &self.sealing, workspace, id, self.clock.now())
            .await
    }

    /// Endpoints in creation order, `limit` after the one with id `after`.
    pub async fn endpoints(
        &self,
        workspace: &WorkspaceId,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Endpoint>, sqlx::Error> {
        endpoints_statement(workspace, after, limit)
            .fetch_decoded::<EndpointRow, Endpoint>(&self.db)
            .await
    }

    /// Replaces the owner-set fields of `seen` if it has not changed since it was read; `None`
    /// when it has (or is gone). Enabling an endpoint clears why Pier disabled it and restarts
    /// its failure window.
    pub async fn update_endpoint(
        &self,
        seen: &Endpoint,
        fields: &EndpointFields,
    ) -> Result<Option<Endpoint>, WebhookError> {
        let now = self.clock.now();
        let sql = format!(
            "UPDATE webhook_endpoints SET url = $1, description = $2, event_types = $3, \
             enabled = $4, rate_limit_per_second = $5, ordered = $6, metadata = $7, \
             ed25519 = $8, disabled_reason = CASE WHEN $4 THEN NULL ELSE disabled_reason END, \
             failing_since = CASE WHEN $4 THEN NULL ELSE failing_since END, \
             version = version + 1, updated_at = $9 \
             WHERE workspace_id = $10 AND id = $11 AND version = $12 RETURNING {ENDPOINT_COLUMNS}"
        );
        let mut tx = self.db.begin().await?;
        let row: Option<EndpointRow> = with_tx!(&mut tx, conn => {
            bind_fields!(sqlx::query_as(&sql), fields)
                .bind(now.as_micros())
                .bind(seen.workspace_id.as_str())
                .bind(seen.id.as_str())
                .bind(seen.version)
                .fetch_optional(conn)
                .await
        })?;
        let Some(row) = row else { return Ok(None) };
        let endpoint = Endpoint::try_from(row)?;
        self.targets
            .forget_on_commit(&mut tx, &seen.workspace_id, &seen.id)
            .await?;
        if endpoint.ed25519 && !seen.ed25519 {
            // Turned on: it signs with a key of its own from now on.
            let keys = Keys {
                hmac: Vec::new(),
                ed25519: vec![secrets::generate_ed25519()],
            };
            secrets::insert(
                &mut tx,
                &self.sealing,
                &seen.workspace_id,
                &seen.id,
                &keys,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(endpoint))
    }

    /// Deletes `seen` if it has not changed since it was read, with its secrets and its
    /// deliveries' history; deliveries still pending fail when their turn comes.
    pub async fn delete_endpoint(&self, seen: &Endpoint) -> Result<bool, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let deleted = tx
            .delete_owned(
                "webhook_endpoints",
                seen.workspace_id.as_str(),
                seen.id.as_str(),
                Some(seen.version),
            )
            .await?;
        if !deleted {
            return Ok(false);
        }
        self.targets
            .forget_on_commit(&mut tx, &seen.workspace_id, &seen.id)
            .await?;
        for table in ["webhook_secrets", "webhook_attempts", "webhook_deliveries"] {
            let sql = format!("DELETE FROM {table} WHERE workspace_id = $1 AND endpoint_id = $2");
            with_tx!(&mut tx, conn => {
                sqlx::query(&sql)
                    .bind(seen.workspace_id.as_str())
                    .bind(seen.id.as_str())
                    .execute(conn)
                    .await
                    .map(drop)
            })?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The keys that sign for the endpoint now, the current one of each kind first.
    pub async fn secrets(
        &self,
        workspace: &WorkspaceId,
        endpoint: &EndpointId,
    ) -> Result<Keys, WebhookError> {
        let (keys, _) = secrets::live(
            &self.db,
            &self.sealing,
            workspace,
            endpoint,
            self.clock.now(),
        )
        .await?;
        Ok(keys)
    }

    /// Issues a new secret (and Ed25519 key, if the endpoint uses one); the current ones keep
    /// signing for the overlap (24 hours by default), so receivers can switch without missing
    /// a delivery. Rotating again during an overlap ends it. `None` when the endpoint does not
    /// exist.
    pub async fn rotate_secret(
        &self,
        workspace: &WorkspaceId,
        endpoint: &EndpointId,
    ) -> Result<Option<Keys>, WebhookError> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        // The endpoint's row lock orders concurrent rotations.
        let sql = "UPDATE webhook_endpoints SET updated_at = $1 WHERE workspace_id = $2 \
                   AND id = $3 RETURNING ed25519";
        let found: Option<(bool,)> = with_tx!(&mut tx, conn => {
            sqlx::query_as(sql)
                .bind(now.as_micros())
                .bind(workspace.as_str())
                .bind(endpoint.as_str())
                .fetch_optional(conn)
                .await
        })?;
        let Some((ed25519,)) = found else {
            return Ok(None);
        };
        self.targets
            .forget_on_commit(&mut tx, workspace, endpoint)
            .await?;
        let until = now.saturating_add(self.settings.secret_overlap);
        secrets::retire(&mut tx, workspace, endpoint, until).await?;
        let keys = Keys::generate(ed25519);
        secrets::insert(&mut tx, &self.sealing, workspace, endpoint, &keys, now).await?;
        tx.commit().await?;
        Ok(Some(keys))
    }

    /// Turns an endpoint off on Pier's own account, announcing it as
    /// `webhook_endpoint.disabled`; false when it was already off.
    pub(crate) async fn disable(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        endpoint: &EndpointId,
        reason: DisabledReason,
    ) -> Result<bool, WebhookError> {
        let sql = format!(
            "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $1, \
             version = version + 1, updated_at = $2 \
             WHERE workspace_id = $3 AND id = $4 AND enabled RETURNING {ENDPOINT_COLUMNS}"
        );
        let row: Option<EndpointRow> = with_tx!(tx, conn => {
            sqlx::query_as(&sql)
                .bind(reason.as_str())
                .bind(self.clock.now().as_micros())
                .bind(workspace.as_str())
                .bind(endpoint.as_str())
                .fetch_optional(conn)
                .await
        })?;
        let Some(row) = row else { return Ok(false) };
        let endpoint = Endpoint::try_from(row)?;
        self.targets
            .forget_on_commit(tx, workspace, &endpoint.id)
            .await?;
        tracing::warn!(workspace_id = %workspace, endpoint_id = %endpoint.id,
            reason = reason.as_str(), "webhook endpoint disabled");
        metrics::counter!("pier_webhook_endpoints_disabled_total", "reason" => reason.as_str())
            .increment(1);
        // Events are readable by every role that reads webhooks, so the URL goes without the
        // parts that may hold the receiver's credentials.
        let endpoint = endpoint.without_url_secrets();
        let payload = serde_json::json!({ "endpoint": endpoint, "reason": reason });
        self.publish_own(tx, workspace, "webhook_endpoint.disabled", payload)
            .await?;
        Ok(true)
    }
}

/// One endpoint, read from the database.
pub(crate) async fn read_endpoint(
    db: &Db,
    workspace: &WorkspaceId,
    id: &EndpointId,
) -> Result<Option<Endpoint>, sqlx::Error> {
    let row: Option<EndpointRow> = db
        .find_owned(
            "webhook_endpoints",
            ENDPOINT_COLUMNS,
            workspace.as_str(),
            "id",
            id.as_str(),
        )
        .await?;
    row.map(Endpoint::try_from).transpose()
}

/// The statement [`WebhookStore::event_types`] runs, along the primary key.
pub fn event_types_statement(
    workspace: &WorkspaceId,
    after: Option<String>,
    limit: u32,
) -> Statement {
    Statement::keyset_page(
        "SELECT name, description, schema, created_at FROM webhook_event_types",
        workspace.as_str(),
        Vec::new(),
        (&["name"], false),
        after.map(|name| vec![Bind::Text(name)]),
        limit,
    )
}

/// The statement [`WebhookStore::endpoints`] runs, along the primary key.
pub fn endpoints_statement(
    workspace: &WorkspaceId,
    after: Option<String>,
    limit: u32,
) -> Statement {
    Statement::keyset_page(
        &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"),
        workspace.as_str(),
        Vec::new(),
        (&["id"], false),
        after.map(|id| vec![Bind::Text(id)]),
        limit,
    )
}
