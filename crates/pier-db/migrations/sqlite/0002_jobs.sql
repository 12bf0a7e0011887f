-- Jobs: a durable queue. See crates/pier-jobs for the state machine.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
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
    finalized_at     INTEGER
);

-- The claim path: waiting jobs of a queue in claim order.
CREATE INDEX jobs_waiting ON jobs (queue, priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- Rescue of expired leases.
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
-- Concurrency limits count running jobs per queue.
CREATE INDEX jobs_running ON jobs (workspace_id, queue) WHERE state = 'running';
-- One unfinished job per unique key.
CREATE UNIQUE INDEX jobs_unique_key ON jobs (workspace_id, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running', 'retryable');
-- Listing, newest first.
CREATE INDEX jobs_by_workspace ON jobs (workspace_id, created_at DESC, id DESC);
-- Retention pruning.
CREATE INDEX jobs_finalized ON jobs (state, finalized_at)
    WHERE state IN ('completed', 'discarded', 'cancelled');

CREATE TABLE queues (
    workspace_id      TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    paused            INTEGER NOT NULL DEFAULT 0,
    concurrency_limit INTEGER,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

-- Finished jobs per queue and state, kept current by the store as jobs finish and are pruned, so
-- queue statistics never count millions of rows.
CREATE TABLE job_counts (
    workspace_id TEXT NOT NULL,
    queue        TEXT NOT NULL,
    state        TEXT NOT NULL,
    n            INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, queue, state)
);

-- Due scheduled and retryable jobs, for promotion to available.
CREATE INDEX jobs_due ON jobs (run_at) WHERE state IN ('scheduled', 'retryable');
