"""Access changes that are not operations: members, tokens, runtime identities and
environment controls (freeze, approval policy) (docs/architecture.md, "Layers").

Each function runs inside the caller's write transaction, decides its policy there and raises `DomainError`s; the
routers only authenticate, authorize, call one of these and render the row it returns.
"""

from __future__ import annotations

from typing import Any

from rhone_local.domain.access import hash_token
from rhone_local.domain.errors import conflict
from rhone_local.store import Store, Tx


def revoke_token(store: Store, c: Tx, workspace: dict[str, Any], token_id: str) -> dict[str, Any]:
    """Revoke `token_id`, unless it is the last valid token of the workspace's last owner."""
    # Read in the revocation's own write transaction: two owners revoking their last two tokens at once are
    # serialized here, so the second sees the first's revocation and is refused.
    if store.owner_tokens(c, workspace["id"]) == [token_id]:
        raise conflict(
            "last_owner_token",
            f"{token_id} is the last valid token of {workspace['name']}'s last owner: revoking it would lock "
            "every owner out of the workspace",
            hint=f"issue another owner token first (POST /v1/workspaces/{workspace['name']}/tokens), then revoke "
            "this one; a Rhone Local owner who lost every token recovers with `rhone local recover-owner`",
        )
    return store.revoke_token(c, token_id)


def create_runtime_identity(
    store: Store, c: Tx, workspace_id: str, app_id: str, app_ref: str, secret: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A runtime identity for the app and its token, whose secret is `secret` (stored only as a hash)."""
    identity = store.create_runtime_identity(c, workspace_id, app_id)
    token = store.create_token(
        c,
        subject_kind="runtime",
        subject_id=identity["id"],
        name=f"runtime {app_ref}",
        secret_hash=hash_token(secret),
        workspace_id=workspace_id,
    )
    return identity, token


def add_member(store: Store, c: Tx, workspace_id: str, email: str, name: str, role: str) -> dict[str, Any]:
    """Add `email` to the workspace with `role`; an existing member is a conflict, never a role change."""
    member = store.add_member(c, workspace_id, email, name, role)
    if not member.pop("added"):
        raise conflict("already_a_member", f"{email} is already a member ({member['role']})")
    return member


def issue_token(
    store: Store,
    c: Tx,
    workspace_id: str,
    subject: str,
    name: str | None,
    secret: str,
    *,
    expires_at: str | None,
    role: str | None,
) -> dict[str, Any]:
    """A user token for `subject` whose secret is `secret` (stored only as a hash)."""
    return store.create_token(
        c,
        subject_kind="user",
        subject_id=subject,
        name=name,
        secret_hash=hash_token(secret),
        expires_at=expires_at,
        workspace_id=workspace_id,
        role=role,
    )


def control_environment(store: Store, c: Tx, environment_id: str, **controls: bool) -> dict[str, Any]:
    """Set an environment's controls (`frozen`, `approval_required`); the caller authorized the change."""
    return store.update_environment(c, environment_id, **controls)
