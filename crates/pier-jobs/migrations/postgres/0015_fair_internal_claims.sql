-- Pier's own queues are served across workspaces, in turns: a claim first finds the next
-- workspaces (after the last one served) that have a due job, one index probe each, then takes
-- a share from each through `jobs_waiting`. This index serves those probes; the claim-order
-- index it replaces was read by nothing else.
CREATE INDEX jobs_waiting_internal_by_workspace ON jobs (queue, workspace_id, run_at)
    WHERE state IN ('available', 'scheduled', 'retryable') AND queue LIKE 'pier.%';
DROP INDEX jobs_waiting_internal;
