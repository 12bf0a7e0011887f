-- Listing: every filter of GET /v1/jobs (queue, state, kind and their combinations) walks an
-- index whose leading columns are its filters and whose last is the id, so a page reads its own
-- rows and no more, at any depth. Queue and kind lists without a state walk their index once
-- per state and merge the walks (see crates/pier-jobs/src/store/listing.rs), so four indexes
-- serve the seven combinations. Each is paid for on every enqueue, claim and completion: the
-- measured cost is in bench/RESULTS.md.
CREATE INDEX jobs_listed_by_state ON jobs (workspace_id, state, id);
CREATE INDEX jobs_listed_by_queue ON jobs (workspace_id, queue, state, id);
CREATE INDEX jobs_listed_by_kind ON jobs (workspace_id, kind, state, id);
CREATE INDEX jobs_listed_by_queue_kind ON jobs (workspace_id, queue, kind, state, id);
