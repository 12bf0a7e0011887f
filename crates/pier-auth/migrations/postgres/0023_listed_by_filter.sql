-- Every filter of GET /v1/api-keys and GET /v1/permissions/grants walks an index that ends in
-- the list's order (created_at, id), so a filtered page reads its own rows and no more, at any
-- depth. A grant's resource is found by its id (ids name one resource; the type, if given, is
-- checked on those few rows), so the resource-type-first index gives way to the id-first one.
CREATE INDEX api_keys_by_role ON api_keys (workspace_id, role, created_at, id);
CREATE INDEX resource_grants_by_subject ON resource_grants (workspace_id, subject, created_at, id);
CREATE INDEX resource_grants_by_type ON resource_grants (workspace_id, resource_type, created_at, id);
CREATE INDEX resource_grants_by_resource_id
    ON resource_grants (workspace_id, resource_id, created_at, id);
DROP INDEX resource_grants_by_resource;
