//! Publishing: an event, one delivery per endpoint that wants it and the job that sends them
//! (see [`crate::dispatch`]), all in one transaction (the outbox), so an event is delivered if
//! and only if its publication committed. Also the reads of what was published and where it went.

use std::sync::Arc;

use pier_core::{Timestamp, WorkspaceId};
use pier_db::{Bind, JsonList, Outbox, Publishing, Statement, Tx, with_reader, with_tx};
use pier_jobs::{JobSpec, JobStore, NewJob, QueueName};
use serde::Serialize;

use crate::dispatch::Dispatched;
use crate::model::{
    Delivery, DeliveryId, DeliveryState, EndpointId, Event, EventId, EventTypeName,
};
use crate::store::{WebhookError, WebhookStore, decode, json};

/// The queue deliveries run on, served across workspaces by Pier's own workers.
pub fn queue() -> QueueName {
    QueueName::internal("webhooks")
}

/// The job kind of a delivery.
pub(crate) const DELIVER: &str = "webhook.deliver";

/// An event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: EventTypeName,
    pub payload: serde_json::Value,
    /// The publisher's own id: publishing it again returns the first event.
    pub event_id: Option<String>,
}

/// A published event, and whether it was published before under the same event id.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub event: Event,
    pub existing: bool,
}

/// What a delivery job carries: the delivery it sends.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DeliverJob {
    pub delivery: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    id: String,
    workspace_id: String,
    #[sqlx(rename = "type")]
    event_type: String,
    payload: String,
    client_event_id: Option<String>,
    created_at: i64,
}

const EVENT_COLUMNS: &str = "id, workspace_id, type, payload, client_event_id, created_at";

impl TryFrom<EventRow> for Event {
    type Error = sqlx::Error;
    fn try_from(row: EventRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: EventId::from_trusted(row.id),
            workspace_id: WorkspaceId::from_trusted(row.workspace_id),
            event_type: row.event_type,
            payload: json(&row.payload)?,
            event_id: row.client_event_id,
            created_at: Timestamp::from_micros(row.created_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: String,
    event_id: String,
    endpoint_id: String,
    state: String,
    attempts: i64,
    last_status: Option<i64>,
    last_error: Option<String>,
    next_attempt_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

pub(crate) const DELIVERY_COLUMNS: &str = "id, event_id, endpoint_id, state, attempts, \
                                           last_status, last_error, next_attempt_at, created_at, \
                                           updated_at";

impl TryFrom<DeliveryRow> for Delivery {
    type Error = sqlx::Error;
    fn try_from(row: DeliveryRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: DeliveryId::from_trusted(row.id),
            event_id: EventId::from_trusted(row.event_id),
            endpoint_id: EndpointId::from_trusted(row.endpoint_id),
            state: DeliveryState::parse(&row.state)
                .ok_or_else(|| decode(format!("delivery state {}", row.state)))?,
            attempts: u32::try_from(row.attempts).map_err(decode)?,
            last_status: row
                .last_status
                .map(|s| u16::try_from(s).map_err(decode))
                .transpose()?,
            last_error: row.last_error,
            next_attempt_at: row.next_attempt_at.map(Timestamp::from_micros),
            created_at: Timestamp::from_micros(row.created_at),
            updated_at: Timestamp::from_micros(row.updated_at),
        })
    }
}

/// One delivery row to insert, in the shape the bulk statement reads.
#[derive(Serialize)]
struct NewDelivery<'a> {
    id: String,
    event_id: String,
    endpoint_id: String,
    seq: Option<i64>,
    state: &'static str,
    /// The trace its job continues (`None`: the current span's); not a column.
    #[serde(skip)]
    trace_parent: Option<&'a str>,
}

/// The deliveries of one workspace's events in a transaction, written together when the
/// transaction moves on to another workspace or ends: one statement for the deliveries and one
/// job that dispatches them, however many events (so one write of the job counts, and
/// concurrent commits cannot deadlock on them).
struct Fanning<'a> {
    workspace: &'a WorkspaceId,
    subscribers: Vec<Subscriber>,
    rows: Vec<NewDelivery<'a>>,
    /// Ordered endpoints given a delivery by an earlier event of this batch: the next one waits.
    ordered_busy: std::collections::HashSet<String>,
}

