-- The W3C trace context of the span that enqueued a job, so the job's run continues that trace
-- (request → job → webhook attempt). Nullable and unread by older versions: a rolling upgrade
-- can run them side by side.
ALTER TABLE jobs ADD COLUMN trace_parent TEXT;
