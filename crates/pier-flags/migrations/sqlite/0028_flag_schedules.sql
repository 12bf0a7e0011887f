-- Scheduled changes of flags: a JSON Merge Patch of a flag's definition (`patch`) to apply at
-- `apply_at`, by a job on the internal queue `pier.flags`. `status` is pending until the job
-- applies it (`applied`, with the flag's `applied_version`), fails (`failed`, with `reason`) or
-- someone cancels it (`cancelled`; deleting the flag cancels its pending ones); `ended_at` is
-- when it left pending, which retention counts from.
CREATE TABLE flag_schedules (
    workspace_id    TEXT NOT NULL,
    id              TEXT NOT NULL,
    flag_key        TEXT NOT NULL,
    apply_at        INTEGER NOT NULL,
    patch           TEXT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT,
    applied_version INTEGER,
    created_by      TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    PRIMARY KEY (workspace_id, id)
);
-- A flag's schedules, listed newest first, and the pending ones a delete cancels.
CREATE INDEX flag_schedules_by_flag ON flag_schedules (workspace_id, flag_key, id);
-- Retention: ended schedules by age.
CREATE INDEX flag_schedules_ended ON flag_schedules (workspace_id, ended_at)
    WHERE ended_at IS NOT NULL;
-- Retention of the audit trail: changes by age.
CREATE INDEX flag_changes_by_age ON flag_changes (workspace_id, created_at);