#[derive(sqlx::FromRow)]
struct SubscriberRow {
    id: String,
    event_types: String,
    ordered: bool,
}

/// An enabled endpoint, as a publication fans out to it.
struct Subscriber {
    id: String,
    /// Every type when empty.
    event_types: Vec<String>,
    ordered: bool,
}

impl Subscriber {
    fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// The workspace's enabled endpoints, in id order (the order their row locks are taken in).
async fn subscribers(tx: &mut Tx, workspace: &WorkspaceId) -> Result<Vec<Subscriber>, sqlx::Error> {
    let rows: Vec<SubscriberRow> = with_tx!(tx, conn => {
        sqlx::query_as(
            "SELECT id, event_types, ordered FROM webhook_endpoints \
             WHERE workspace_id = $1 AND enabled ORDER BY id",
        )
        .bind(workspace.as_str())
        .fetch_all(conn)
        .await
    })?;
    rows.into_iter()
        .map(|row| {
            Ok(Subscriber {
                event_types: serde_json::from_str(&row.event_types).map_err(decode)?,
                id: row.id,
                ordered: row.ordered,
            })
        })
        .collect()
}

/// A publication checked against its type's schema and its size bound, ready to be written.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub(crate) workspace: WorkspaceId,
    event: NewEvent,
    /// The payload as stored (JSON text).
    payload: String,
    /// The trace its delivery jobs continue, when it is written away from the publisher's span.
    pub(crate) trace_parent: Option<String>,
}

/// What checking a publication found.
pub(crate) enum Prepared {
    Write(Checked),
    /// Its event id was published before, with the same type and payload.
    Published(Published),
}

impl WebhookStore {
    /// Checks a publication of the workspace: its size bound and its type's schema (when the
    /// type is registered with one); a repeat of an event id answers with the first event.
    pub(crate) async fn prepare(
        &self,
        workspace: &WorkspaceId,
        event: NewEvent,
    ) -> Result<Prepared, WebhookError> {
        let payload = event.payload.to_string();
        let max = self.settings.max_payload_bytes;
        if payload.len() > max {
            return Err(WebhookError::PayloadTooLarge {
                size: payload.len(),
                max,
            });
        }
        let rule = self.rule(workspace, event.event_type.as_str()).await?;
        if let Some(validator) = rule.as_ref().and_then(|r| r.validator()) {
            crate::payload::check(event.event_type.as_str(), validator, &event.payload)?;
        }
        if let Some(client_id) = &event.event_id
            && let Some(first) = self.by_client_id(workspace, client_id).await?
        {
            return same_event(first, &event).map(Prepared::Published);
        }
        Ok(Prepared::Write(Checked {
            workspace: workspace.clone(),
            event,
            payload,
            trace_parent: None,
        }))
    }

    /// Writes checked publications in one transaction: each event, fanned out to every enabled
    /// endpoint that wants it (the outbox). One outcome per publication, in order: its event,
    /// or `None` when another publication holds its event id. The writes go workspace by
    /// workspace, so concurrent transactions take ordered endpoints' row locks in one order
    /// and cannot deadlock on them.
    pub(crate) async fn write_events(
        &self,
        publications: &[Arc<Checked>],
    ) -> Result<Vec<Option<Event>>, sqlx::Error> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let rows: Vec<NewEventRow> = publications
            .iter()
            .map(|p| NewEventRow {
                workspace_id: p.workspace.as_str(),
                id: EventId::new(now).to_string(),
                event_type: p.event.event_type.as_str(),
                payload: &p.payload,
                client_event_id: p.event.event_id.as_deref(),
            })
            .collect();
        let inserted = insert_events(&mut tx, now, &rows).await?;
        let written: Vec<Option<Event>> = publications
            .iter()
            .zip(&rows)
            .map(|(p, row)| {
                inserted.contains(row.id.as_str()).then(|| Event {
                    id: EventId::from_trusted(row.id.clone()),
                    workspace_id: p.workspace.clone(),
                    event_type: p.event.event_type.as_str().to_owned(),
                    payload: p.event.payload.clone(),
                    event_id: p.event.event_id.clone(),
                    created_at: now,
                })
            })
            .collect();

