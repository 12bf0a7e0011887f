-- A lease token exists only while its job runs: every transition out of `running` clears it in
-- the same statement. The database now enforces it, so a token that matches is a running job
-- held under that token, and fencing holds even against a bug in a transition. Rows an earlier
-- version left inconsistent (promotion could put a claimed job back to `available` with its
-- token) lose their stale token first.
UPDATE jobs SET lease_token = NULL, lease_expires_at = NULL
    WHERE state <> 'running' AND lease_token IS NOT NULL;
ALTER TABLE jobs ADD CONSTRAINT jobs_lease_only_while_running
    CHECK (lease_token IS NULL OR state = 'running');
