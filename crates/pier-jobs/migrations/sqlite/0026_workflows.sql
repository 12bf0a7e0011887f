-- Workflows: named graphs of jobs. Each step is a job; one with dependencies waits in state
-- `pending` (which no claim reads) until its last dependency completes, and is released by the
-- transaction that completes it, under a lock on the workflow's row. See
-- crates/pier-jobs/src/workflow.rs and store/progress.rs.
CREATE TABLE workflows (
    workspace_id        TEXT NOT NULL,
    id                  TEXT NOT NULL,
    name                TEXT NOT NULL,
    state               TEXT NOT NULL,
    steps_total         INTEGER NOT NULL,
    -- Also the completion order: the nth step to complete gets completed_seq n.
    steps_completed     INTEGER NOT NULL DEFAULT 0,
    failed_step         TEXT,
    failed_compensation TEXT,
    created_at          INTEGER NOT NULL,
    finished_at         INTEGER,
    PRIMARY KEY (workspace_id, id)
);
-- Pruning finds finished workflows across workspaces, as promotion finds due jobs.
CREATE INDEX workflows_finished ON workflows (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE workflow_steps (
    workspace_id        TEXT NOT NULL,
    workflow_id         TEXT NOT NULL,
    name                TEXT NOT NULL,
    position            INTEGER NOT NULL,
    job_id              TEXT NOT NULL,
    -- JSON arrays of step names, both ways.
    depends_on          TEXT NOT NULL,
    dependents          TEXT NOT NULL,
    -- Dependencies not completed yet; the step is released when it reaches 0.
    waiting_on          INTEGER NOT NULL,
    completed_seq       INTEGER,
    -- The compensation's job spec (JSON), and its job once enqueued.
    compensate          TEXT,
    compensation_job_id TEXT,
    PRIMARY KEY (workspace_id, workflow_id, name)
);

-- A job of a workflow names it and its step; a released step carries its dependencies'
-- results. Nullable and unread by older versions, and no index: plain jobs pay nothing.
ALTER TABLE jobs ADD COLUMN workflow_id TEXT;
ALTER TABLE jobs ADD COLUMN workflow_step TEXT;
ALTER TABLE jobs ADD COLUMN inputs TEXT;
