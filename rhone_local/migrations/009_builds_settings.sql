-- Version 9: build reuse and environment settings.

-- A deployment's build that recorded an artifact, with what decided it besides its source (the build key: command,
-- output, include/exclude, build environment): a later deploy of the same source with the same key reuses it.
CREATE TABLE builds (
    deployment_id TEXT PRIMARY KEY REFERENCES deployments(id),
    app_id TEXT NOT NULL REFERENCES apps(id),
    source_digest TEXT NOT NULL,
    build_key TEXT NOT NULL,
    artifact_digest TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX builds_lookup ON builds (app_id, source_digest, build_key, deployment_id);

-- An environment's settings (`rhone env set`): handed to its allocations as environment variables. Secret values
-- are never returned by the API; they leave only as allocation environment variables.
CREATE TABLE environment_settings (
    environment_id TEXT NOT NULL REFERENCES environments(id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    secret INTEGER NOT NULL CHECK (secret IN (0, 1)),
    operation_id TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (environment_id, name)
) STRICT;
