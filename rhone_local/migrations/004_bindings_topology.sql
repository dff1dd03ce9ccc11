-- Version 4: provider bindings, runtime service bindings, scale, regions and cells.

-- Regions carry a jurisdiction (residency policy is checked against it) and one is the primary: an environment
-- serves there from its creation; any other region serves only once a Region Enablement made it eligible.
ALTER TABLE regions ADD COLUMN jurisdiction TEXT NOT NULL DEFAULT 'local';
ALTER TABLE regions ADD COLUMN is_primary INTEGER NOT NULL DEFAULT 0;
UPDATE regions SET is_primary = 1 WHERE id = (SELECT id FROM regions ORDER BY id LIMIT 1);

-- A digest of what an allocation received from its environment's bindings when it started: a scale replaces the
-- allocations whose bindings have changed since, so every instance runs with the same services.
ALTER TABLE allocations ADD COLUMN bindings_digest TEXT;

-- The number of instances the route owner runs in the environment, set by scale operations.
ALTER TABLE environments ADD COLUMN instances INTEGER NOT NULL DEFAULT 1 CHECK (instances BETWEEN 0 AND 20);

-- An environment-scoped attachment to an external resource. Secret values live in binding_secrets, never in a
-- document the API returns or an operation's parameters.
CREATE TABLE provider_bindings (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    app_id TEXT NOT NULL REFERENCES apps(id),
    environment_id TEXT NOT NULL REFERENCES environments(id),
    name TEXT NOT NULL,                   -- the provider's name in rhone.toml
    kind TEXT NOT NULL,
    resource TEXT NOT NULL,               -- the external resource's identifier (no credentials)
    mutable INTEGER NOT NULL,
    shared_read_only INTEGER NOT NULL DEFAULT 0,
    region_id TEXT NOT NULL REFERENCES regions(id),
    state TEXT NOT NULL CHECK (state IN ('binding', 'ready', 'unbinding', 'removed', 'failed')),
    operation_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX provider_bindings_live ON provider_bindings (environment_id, name, region_id)
    WHERE state IN ('binding', 'ready', 'unbinding');
CREATE INDEX provider_bindings_resource ON provider_bindings (resource) WHERE state IN ('binding', 'ready');

CREATE TABLE binding_secrets (
    binding_id TEXT NOT NULL REFERENCES provider_bindings(id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (binding_id, name)
) STRICT;

-- Declared availability of a runtime service (session, broadcast, idempotency, cache, queue, object_storage) for an
-- environment in a region.
CREATE TABLE runtime_service_bindings (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    environment_id TEXT NOT NULL REFERENCES environments(id),
    region_id TEXT NOT NULL REFERENCES regions(id),
    service TEXT NOT NULL,
    provider TEXT NOT NULL,               -- 'local' (Rhone Local's own implementation) or an external resource
    endpoint TEXT NOT NULL,               -- what allocations receive
    state TEXT NOT NULL CHECK (state IN ('ready', 'removed')),
    operation_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX runtime_service_bindings_live ON runtime_service_bindings (environment_id, region_id, service)
    WHERE state = 'ready';

-- Region eligibility per environment, written only by Region Enablement operations.
CREATE TABLE environment_regions (
    environment_id TEXT NOT NULL REFERENCES environments(id),
    region_id TEXT NOT NULL REFERENCES regions(id),
    state TEXT NOT NULL CHECK (state IN ('enabling', 'eligible', 'disabled')),
    operation_id TEXT NOT NULL,
    reason TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (environment_id, region_id)
) STRICT;
