-- Foundation: server settings, workspaces, API keys and idempotency records.
-- Timestamps are BIGINT microseconds since the Unix epoch on both backends, so ordering, cursor
-- positions and arithmetic behave identically on SQLite and PostgreSQL.

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    secret_hash  TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    scopes       TEXT,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT,
    revoked_at   BIGINT
);

CREATE INDEX api_keys_by_workspace ON api_keys (workspace_id, created_at DESC, id DESC);

CREATE TABLE idempotency_keys (
    principal        TEXT NOT NULL,
    key              TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    status_code      BIGINT,
    response_headers TEXT,
    response_body    BYTEA,
    locked_at        BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    PRIMARY KEY (principal, key)
);

CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
