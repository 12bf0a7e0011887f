-- Short links. `slug` is unique across the service (the redirect path knows no workspace) and
-- compared case-sensitively, as text is here. `clicks` counts human visits; the hourly table
-- holds the series, bots apart. `version` moves on every change the owner makes (not on
-- clicks), so it is the ETag a conditional update compares.
CREATE TABLE links (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL,
    slug            TEXT NOT NULL UNIQUE,
    url             TEXT NOT NULL,
    title           TEXT,
    tags            TEXT NOT NULL,
    redirect_status INTEGER NOT NULL,
    expires_at      INTEGER,
    max_clicks      INTEGER,
    password_hash   TEXT,
    created_by      TEXT NOT NULL,
    version         INTEGER NOT NULL,
    clicks          INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX links_by_workspace ON links (workspace_id, created_at, id);

-- One row per tag of a link, ordered like the list, so `?tag=` pages by keyset over the
-- links that carry it instead of scanning the workspace for them.
CREATE TABLE link_tags (
    workspace_id TEXT NOT NULL,
    tag          TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    link_id      TEXT NOT NULL,
    PRIMARY KEY (workspace_id, tag, created_at, link_id)
);
CREATE INDEX link_tags_by_link ON link_tags (workspace_id, link_id);

-- Visits per link and hour (`hour` is the hour's first microsecond), written by the click
-- flusher in batches.
CREATE TABLE link_clicks_hourly (
    workspace_id TEXT NOT NULL,
    link_id      TEXT NOT NULL,
    hour         INTEGER NOT NULL,
    humans       INTEGER NOT NULL,
    bots         INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, link_id, hour)
);
