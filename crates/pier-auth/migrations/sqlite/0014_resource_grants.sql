-- Resource-level grants: relationship tuples "subject may read (viewer) or change (editor) this
-- one link, queue or webhook endpoint", beyond what the subject's role allows. A subject is an
-- API key (key_…) or a user (usr_…) of the same workspace.

CREATE TABLE resource_grants (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    subject       TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    relation      TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (workspace_id, subject, resource_type, resource_id, relation)
);

CREATE INDEX resource_grants_by_resource ON resource_grants (workspace_id, resource_type, resource_id);
CREATE INDEX resource_grants_by_workspace ON resource_grants (workspace_id, created_at, id);