        // Fanned out workspace by workspace, each in the order its events arrived.
        let mut order: Vec<usize> = (0..publications.len()).collect();
        order.sort_by(|a, b| publications[*a].workspace.cmp(&publications[*b].workspace));
        let mut fanning: Option<Fanning> = None;
        for i in order {
            let Some(event) = &written[i] else {
                continue;
            };
            let workspace = &publications[i].workspace;
            if fanning.as_ref().is_none_or(|f| f.workspace != workspace) {
                if let Some(done) = fanning.take() {
                    self.write_deliveries(&mut tx, done).await?;
                }
                fanning = Some(Fanning::start(&mut tx, workspace).await?);
            }
            if let Some(fanning) = fanning.as_mut() {
                let trace_parent = publications[i].trace_parent.as_deref();
                fanning.add(&mut tx, event, trace_parent, now).await?;
            }
        }
        if let Some(done) = fanning {
            self.write_deliveries(&mut tx, done).await?;
        }
        tx.commit().await?;
        let published = written.iter().flatten().count();
        metrics::counter!("pier_webhook_events_published_total").increment(published as u64);
        Ok(written)
    }

    /// What a written publication answers: its event, or when another publication held its
    /// event id, that one's event if it is the same.
    pub(crate) async fn settle(
        &self,
        checked: &Checked,
        written: Option<Event>,
    ) -> Result<Published, WebhookError> {
        if let Some(event) = written {
            return Ok(Published {
                event,
                existing: false,
            });
        }
        let client_id = checked.event.event_id.as_deref().unwrap_or_default();
        match self.by_client_id(&checked.workspace, client_id).await? {
            Some(first) => same_event(first, &checked.event),
            None => Err(WebhookError::Db(sqlx::Error::Protocol(format!(
                "the event id `{client_id}` is held by no event"
            )))),
        }
    }

    /// Publishes one of Pier's own lifecycle events inside the caller's transaction.
    pub(crate) async fn publish_own(
        &self,
        tx: &mut Tx,
        workspace: &WorkspaceId,
        event_type: &'static str,
        payload: serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        let now = self.clock.now();
        let event = Event {
            id: EventId::new(now),
            workspace_id: workspace.clone(),
            event_type: EventTypeName::own(event_type).as_str().to_owned(),
            payload,
            event_id: None,
            created_at: now,
        };
        let text = event.payload.to_string();
        let row = NewEventRow {
            workspace_id: workspace.as_str(),
            id: event.id.to_string(),
            event_type: &event.event_type,
            payload: &text,
            client_event_id: None,
        };
        insert_events(tx, now, std::slice::from_ref(&row)).await?;
        self.fan_out(tx, &event).await
    }

    async fn by_client_id(
        &self,
        workspace: &WorkspaceId,
        client_id: &str,
    ) -> Result<Option<Event>, sqlx::Error> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM webhook_events WHERE workspace_id = $1 \
             AND client_event_id = $2"
        );
        let row: Option<EventRow> = with_reader!(&self.db, pool => {
            sqlx::query_as(&sql)
                .bind(workspace.as_str())
                .bind(client_id)
                .fetch_optional(pool)
                .await
        })?;
        row.map(Event::try_from).transpose()
    }

    /// Writes a delivery for every enabled endpoint that wants `event`, and the job that sends
    /// those that can go now (see [`Fanning`]).
    async fn fan_out(&self, tx: &mut Tx, event: &Event) -> Result<(), sqlx::Error> {
        let mut fanning = Fanning::start(tx, &event.workspace_id).await?;
        fanning.add(tx, event, None, self.clock.now()).await?;
        self.write_deliveries(tx, fanning).await
    }

    /// Inserts a workspace's gathered deliveries in one statement, and enqueues the job of
    /// those that can go now (their dispatch, or the one delivery's own).
    async fn write_deliveries(&self, tx: &mut Tx, fanning: Fanning<'_>) -> Result<(), sqlx::Error> {
        if fanning.rows.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let sql = format!(
            "INSERT INTO webhook_deliveries (workspace_id, id, event_id, endpoint_id, seq, state, \
             created_at, updated_at) SELECT $1, value ->> 'id', value ->> 'event_id', \
             value ->> 'endpoint_id', CAST(value ->> 'seq' AS BIGINT), value ->> 'state', $2, $2 \
             FROM {} WHERE true",
            tx.backend().json_rows("$3")
        );
        let list = JsonList::new(&fanning.rows)?;
        with_tx!(tx, conn => {
            sqlx::query(&sql)
                .bind(fanning.workspace.as_str())
                .bind(now.as_micros())
                .bind(list.as_str())
                .execute(conn)
                .await
                .map(drop)
        })?;
        // Deliveries without a trace of their own continue the current span's (the publisher's,
        // when it writes in its own transaction).
        let current = pier_core::trace::current_traceparent();
        let new = fanning
            .rows
            .iter()
            .filter(|r| r.state == DeliveryState::Pending.as_str())
            .map(|r| Dispatched {
                delivery: r.id.clone(),
                trace_parent: r
                    .trace_parent
                    .map(str::to_owned)
                    .or_else(|| current.clone()),
            })
            .collect();
        crate::dispatch::enqueue_new(&self.jobs, tx, fanning.workspace, new).await
    }

    /// An event of the workspace.
    pub async fn event(
        &self,
        workspace: &WorkspaceId,
        id: &EventId,
    ) -> Result<Option<Event>, sqlx::Error> {
        let row: Option<EventRow> = self
            .db
            .find_owned(
                "webhook_events",
                EVENT_COLUMNS,
                workspace.as_str(),
                "id",
                id.as_str(),
            )
            .await?;
        row.map(Event::try_from).transpose()
    }

    /// Events, newest first, `limit` after the one with id `before`; of one type if `of_type`.
    pub async fn events(
        &self,
        workspace: &WorkspaceId,
        of_type: Option<&str>,
        before: Option<String>,
        limit: u32,
    ) -> Result<Vec<Event>, sqlx::Error> {
        events_statement(workspace, of_type, before, limit)
            .fetch_decoded::<EventRow, Event>(&self.db)
            .await
    }

    /// The deliveries of an event, in id order, `limit` after the one with id `after`.
    pub async fn deliveries_of(
        &self,
        workspace: &WorkspaceId,
        event: &EventId,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Delivery>, sqlx::Error> {
        deliveries_of_statement(workspace, event, after, limit)
            .fetch_decoded::<DeliveryRow, Delivery>(&self.db)
            .await
    }

    pub async fn delivery(
        &self,
        workspace: &WorkspaceId,
        id: &DeliveryId,
    ) -> Result<Option<Delivery>, sqlx::Error> {
        let row: Option<DeliveryRow> = self
            .db
            .find_owned(
                "webhook_deliveries",
                DELIVERY_COLUMNS,
                workspace.as_str(),
                "id",
                id.as_str(),
            )
            .await?;
        row.map(Delivery::try_from).transpose()
    }
}

