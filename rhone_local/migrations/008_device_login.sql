-- Device-code login (RFC 8628) and refreshable, expiring tokens.
--
-- A device code is shown to nobody: the CLI keeps it and polls with it. The user code is what a person types or
-- confirms on the approval page. Tokens issued through it expire (tokens.expires_at); a refresh token, used once,
-- gets a new access token and a new refresh token.
CREATE TABLE device_codes (
    id TEXT PRIMARY KEY,
    device_code_hash TEXT NOT NULL UNIQUE,
    user_code TEXT NOT NULL UNIQUE,
    client_name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'issued')),
    user_id TEXT REFERENCES users(id),       -- who approved or denied it
    workspace_id TEXT,                       -- the approver's token's workspace and role: what the login may do
    role TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    last_poll_at REAL,                       -- unix seconds: polling faster than the interval is slow_down
    decided_at TEXT
) STRICT;

CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    access_token_id TEXT NOT NULL REFERENCES tokens(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT
) STRICT;
