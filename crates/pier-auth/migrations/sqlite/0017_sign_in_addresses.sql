-- The client addresses (IPv6 by /64) each user has signed in from, lately: a failed sign-in
-- from one of them does not spend the account-wide quota strangers share, so strangers cannot
-- lock the owner out of the places they sign in from.

CREATE TABLE sign_in_addresses (
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    address      TEXT NOT NULL,
    last_seen_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, address)
);

CREATE INDEX sign_in_addresses_by_age ON sign_in_addresses (last_seen_at);