/// One event row to insert, in the shape the bulk statement reads.
#[derive(Serialize)]
struct NewEventRow<'a> {
    workspace_id: &'a str,
    id: String,
    event_type: &'a str,
    payload: &'a str,
    client_event_id: Option<&'a str>,
}

/// Inserts events in one statement and returns the ids of those inserted: a row whose client
/// event id is taken (by a committed publication, or an earlier row of this statement) is not.
async fn insert_events(
    tx: &mut Tx,
    now: Timestamp,
    rows: &[NewEventRow<'_>],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO webhook_events (workspace_id, id, type, payload, client_event_id, \
         created_at) SELECT value ->> 'workspace_id', value ->> 'id', value ->> 'event_type', \
         value ->> 'payload', value ->> 'client_event_id', $1 FROM {} WHERE true \
         ON CONFLICT (workspace_id, client_event_id) WHERE client_event_id IS NOT NULL \
         DO NOTHING RETURNING id",
        tx.backend().json_rows("$2")
    );
    // Client ids in one order, so concurrent statements wait on each other's keys in the same
    // order (never a deadlock between two nodes' gatherings).
    let mut sorted: Vec<&NewEventRow> = rows.iter().collect();
    sorted.sort_by_key(|row| (row.workspace_id, row.client_event_id));
    let list = JsonList::new(&sorted)?;
    let ids: Vec<(String,)> = with_tx!(tx, conn => {
        sqlx::query_as(&sql)
            .bind(now.as_micros())
            .bind(list.as_str())
            .fetch_all(conn)
            .await
    })?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// The first publication of a client's event id answers a repeat that carries the same type
/// and payload; a different one is a mistake the publisher must hear about.
fn same_event(first: Event, again: &NewEvent) -> Result<Published, WebhookError> {
    if first.event_type == again.event_type.as_str() && first.payload == again.payload {
        Ok(Published {
            event: first,
            existing: true,
        })
    } else {
        Err(WebhookError::EventIdReused(
            first.event_id.unwrap_or_default(),
        ))
    }
}

impl<'a> Fanning<'a> {
    /// Reads the workspace's enabled endpoints in this transaction.
    async fn start(tx: &mut Tx, workspace: &'a WorkspaceId) -> Result<Self, sqlx::Error> {
        Ok(Self {
            workspace,
            subscribers: subscribers(tx, workspace).await?,
            rows: Vec::new(),
            ordered_busy: Default::default(),
        })
    }

    /// Plans a delivery of `event` to every endpoint that wants it. An ordered endpoint's
    /// delivery waits while an earlier one is unfinished: the endpoint's row lock, taken to
    /// number it, orders this against the delivery that finishes and looks for the next (see
    /// [`crate::deliver`]). Endpoints are locked in id order, so concurrent publishes cannot
    /// deadlock on them.
    async fn add(
        &mut self,
        tx: &mut Tx,
        event: &Event,
        trace_parent: Option<&'a str>,
        now: Timestamp,
    ) -> Result<(), sqlx::Error> {
        for endpoint in &self.subscribers {
            if !endpoint.wants(&event.event_type) {
                continue;
            }
            let (seq, state) = if endpoint.ordered {
                let workspace = self.workspace.as_str();
                let Some((seq, busy)) = next_in_line(tx, workspace, &endpoint.id).await? else {
                    continue;
                };
                let busy = busy || !self.ordered_busy.insert(endpoint.id.clone());
                let state = if busy {
                    DeliveryState::Waiting
                } else {
                    DeliveryState::Pending
                };
                (Some(seq), state)
            } else {
                (None, DeliveryState::Pending)
            };
            self.rows.push(NewDelivery {
                id: DeliveryId::new(now).to_string(),
                event_id: event.id.as_str().to_owned(),
                endpoint_id: endpoint.id.clone(),
                seq,
                state: state.as_str(),
                trace_parent,
            });
        }
        Ok(())
    }
}

/// Numbers the next delivery of an ordered endpoint (taking its row lock), and says whether
/// an earlier one is still unfinished; `None` when the endpoint was deleted since the publish
/// read it (the event simply has no delivery there: the publisher's own write goes on).
async fn next_in_line(
    tx: &mut Tx,
    workspace: &str,
    endpoint: &str,
) -> Result<Option<(i64, bool)>, sqlx::Error> {
    with_tx!(tx, conn => {
        let seq: Option<(i64,)> = sqlx::query_as(
            "UPDATE webhook_endpoints SET next_seq = next_seq + 1 WHERE workspace_id = $1 \
             AND id = $2 RETURNING next_seq",
        )
        .bind(workspace)
        .bind(endpoint)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((seq,)) = seq else {
            return Ok(None);
        };
        let busy: Option<(i64,)> = sqlx::query_as(
            "SELECT seq FROM webhook_deliveries WHERE workspace_id = $1 AND endpoint_id = $2 \
             AND seq IS NOT NULL AND state IN ('waiting', 'pending') LIMIT 1",
        )
        .bind(workspace)
        .bind(endpoint)
        .fetch_optional(conn)
        .await?;
        Ok(Some((seq, busy.is_some())))
    })
}

/// Enqueues the job that sends each delivery (its id, with the requests sent so far), once
/// per opening: the job's unique key is the delivery's id and that count. A delivery sent
/// again after it ended (a retry, a recovery) gets a job of its own even while the job that
/// ended it is still finishing; two enqueues of one opening make one job.
pub(crate) async fn enqueue(
    jobs: &JobStore,
    tx: &mut Tx,
    workspace: &WorkspaceId,
    deliveries: &[(&str, i64)],
) -> Result<(), sqlx::Error> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let specs = deliveries
        .iter()
        .map(|(id, sent)| deliver_job(id, *sent))
        .collect::<Result<Vec<_>, _>>()?;
    jobs.enqueue_in(tx, workspace, &specs).await?;
    Ok(())
}

