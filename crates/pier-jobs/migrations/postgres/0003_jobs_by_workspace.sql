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

-- The jobs tables no longer reference another capability's table; queue settings rows exist
-- only while they differ from the defaults.
ALTER TABLE queues DROP CONSTRAINT IF EXISTS queues_workspace_id_fkey;
DELETE FROM queues WHERE NOT paused AND concurrency_limit IS NULL;
