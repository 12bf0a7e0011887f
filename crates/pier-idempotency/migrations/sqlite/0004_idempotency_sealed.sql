-- Idempotency records keep no secret in the clear: the row is found by an HMAC of (caller,
-- Idempotency-Key) under a server key, and the stored response is sealed under a key derived
-- from the server key and the client's own Idempotency-Key. A claim carries a token, so a
-- request whose claim was taken over can neither store its response nor release the new
-- owner's claim. The old table's records (at most 24 hours of replays) are dropped: they held
-- responses in the clear.
DROP TABLE idempotency_keys;

CREATE TABLE idempotency_records (
    lookup      TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    claim_token TEXT,
    response    BLOB,
    locked_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE INDEX idempotency_records_by_expiry ON idempotency_records (expires_at);
