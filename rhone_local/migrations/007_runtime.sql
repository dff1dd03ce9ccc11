-- Version 7: a runtime that keeps state — durable drains, process identity, healing.

-- The start time (field 22 of /proc/<pid>/stat) of the process the runner started: after a crash a pid may belong
-- to an unrelated process, which is never signalled (the start time differs).
ALTER TABLE allocations ADD COLUMN pid_start_time INTEGER;
-- When a draining allocation is cut (unix seconds): stored, so a restarted server still stops it in time.
ALTER TABLE allocations ADD COLUMN drain_deadline REAL;
-- When the runner sent SIGTERM to a stopping allocation (unix seconds); SIGKILL follows after a short grace.
ALTER TABLE allocations ADD COLUMN terminating_since REAL;
-- The state a stopping allocation ends in: stopped after a drain, failed after a crash or a failed liveness probe.
ALTER TABLE allocations ADD COLUMN end_state TEXT CHECK (end_state IN ('stopped', 'failed'));

-- Healing: how often the route owner's instances failed in a row, when the next replacement may start, and whether
-- the environment is crash-looping (shown with its last failed allocation).
CREATE TABLE environment_heal (
    environment_id TEXT PRIMARY KEY REFERENCES environments(id),
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    crash_loop INTEGER NOT NULL DEFAULT 0,
    last_allocation_id TEXT,
    last_error TEXT,
    updated_at TEXT NOT NULL
) STRICT;

-- Databases Rhone Local created for an environment (`rhone env bind ENV NAME --provision`): durable, outside every
-- artifact, one per environment and provider name. Unbinding keeps them (binding again with --provision finds the same
-- data); only `rhone env unbind --delete-data` removes one.
CREATE TABLE provisioned_data (
    environment_id TEXT NOT NULL REFERENCES environments(id),
    name TEXT NOT NULL,                   -- the provider's name in rhone.toml
    kind TEXT NOT NULL CHECK (kind IN ('sqlite', 'postgres')),
    location TEXT NOT NULL,               -- the SQLite file, or the PostgreSQL database name
    role TEXT,                            -- PostgreSQL: the database's own login role
    created_at TEXT NOT NULL,
    PRIMARY KEY (environment_id, name)
) STRICT;
