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
