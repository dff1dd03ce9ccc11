-- Version 5: tokens carry their authority.

-- A user's token is bound to the membership it was minted for: its workspace, and the role it may exercise there (at
-- most the member's current role). Used against another workspace it is a non-member's token. Tokens minted before
-- version 5 are bound to the workspace of their creation: the user's first membership, with that membership's role.
ALTER TABLE tokens ADD COLUMN workspace_id TEXT REFERENCES workspaces(id);
ALTER TABLE tokens ADD COLUMN role TEXT CHECK (role IS NULL OR role IN ('owner', 'admin', 'developer', 'viewer'));
UPDATE tokens SET
    workspace_id = (SELECT m.workspace_id FROM members m WHERE m.user_id = tokens.subject_id
                    ORDER BY m.created_at, m.workspace_id LIMIT 1),
    role = (SELECT m.role FROM members m WHERE m.user_id = tokens.subject_id
            ORDER BY m.created_at, m.workspace_id LIMIT 1)
WHERE subject_kind = 'user';
CREATE INDEX tokens_workspace_subject ON tokens (workspace_id, subject_id);

-- A runtime token handed to an allocation works only while that allocation is live (planned to ready): from
-- `draining` on, authentication refuses it. Tokens an admin minted for a runtime identity are bound to no allocation.
ALTER TABLE tokens ADD COLUMN allocation_id TEXT REFERENCES allocations(id);
-- Tokens handed to allocations before version 5 name only their deployment: each is bound to that deployment's newest
-- live allocation (it dies when that one leaves `ready`), and revoked when the deployment has none left.
UPDATE tokens SET allocation_id = (
    SELECT a.id FROM allocations a WHERE a.deployment_id = substr(tokens.name, 15)
    AND a.state IN ('planned', 'pulling', 'starting', 'ready') ORDER BY a.id DESC LIMIT 1)
WHERE subject_kind = 'runtime' AND name LIKE 'allocation of dep\_%' ESCAPE '\' AND revoked_at IS NULL;
UPDATE tokens SET revoked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE subject_kind = 'runtime' AND name LIKE 'allocation of dep\_%' ESCAPE '\' AND revoked_at IS NULL
  AND allocation_id IS NULL;

-- The database migrations applied in each environment: every migration file a route owner's artifact carried when
-- it became the owner (by name inside its migrations directory). The set only grows — moving the route back does not
-- un-apply a migration — so the deploy gate and rollbacks compare against it rather than against what a candidate
-- chooses to declare. Environments routed before version 5 are filled in at the first start of this version.
CREATE TABLE environment_migrations (
    environment_id TEXT NOT NULL REFERENCES environments(id),
    name TEXT NOT NULL,                   -- the file's path inside its directory, e.g. 0002_names.sql
    directory TEXT NOT NULL,              -- the migrations directory it was found in
    deployment_id TEXT NOT NULL REFERENCES deployments(id),  -- the first route owner that carried it
    operation_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (environment_id, name)
) STRICT;
