"""API tokens (users' and runtime identities'), device login codes and refresh tokens.

Guarantees: a token is valid exactly while its row says so at the moment it is read (revocation, expiry and an
allocation leaving `ready` take effect when they commit); device codes move pending → approved | denied → issued by
single-statement compare-and-swap, so each is decided once and issues its tokens once.
"""

from __future__ import annotations

from typing import Any

from rhone_local.domain.access import Principal
from rhone_local.domain.allocations import TOKEN_LIVE_STATES
from rhone_local.domain.ids import new_id
from rhone_local.store.core import StoreCore, Tx, marks, now_iso, row_dict


class TokenStore(StoreCore):
    def principal_for_token(self, token_hash: str) -> Principal | None:
        """Who a token acts for, or None when it is unknown, revoked, expired, or bound to an allocation that is no
        longer live. An allocation token is checked against its allocation's state here, in the same read, rather
        than revoked when the allocation moves: every move (drain, stop, failure, a crash found at start-up) takes
        effect for its token the moment it commits, whichever code path made it, with nothing to forget or race."""
        token = self.one(
            "SELECT t.* FROM tokens t LEFT JOIN allocations a ON a.id = t.allocation_id "
            "WHERE t.secret_hash = ? AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?) "
            f"AND (t.allocation_id IS NULL OR a.state IN ({marks(TOKEN_LIVE_STATES)}))",
            token_hash,
            now_iso(),
            *TOKEN_LIVE_STATES,
        )
        if token is None:
            return None
        if token["subject_kind"] == "user":
            user = self.one("SELECT * FROM users WHERE id = ?", token["subject_id"])
            if user is None:
                return None
            # The token acts in the workspace it was minted for, with at most the role it was minted with.
            return Principal(
                "user", user["id"], user["name"], token["id"], workspace_id=token["workspace_id"], role=token["role"]
            )
        identity = self.one("SELECT * FROM runtime_identities WHERE id = ?", token["subject_id"])
        if identity is None:
            return None
        return Principal(
            "runtime",
            identity["id"],
            f"runtime:{identity['app_id']}",
            token["id"],
            identity["app_id"],
            identity["workspace_id"],
        )

    def token_expired(self, token_hash: str) -> bool:
        """Whether the token exists, unrevoked, and only its expiry makes it invalid (the client may refresh)."""
        row = self.one(
            "SELECT 1 AS x FROM tokens WHERE secret_hash = ? AND revoked_at IS NULL AND expires_at <= ?",
            token_hash,
            now_iso(),
        )
        return row is not None

    def create_device_code(
        self, *, device_code_hash: str, user_code: str, client_name: str, expires_at: str
    ) -> dict[str, Any]:
        """A pending device login code, committed at once (its hash and user code are new)."""
        row = {
            "id": new_id("device_code"),
            "device_code_hash": device_code_hash,
            "user_code": user_code,
            "client_name": client_name,
            "created_at": now_iso(),
            "expires_at": expires_at,
        }
        with self.write() as c:
            c.execute(
                "INSERT INTO device_codes (id, device_code_hash, user_code, client_name, state, created_at, "
                "expires_at) VALUES (:id, :device_code_hash, :user_code, :client_name, 'pending', :created_at, "
                ":expires_at)",
                row,
            )
        return {**row, "state": "pending"}

    def device_code(self, *, device_code_hash: str | None = None, user_code: str | None = None) -> dict | None:
        """A device code by the hash of its device code or by its user code; None if unknown."""
        if device_code_hash is not None:
            return self.one("SELECT * FROM device_codes WHERE device_code_hash = ?", device_code_hash)
        return self.one("SELECT * FROM device_codes WHERE user_code = ?", user_code)

    def note_device_poll(self, code_id: str, at: float, interval: float) -> bool:
        """Record a poll; False when it came sooner than `interval` after the previous one (slow_down)."""
        with self.write() as c:
            moved = c.execute(
                "UPDATE device_codes SET last_poll_at = ? WHERE id = ? AND (last_poll_at IS NULL OR last_poll_at <= ?)",
                (at, code_id, at - interval),
            ).rowcount
            if not moved:
                c.execute("UPDATE device_codes SET last_poll_at = ? WHERE id = ?", (at, code_id))
        return moved == 1

    def decide_device_code(
        self, code_id: str, state: str, *, user_id: str, workspace_id: str | None, role: str | None
    ) -> bool:
        """pending → approved | denied, once, while it has not expired; an approval grants what the approver's own
        token may do (its workspace and role), never more."""
        with self.write() as c:
            return (
                c.execute(
                    "UPDATE device_codes SET state = ?, user_id = ?, workspace_id = ?, role = ?, decided_at = ? "
                    "WHERE id = ? AND state = 'pending' AND expires_at > ?",
                    (state, user_id, workspace_id, role, now_iso(), code_id, now_iso()),
                ).rowcount
                == 1
            )

    def issue_device_tokens(
        self, code: dict[str, Any], *, access_hash: str, refresh_hash: str, access_expires: str, refresh_expires: str
    ) -> dict[str, Any] | None:
        """approved → issued, with its access and refresh tokens, in one transaction; None if it was issued already."""
        with self.write() as c:
            moved = c.execute(
                "UPDATE device_codes SET state = 'issued' WHERE id = ? AND state = 'approved'", (code["id"],)
            ).rowcount
            if moved != 1:
                return None
            name = f"device login: {code['client_name']}"
            hashes, expiries = (access_hash, refresh_hash), (access_expires, refresh_expires)
            scope = (code["workspace_id"], code["role"])
            return self._token_pair(c, code["user_id"], name, scope, hashes, expiries)

    def refresh(
        self, refresh_hash: str, *, access_hash: str, new_refresh_hash: str, access_expires: str, refresh_expires: str
    ) -> dict[str, Any] | None:
        """Use a refresh token once: the old access token is revoked and a new pair issued; None if the refresh token
        is unknown, used, expired, or its user's access token was revoked."""
        ts = now_iso()
        with self.write() as c:
            old = c.execute(
                "SELECT r.*, t.name, t.workspace_id, t.role FROM refresh_tokens r "
                "JOIN tokens t ON t.id = r.access_token_id "
                "WHERE r.secret_hash = ? AND r.used_at IS NULL AND r.expires_at > ? AND t.revoked_at IS NULL",
                (refresh_hash, ts),
            ).fetchone()
            if old is None:
                return None
            c.execute("UPDATE refresh_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL", (ts, old["id"]))
            c.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (ts, old["access_token_id"]))
            hashes, expiries = (access_hash, new_refresh_hash), (access_expires, refresh_expires)
            scope = (old["workspace_id"], old["role"])
            return self._token_pair(c, old["user_id"], old["name"], scope, hashes, expiries)

    def _token_pair(
        self,
        c: Tx,
        user_id: str,
        name: str,
        scope: tuple[str | None, str | None],
        hashes: tuple[str, str],
        expiries: tuple[str, str],
    ) -> dict[str, Any]:
        """An expiring access token bound to `scope` (workspace, role) and its refresh token (by their hashes and
        expiry times)."""
        (access_hash, refresh_hash), (access_expires, refresh_expires) = hashes, expiries
        token = self.create_token(
            c,
            subject_kind="user",
            subject_id=user_id,
            name=name,
            secret_hash=access_hash,
            expires_at=access_expires,
            workspace_id=scope[0],
            role=scope[1],
        )
        c.execute(
            "INSERT INTO refresh_tokens (id, secret_hash, access_token_id, user_id, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (new_id("refresh_token"), refresh_hash, token["id"], user_id, now_iso(), refresh_expires),
        )
        return token

    def token_in_workspace(self, token_id: str, workspace_id: str) -> dict[str, Any] | None:
        """The token, if it acts in the workspace: a user token bound to it, or a runtime identity's of this
        workspace."""
        return self.one(
            "SELECT t.* FROM tokens t WHERE t.id = ? AND ("
            "  (t.subject_kind = 'user' AND t.workspace_id = ?)"
            "  OR (t.subject_kind = 'runtime' AND EXISTS (SELECT 1 FROM runtime_identities r "
            "       WHERE r.id = t.subject_id AND r.workspace_id = ?)))",
            token_id,
            workspace_id,
            workspace_id,
        )

    def create_token(
        self,
        c: Tx,
        *,
        subject_kind: str,
        subject_id: str,
        name: str,
        secret_hash: str,
        expires_at: str | None = None,
        workspace_id: str | None = None,
        role: str | None = None,
        token_id: str | None = None,
        allocation_id: str | None = None,
    ) -> dict[str, Any]:
        """A user token is bound to `workspace_id` with at most `role` there (a token bound to no workspace acts in
        none); a runtime token acts for its identity, and only while `allocation_id` (when given) is live."""
        token = {
            "id": token_id or new_id("token"),
            "subject_kind": subject_kind,
            "subject_id": subject_id,
            "name": name,
            "created_at": now_iso(),
            "expires_at": expires_at,
            "workspace_id": workspace_id,
            "role": role,
            "allocation_id": allocation_id,
        }
        c.execute(
            "INSERT INTO tokens (id, secret_hash, subject_kind, subject_id, name, created_at, expires_at, "
            "workspace_id, role, allocation_id) VALUES (:id, :secret_hash, :subject_kind, :subject_id, :name, "
            ":created_at, :expires_at, :workspace_id, :role, :allocation_id)",
            {**token, "secret_hash": secret_hash},
        )
        return token

    def owner_tokens(self, c: Tx, workspace_id: str) -> list[str]:
        """Ids of the valid tokens that act as an owner in the workspace: bound to it, owner-capable, unrevoked,
        unexpired, and held by a member who is an owner there (read in the caller's transaction)."""
        rows = c.execute(
            "SELECT t.id FROM tokens t JOIN members m ON m.user_id = t.subject_id AND m.workspace_id = t.workspace_id "
            "WHERE t.workspace_id = ? AND t.subject_kind = 'user' AND m.role = 'owner' "
            "AND (t.role IS NULL OR t.role = 'owner') AND t.revoked_at IS NULL "
            "AND (t.expires_at IS NULL OR t.expires_at > ?) ORDER BY t.id",
            (workspace_id, now_iso()),
        ).fetchall()
        return [row["id"] for row in rows]

    def revoke_token(self, c: Tx, token_id: str) -> dict[str, Any]:
        """Revoke a token (a second revocation keeps the first time); returns its row."""
        c.execute("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (now_iso(), token_id))
        return row_dict(c.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone())  # type: ignore[return-value]

    def tokens_page(
        self, subject_id: str, workspace_id: str, *, limit: int, cursor: str | None
    ) -> list[dict[str, Any]]:
        """A subject's tokens that act in the workspace, oldest first."""
        filters = {"subject_id": subject_id, "workspace_id": workspace_id}
        return self._page("tokens", filters, limit=limit, cursor=cursor)
