-- The change feed of a workspace's flags (`GET /v1/flags/stream`): each change keeps the
-- definition it left (null for a delete and for changes made before this migration), so a
-- stream can send a flag's new state without reading the flags table, and changes are read
-- per workspace in `seq` order, which is their commit order (one writer at a time).
ALTER TABLE flag_changes ADD COLUMN definition TEXT;
CREATE INDEX flag_changes_by_workspace ON flag_changes (workspace_id, seq);
