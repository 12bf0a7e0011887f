-- GET /v1/events?type=…: the events of one type, newest first, along an index of their own
-- rather than a walk of every event filtered by type.
CREATE INDEX webhook_events_by_type ON webhook_events (workspace_id, type, id);
