-- Rate-limit policies that workspaces define through the API (the configuration file's live in
-- the configuration). Counts are not here: they live in the limiter's store (memory or Redis).
CREATE TABLE rate_limit_policies (
    workspace_id   TEXT NOT NULL,
    name           TEXT NOT NULL,
    algorithm      TEXT NOT NULL,
    quota          BIGINT NOT NULL,
    period_seconds BIGINT NOT NULL,
    burst          BIGINT NOT NULL,
    failure_mode   TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
