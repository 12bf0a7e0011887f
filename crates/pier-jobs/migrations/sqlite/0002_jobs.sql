-- Jobs: a durable queue. See crates/pier-jobs for the state machine.

CREATE TABLE jobs (
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
    -- Tenant first: lookups and per-workspace listing (newest first, as ids are time-ordered)
    -- use this one index, and the table can be distributed by workspace.
    PRIMARY KEY (workspace_id, id)
);

-- The claim path: waiting jobs of a queue in claim order.
CREATE INDEX jobs_waiting ON jobs (queue, priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- Running jobs, per queue for concurrency limits; lease rescue scans it whole (it holds only
-- what runs right now).
CREATE INDEX jobs_running ON jobs (workspace_id, queue) WHERE state = 'running';
-- One unfinished job per unique key.
CREATE UNIQUE INDEX jobs_unique_key ON jobs (workspace_id, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running', 'retryable');
-- Listing and retention pruning need no index of their own: ids are time-ordered, so both walk
-- the primary key. Every index here is paid for on every claim and completion (dropping a
-- separate listing index took burn-down from 23k to 32k jobs/s).

CREATE TABLE queues (
    workspace_id      TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    paused            INTEGER NOT NULL DEFAULT 0,
    concurrency_limit INTEGER,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

-- Finished jobs per queue and state, kept current by the store as jobs finish and are pruned, so
-- queue statistics never count millions of rows. Each counter is split over a few shards (summed
-- when read) so that concurrent completions do not queue on one row lock.
CREATE TABLE job_counts (
    workspace_id TEXT NOT NULL,
    queue        TEXT NOT NULL,
    state        TEXT NOT NULL,
    shard        INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, queue, state, shard)
);

-- Due scheduled and retryable jobs, for promotion to available.
CREATE INDEX jobs_due ON jobs (run_at) WHERE state IN ('scheduled', 'retryable');
