-- Claims read the waiting jobs of one workspace's queue, so the claim index leads with the
-- workspace: another tenant's backlog in a queue of the same name is never scanned. Pier's own
-- queues (`pier.…`) are served across workspaces and get an index of their own.
DROP INDEX jobs_waiting;
CREATE INDEX jobs_waiting ON jobs (workspace_id, queue, priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
CREATE INDEX jobs_waiting_internal ON jobs (queue, priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable') AND queue LIKE 'pier.%';

-- What a worker reports on completion (JSON text).
ALTER TABLE jobs ADD COLUMN result TEXT;

-- The jobs tables no longer reference another capability's table (SQLite drops a foreign key by
-- rebuilding the table); queue settings rows exist only while they differ from the defaults.
CREATE TABLE queues_rebuilt (
    workspace_id      TEXT NOT NULL,
    name              TEXT NOT NULL,
    paused            INTEGER NOT NULL DEFAULT 0,
    concurrency_limit INTEGER,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
INSERT INTO queues_rebuilt (workspace_id, name, paused, concurrency_limit, updated_at)
    SELECT workspace_id, name, paused, concurrency_limit, updated_at FROM queues
    WHERE paused OR concurrency_limit IS NOT NULL;
DROP TABLE queues;
ALTER TABLE queues_rebuilt RENAME TO queues;
