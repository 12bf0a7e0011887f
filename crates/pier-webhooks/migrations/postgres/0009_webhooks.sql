-- Webhooks. Every row carries its workspace first. Events are published into
-- `webhook_events`; the same transaction writes one delivery per matching endpoint and the
-- jobs that send them (the transactional outbox), so an event is delivered if and only if its
-- publication committed.

-- The event types a workspace publishes, each with an optional JSON Schema for its payloads.
CREATE TABLE webhook_event_types (
    workspace_id TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    schema       TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

-- Where events go. `next_seq` numbers the deliveries of an ordered endpoint in publish order
-- (the row lock taken to bump it also serializes "who sends next"). `failing_since` is the
-- start of the current run of failed attempts, cleared by a success.
CREATE TABLE webhook_endpoints (
    workspace_id          TEXT NOT NULL,
    id                    TEXT NOT NULL,
    url                   TEXT NOT NULL,
    description           TEXT,
    event_types           TEXT NOT NULL,
    enabled               BOOLEAN NOT NULL,
    disabled_reason       TEXT,
    rate_limit_per_second BIGINT,
    ordered               BOOLEAN NOT NULL,
    ed25519               BOOLEAN NOT NULL,
    metadata              TEXT NOT NULL,
    next_seq              BIGINT NOT NULL DEFAULT 0,
    failing_since         BIGINT,
    version               BIGINT NOT NULL,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

-- Signing secrets, sealed under a key derived from the server's secret key: never in the
-- clear here. `kind` is `hmac` (a `whsec_` secret) or `ed25519` (the seed of a `whsk_` key). A
-- rotated-out secret keeps signing until `expires_at`.
CREATE TABLE webhook_secrets (
    workspace_id TEXT NOT NULL,
    endpoint_id  TEXT NOT NULL,
    id           TEXT NOT NULL,
    kind         TEXT NOT NULL,
    sealed       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    PRIMARY KEY (workspace_id, endpoint_id, id)
);

CREATE TABLE webhook_events (
    workspace_id    TEXT NOT NULL,
    id              TEXT NOT NULL,
    type            TEXT NOT NULL,
    payload         TEXT NOT NULL,
    client_event_id TEXT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
-- A client's own event id publishes once.
CREATE UNIQUE INDEX webhook_events_by_client_id ON webhook_events (workspace_id, client_event_id)
    WHERE client_event_id IS NOT NULL;

-- One event on its way to one endpoint: `waiting` (an ordered endpoint is busy with an
-- earlier one), `pending` (a job will send it), `succeeded` or `failed`.
CREATE TABLE webhook_deliveries (
    workspace_id    TEXT NOT NULL,
    id              TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    endpoint_id     TEXT NOT NULL,
    seq             BIGINT,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_status     BIGINT,
    last_error      TEXT,
    next_attempt_at BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (workspace_id, event_id, id);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (workspace_id, endpoint_id, created_at, id);
-- The queue of an ordered endpoint: its next waiting delivery, and whether one is in flight.
CREATE INDEX webhook_deliveries_in_order ON webhook_deliveries (workspace_id, endpoint_id, seq)
    WHERE state IN ('waiting', 'pending');

-- Every request sent: what came back (the first 4 KiB of the body) or why none did.
CREATE TABLE webhook_attempts (
    workspace_id  TEXT NOT NULL,
    id            TEXT NOT NULL,
    delivery_id   TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    endpoint_id   TEXT NOT NULL,
    attempted_at  BIGINT NOT NULL,
    duration_ms   BIGINT NOT NULL,
    status_code   BIGINT,
    response_body TEXT,
    error         TEXT,
    succeeded     BOOLEAN NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (workspace_id, endpoint_id, id);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (workspace_id, delivery_id);
