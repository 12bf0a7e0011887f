-- An endpoint is disabled after failing without a break for the failure window. A failure
-- after a quiet spell longer than any retry wait starts a new streak instead of extending an
-- old one, so it keeps the time of the latest failure too.
ALTER TABLE webhook_endpoints ADD COLUMN last_failure_at BIGINT;
