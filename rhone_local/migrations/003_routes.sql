-- Version 3: route ownership. A route key (`<app>--<env>`) is owned by one deployment at a strictly increasing
-- epoch; every change is an event with a sequence number, committed in the same transaction as the change.
CREATE TABLE route_owners (
    app_id TEXT NOT NULL REFERENCES apps(id),
    environment_id TEXT NOT NULL REFERENCES environments(id),
    route_key TEXT NOT NULL UNIQUE,
    deployment_id TEXT NOT NULL REFERENCES deployments(id),
    artifact_digest TEXT NOT NULL,
    epoch INTEGER NOT NULL CHECK (epoch > 0),
    operation_id TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (app_id, environment_id)
) STRICT;

CREATE TABLE route_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    route_key TEXT NOT NULL,
    app_id TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    deployment_id TEXT NOT NULL,
    artifact_digest TEXT NOT NULL,
    previous_deployment_id TEXT,
    operation_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('promote', 'rollback')),
    created_at TEXT NOT NULL,
    UNIQUE (route_key, epoch)
) STRICT;