pub(crate) fn deliver_job(delivery: &str, sent: i64) -> Result<NewJob, sqlx::Error> {
    let payload = serde_json::to_value(DeliverJob {
        delivery: delivery.to_owned(),
    })
    .map_err(decode)?;
    let mut spec = JobSpec::new(DELIVER)
        .payload(payload)
        .unique_key(format!("{delivery}/{sent}"));
    // The delivery counts its own attempts (requests sent) against the schedule; the job's
    // runs also include lease rescues, so it gets the most the engine allows rather than being
    // discarded early (a discard still ends the delivery: see `deliver::discarded`).
    spec.max_attempts = Some(*pier_jobs::MAX_ATTEMPTS_RANGE.end());
    spec.build()
        .map(|job| job.on_queue(queue()))
        .map_err(|e| decode(format!("a delivery job: {e:?}")))
}

impl Outbox for WebhookStore {
    fn publish<'a>(
        &'a self,
        tx: &'a mut Tx,
        workspace: &'a str,
        event_type: &'static str,
        payload: serde_json::Value,
    ) -> Publishing<'a> {
        Box::pin(async move {
            let workspace = WorkspaceId::from_trusted(workspace.to_owned());
            self.publish_own(tx, &workspace, event_type, payload).await
        })
    }
}

/// The statement [`WebhookStore::deliveries_of`] runs, along `webhook_deliveries_by_event`.
pub fn deliveries_of_statement(
    workspace: &WorkspaceId,
    event: &EventId,
    after: Option<String>,
    limit: u32,
) -> Statement {
    Statement::keyset_page(
        &format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries"),
        workspace.as_str(),
        vec![("event_id", Bind::Text(event.as_str().to_owned()))],
        (&["id"], false),
        after.map(|id| vec![Bind::Text(id)]),
        limit,
    )
}

