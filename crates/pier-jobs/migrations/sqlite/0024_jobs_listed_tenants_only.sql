-- The listing indexes of migration 21 hold only tenants' jobs: GET /v1/jobs never lists Pier's
-- own (queues named `pier.…`, such as webhook deliveries), and every list statement says so in
-- the same words as the predicate below, so these indexes still serve every filter while
-- Pier's own jobs (one per webhook delivery) no longer pay for them on each enqueue, claim and
-- completion, and a backlog of them no longer lies in a tenant's list walk.
DROP INDEX jobs_listed_by_state;
DROP INDEX jobs_listed_by_queue;
DROP INDEX jobs_listed_by_kind;
DROP INDEX jobs_listed_by_queue_kind;
CREATE INDEX jobs_listed_by_state ON jobs (workspace_id, state, id)
    WHERE queue NOT LIKE 'pier.%';
CREATE INDEX jobs_listed_by_queue ON jobs (workspace_id, queue, state, id)
    WHERE queue NOT LIKE 'pier.%';
CREATE INDEX jobs_listed_by_kind ON jobs (workspace_id, kind, state, id)
    WHERE queue NOT LIKE 'pier.%';
CREATE INDEX jobs_listed_by_queue_kind ON jobs (workspace_id, queue, kind, state, id)
    WHERE queue NOT LIKE 'pier.%';
