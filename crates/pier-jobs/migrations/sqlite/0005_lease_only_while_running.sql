-- A lease token exists only while its job runs: every transition out of `running` clears it in
-- the same statement. The database now enforces it, so a token that matches is a running job
-- held under that token, and fencing holds even against a bug in a transition. Rows an earlier
-- version left inconsistent (promotion could put a claimed job back to `available` with its
-- token) lose their stale token. SQLite adds a constraint by rebuilding the table.
UPDATE jobs SET lease_token = NULL, lease_expires_at = NULL
    WHERE state <> 'running' AND lease_token IS NOT NULL;

CREATE TABLE jobs_checked (
    -- Not a foreign key: its check fires on every claim and completion, a measured ~15% of
    -- burn-down time. Jobs are only created for existing workspaces, by the store.
    workspace_id     TEXT NOT NULL,
    id               TEXT NOT NULL,
    queue            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    backoff_base_ms  INTEGER,
    backoff_max_ms   INTEGER,
    lease_ms         INTEGER NOT NULL,
    unique_key       TEXT,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    worker_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    errors           TEXT NOT NULL DEFAULT '[]',
    created_at       INTEGER NOT NULL,
    attempted_at     INTEGER,
    finalized_at     INTEGER,
    result           TEXT,
    CONSTRAINT jobs_lease_only_while_running
        CHECK (lease_token IS NULL OR state = 'running'),
    -- Tenant first: lookups and per-workspace listing (newest first, as ids are time-ordered)
    -- use this one index, and the table can be distributed by workspace.
    PRIMARY KEY (workspace_id, id)
);

INSERT INTO jobs_checked SELECT workspace_id, id, queue, kind, payload, state, priority, run_at,
    attempt, max_attempts, backoff_base_ms, backoff_max_ms, lease_ms, unique_key, lease_token,
    lease_expires_at, worker_id, cancel_requested, errors, created_at, attempted_at,
    finalized_at, result FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_checked RENAME TO jobs;

CREATE INDEX jobs_waiting ON jobs (workspace_id, queue, priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
CREATE INDEX jobs_waiting_internal ON jobs (queue, priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable') AND queue LIKE 'pier.%';
CREATE INDEX jobs_running ON jobs (workspace_id, queue) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_unique_key ON jobs (workspace_id, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running', 'retryable');
CREATE INDEX jobs_due ON jobs (run_at) WHERE state IN ('scheduled', 'retryable');
