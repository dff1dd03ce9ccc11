-- Version 2: deployments, artifacts, allocations, approvals.
CREATE TABLE artifacts (
    digest TEXT PRIMARY KEY,              -- sha256:… of the artifact manifest
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    app_id TEXT NOT NULL REFERENCES apps(id),
    manifest TEXT NOT NULL,               -- JSON manifest document
    facts TEXT NOT NULL,                  -- JSON: vango manifest, routes, process, assets, source facts
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    app_id TEXT NOT NULL REFERENCES apps(id),
    environment_id TEXT NOT NULL REFERENCES environments(id),
    operation_id TEXT NOT NULL,
    state TEXT NOT NULL,
    prebuilt INTEGER NOT NULL,
    source_digest TEXT NOT NULL,          -- the uploaded manifest's digest
    artifact_digest TEXT,                 -- set by the build stage
    config TEXT NOT NULL,                 -- JSON: resolved rhone.toml sent by the client
    source TEXT NOT NULL,                 -- JSON: git commit, dirty flag
    evidence TEXT NOT NULL,               -- JSON: gate results
    approval TEXT,                        -- JSON: who approved what, when
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
CREATE INDEX deployments_app ON deployments (app_id, id);

CREATE TABLE allocations (
    id TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES deployments(id),
    environment_id TEXT NOT NULL REFERENCES environments(id),
    artifact_digest TEXT NOT NULL,
    region_id TEXT NOT NULL REFERENCES regions(id),
    cell_id TEXT NOT NULL REFERENCES cells(id),
    state TEXT NOT NULL CHECK (state IN ('planned', 'pulling', 'starting', 'ready', 'draining', 'stopped', 'failed')),
    version INTEGER NOT NULL,
    pid INTEGER,
    port INTEGER,
    health TEXT,                          -- JSON: last probe result
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
CREATE INDEX allocations_deployment ON allocations (deployment_id, id);
CREATE INDEX allocations_state ON allocations (state);
