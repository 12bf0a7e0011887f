-- What click statistics need beyond the hourly counts, per link and (UTC) day: a sketch of
-- the distinct visitors (HyperLogLog registers, hex) and the referring hosts of human visits,
-- at most 100 hosts a day, the rest counted under '(other)'.
CREATE TABLE link_visitors_daily (
    workspace_id TEXT NOT NULL,
    link_id      TEXT NOT NULL,
    day          INTEGER NOT NULL,
    sketch       TEXT NOT NULL,
    PRIMARY KEY (workspace_id, link_id, day)
);

CREATE TABLE link_referrers_daily (
    workspace_id TEXT NOT NULL,
    link_id      TEXT NOT NULL,
    day          INTEGER NOT NULL,
    host         TEXT NOT NULL,
    clicks       INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, link_id, day, host)
);

-- Human visits per link, day and visitor country, when a GeoIP database is configured.
CREATE TABLE link_countries_daily (
    workspace_id TEXT NOT NULL,
    link_id      TEXT NOT NULL,
    day          INTEGER NOT NULL,
    country      TEXT NOT NULL,
    clicks       INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, link_id, day, country)
);

-- The latest clicks of each link (at most 100 are kept), for a glance at who came lately.
CREATE TABLE link_clicks_recent (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    link_id      TEXT NOT NULL,
    at           INTEGER NOT NULL,
    visitor      TEXT NOT NULL,
    referrer     TEXT,
    country      TEXT
);
CREATE INDEX link_clicks_recent_by_link ON link_clicks_recent (workspace_id, link_id, seq);
