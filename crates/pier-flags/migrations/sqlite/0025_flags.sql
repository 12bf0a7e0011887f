-- Feature flags, one row per flag of a workspace, addressed by key (as flagd and OFREP address
-- them). `definition` is the flag's flagd JSON with its `$ref`s inlined; `version` moves on
-- every change, so it is the ETag a conditional update compares. The primary key serves the
-- list, which pages by key.
CREATE TABLE flags (
    workspace_id TEXT NOT NULL,
    key          TEXT NOT NULL,
    definition   TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, key)
);

-- The audit trail: who changed which flag when, and how (`diff`: a JSON Merge Patch from the
-- definition before to the one after; the whole definition on create, null on delete). Kept
-- after the flag is deleted; read newest first per flag, in the order of `seq` (changes within one
-- clock tick keep their order).
CREATE TABLE flag_changes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    flag_key     TEXT NOT NULL,
    action       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    diff         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX flag_changes_by_flag ON flag_changes (workspace_id, flag_key, seq);
