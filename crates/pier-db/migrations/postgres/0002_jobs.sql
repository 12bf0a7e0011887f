-- Jobs: a durable queue. See crates/pier-jobs for the state machine.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    queue            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         BIGINT NOT NULL,
    run_at           BIGINT NOT NULL,
    attempt          BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    backoff_base_ms  BIGINT,
    backoff_max_ms   BIGINT,
    lease_ms         BIGINT NOT NULL,
    unique_key       TEXT,
    lease_token      TEXT,
    lease_expires_at BIGINT,
    worker_id        TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    errors           TEXT NOT NULL DEFAULT '[]',
    created_at       BIGINT NOT NULL,
    attempted_at     BIGINT,
    finalized_at     BIGINT
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
    paused            BOOLEAN NOT NULL DEFAULT FALSE,
    concurrency_limit BIGINT,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

-- Finished jobs per queue and state, kept current by the store as jobs finish and are pruned, so
-- queue statistics never count millions of rows.
CREATE TABLE job_counts (
    workspace_id TEXT NOT NULL,
    queue        TEXT NOT NULL,
    state        TEXT NOT NULL,
    n            BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, queue, state)
);

-- Due scheduled and retryable jobs, for promotion to available.
CREATE INDEX jobs_due ON jobs (run_at) WHERE state IN ('scheduled', 'retryable');