/// The statement [`WebhookStore::events`] runs: the primary key walked from the cursor, or
/// `webhook_events_by_type` (migration 22) when one type is asked for.
pub fn events_statement(
    workspace: &WorkspaceId,
    of_type: Option<&str>,
    before: Option<String>,
    limit: u32,
) -> Statement {
    let filters = of_type.map(|t| ("type", Bind::Text(t.to_owned())));
    Statement::keyset_page(
        &format!("SELECT {EVENT_COLUMNS} FROM webhook_events"),
        workspace.as_str(),
        filters.into_iter().collect(),
        (&["id"], true),
        before.map(|id| vec![Bind::Text(id)]),
        limit,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pier_core::{Clock, MasterKey, Patch, SystemClock, WorkspaceId};
    use pier_db::with_writer;
    use pier_jobs::{JobStore, Notifier};
    use pier_testkit::{Backend, TestDb, on_both_backends};

    use super::*;
    use crate::fields::{EndpointFields, EndpointPatch};
    use crate::guard::Guard;
    use crate::store::Settings;

    on_both_backends!(
        one_commit_of_publishes_keeps_an_ordered_endpoint_in_line,
        one_commit_of_publishes_enqueues_one_dispatch,
        a_discarded_dispatch_fails_its_deliveries,
    );

    async fn store_with_workspace(backend: &Backend) -> (TestDb, WebhookStore, WorkspaceId) {
        let schema = [
            pier_db::MIGRATIONS,
            pier_jobs::MIGRATIONS,
            crate::MIGRATIONS,
        ];
        let test = TestDb::new(backend, &schema).await;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let workspace = WorkspaceId::new(clock.now());
        with_writer!(&test.db, pool => {
            sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, 'w', 0)")
                .bind(workspace.as_str())
                .execute(pool)
                .await
                .map(drop)
        })
        .expect("workspace");
        let jobs = JobStore::new(test.db.clone(), clock.clone(), Notifier::default());
        let store = WebhookStore::new(
            test.db.clone(),
            clock,
            jobs,
            MasterKey::generate().derive("test"),
            Settings::default(),
            Guard::new(true),
        );
        (test, store, workspace)
    }

    async fn endpoint(store: &WebhookStore, workspace: &WorkspaceId, ordered: bool) {
        let fields = EndpointFields::for_new(
            EndpointPatch {
                url: Patch::Set("http://127.0.0.1:9/hook".into()),
                ordered: Patch::Set(ordered),
                ..EndpointPatch::default()
            },
            &Guard::new(true),
        )
        .expect("fields");
        store
            .create_endpoint(workspace, &fields)
            .await
            .expect("endpoint");
    }

    fn publications(workspace: &WorkspaceId, count: usize) -> Vec<Arc<Checked>> {
        (0..count)
            .map(|n| {
                let event = NewEvent {
                    event_type: EventTypeName::parse("seq").expect("type"),
                    payload: serde_json::json!({ "n": n }),
                    event_id: None,
                };
                Arc::new(Checked {
                    workspace: workspace.clone(),
                    payload: event.payload.to_string(),
                    event,
                    trace_parent: None,
                })
            })
            .collect()
    }

    /// The kinds of the jobs on the webhook queue, and the deliveries their payloads name.
    async fn queued(test: &TestDb) -> Vec<(String, serde_json::Value)> {
        let rows: Vec<(String, String)> = with_writer!(&test.db, pool => {
            sqlx::query_as("SELECT kind, payload FROM jobs WHERE queue = $1 ORDER BY id")
                .bind(queue().as_str())
                .fetch_all(pool)
                .await
        })
        .expect("jobs");
        rows.into_iter()
            .map(|(kind, payload)| (kind, serde_json::from_str(&payload).expect("payload")))
            .collect()
    }

    /// A dispatch the engine discards (its runs used up) ends the deliveries it carried: none
    /// stays pending without a job behind it.
    async fn a_discarded_dispatch_fails_its_deliveries(backend: Backend) {
        let (test, store, workspace) = store_with_workspace(&backend).await;
        endpoint(&store, &workspace, false).await;
        let written = store
            .write_events(&publications(&workspace, crate::dispatch::MAX_DIRECT + 1))
            .await
            .expect("written");
        let jobs = queued(&test).await;
        assert_eq!(jobs[0].0, crate::dispatch::DISPATCH, "{jobs:?}");
        // The dispatch has one run; its run fails, so the engine discards it.
        with_writer!(&test.db, pool => {
            sqlx::query("UPDATE jobs SET max_attempts = 1")
                .execute(pool)
                .await
                .map(drop)
        })
        .expect("one run only");
        let target = pier_jobs::ClaimTarget::internal(queue()).expect("an own queue");
        let limits = pier_jobs::ClaimLimits {
            max: 10,
            budget_bytes: 1 << 20,
        };
        let claimed = store
            .jobs
            .claim(&target, limits, None, None)
            .await
            .expect("claimed");
        assert_eq!(claimed.len(), 1);
        let held = pier_jobs::Held::new(
            workspace.clone(),
            claimed[0].id.clone(),
            &claimed[0].lease_token,
        )
        .expect("held");
        let failure = pier_jobs::Failure {
            job: held,
            error: "boom".into(),
            retry_at: None,
            discard: false,
        };
        store.jobs.fail(failure).await.expect("failed");
        for event in written.iter().flatten() {
            let deliveries = store
                .deliveries_of(&workspace, &event.id, None, 10)
                .await
                .expect("deliveries");
            assert_eq!(deliveries.len(), 1);
            assert_eq!(deliveries[0].state, DeliveryState::Failed);
            let error = deliveries[0].last_error.as_deref().unwrap_or_default();
            assert!(
                error.contains("dispatch job ran out of runs: boom"),
                "{error}"
            );
        }
    }

    /// A commit of few deliveries gives each its job at once. One of many (events to two
    /// endpoints, past the direct bound) gives one dispatch job carrying them; dispatching it
    /// gives each delivery its job, and dispatching it again (a job run twice) none a second.
    async fn one_commit_of_publishes_enqueues_one_dispatch(backend: Backend) {
        let (test, store, workspace) = store_with_workspace(&backend).await;
        endpoint(&store, &workspace, false).await;
        endpoint(&store, &workspace, false).await;
        let few = crate::dispatch::MAX_DIRECT / 2;
        store
            .write_events(&publications(&workspace, few))
            .await
            .expect("written");
        let direct = queued(&test).await;
        assert_eq!(direct.len(), 2 * few, "{direct:?}");
        assert!(direct.iter().all(|(kind, _)| kind == DELIVER), "{direct:?}");
        with_writer!(&test.db, pool => {
            sqlx::query("DELETE FROM jobs").execute(pool).await.map(drop)
        })
        .expect("emptied");

        let many = crate::dispatch::MAX_DIRECT;
        let written = store
            .write_events(&publications(&workspace, many))
            .await
            .expect("written");
        let mut deliveries = Vec::new();
        for event in written.iter().flatten() {
            let of_event = store
                .deliveries_of(&workspace, &event.id, None, 10)
                .await
                .expect("deliveries");
            deliveries.extend(of_event.into_iter().map(|d| d.id.to_string()));
        }
        assert_eq!(deliveries.len(), 2 * many);
        let jobs = queued(&test).await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].0, crate::dispatch::DISPATCH);
        let job: crate::dispatch::DispatchJob =
            serde_json::from_value(jobs[0].1.clone()).expect("a dispatch");
        let mut carried: Vec<String> = job.deliveries.iter().map(|d| d.delivery.clone()).collect();
        carried.sort();
        deliveries.sort();
        assert_eq!(carried, deliveries);

        for _ in 0..2 {
            let dispatch = vec![(workspace.clone(), job.deliveries.clone())];
            crate::dispatch::dispatch_many(store.clone(), Arc::new(dispatch))
                .await
                .expect("dispatched");
        }
        let mut sent: Vec<String> = queued(&test)
            .await
            .into_iter()
            .filter(|(kind, _)| kind == DELIVER)
            .map(|(_, payload)| payload["delivery"].as_str().expect("id").to_owned())
            .collect();
        sent.sort();
        assert_eq!(sent, deliveries, "one job per delivery");
    }

    /// Several publishes in one commit to an ordered endpoint with nothing in flight: the first
    /// delivery goes, every later one waits (the database alone cannot say so: the earlier
    /// deliveries of the same commit are not written yet when the later ones are numbered).
    async fn one_commit_of_publishes_keeps_an_ordered_endpoint_in_line(backend: Backend) {
        let (_test, store, workspace) = store_with_workspace(&backend).await;
        endpoint(&store, &workspace, true).await;
        let publications = publications(&workspace, 3);
        let written = store.write_events(&publications).await.expect("written");
        let mut states = Vec::new();
        for event in written.iter().flatten() {
            let deliveries = store
                .deliveries_of(&workspace, &event.id, None, 10)
                .await
                .expect("deliveries");
            states.extend(deliveries.into_iter().map(|d| d.state));
        }
        assert_eq!(
            states,
            [
                DeliveryState::Pending,
                DeliveryState::Waiting,
                DeliveryState::Waiting
            ]
        );
    }
}
