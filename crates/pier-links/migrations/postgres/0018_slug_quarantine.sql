-- Slugs of deleted and renamed links, reserved to the workspace that held them until
-- `held_until` (microseconds), so a printed short link cannot be taken over by another
-- tenant. Another workspace's create or rename finds the slug taken; the holder may reuse it
-- at once. Maintenance deletes rows whose time has passed.
CREATE TABLE link_slug_quarantine (
    slug         TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    held_until   BIGINT NOT NULL
);
CREATE INDEX link_slug_quarantine_by_time ON link_slug_quarantine (held_until);
