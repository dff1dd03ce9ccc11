"""Who may do what: roles, the permission table, and the runtime-identity rule.

Users hold one role per workspace: owner > admin > developer > viewer. Runtime identities (tokens handed to an
app's allocations) may read facts about their own app and nothing else, and may never mutate tenancy — the
classic trap of letting app code change its own platform.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from rhone_local.domain.errors import DomainError, forbidden

ROLES = ("viewer", "developer", "admin", "owner")
RANK = {role: index for index, role in enumerate(ROLES)}

# action -> the least role allowed to perform it. Every mutation is listed (the RBAC test enumerates this table).
MUTATIONS: dict[str, str] = {
    "member.invite": "admin",
    "token.create": "viewer",  # a member may create tokens for themselves
    "token.revoke": "viewer",  # their own; admins may revoke anyone's (checked by the handler)
    "project.create": "admin",
    "app.create": "developer",
    "environment.create": "developer",
    "runtime_identity.create": "admin",
    "deployment.create": "developer",
    "deployment.approve": "developer",
    "deployment.promote": "developer",  # an --approve on top needs owner or admin (checked by the handler)
    "route.rollback": "developer",
    "environment.freeze": "developer",  # anyone on call may stop promotions during an incident
    "environment.unfreeze": "admin",
    "environment.policy": "admin",  # who must approve promotions is decided by those who may approve them
    "binding.create": "admin",  # it carries secrets and decides which data an environment writes to
    "binding.remove": "admin",
    "services.update": "admin",
    "app.scale": "developer",  # gated by the runtime services, not by rank
    "region.enable": "admin",
    "config.update": "developer",  # like a deploy: settings reach only the environment's own allocations
    "local.gc": "owner",  # retention removes data of every app on the machine
}
READS: dict[str, str] = {
    "workspace.read": "viewer",
    "member.read": "viewer",
    "audit.read": "admin",
    "project.read": "viewer",
    "app.read": "viewer",
    "environment.read": "viewer",
    "operation.read": "viewer",
    "token.read": "viewer",
    "deployment.read": "viewer",
    "route.read": "viewer",
    "logs.read": "developer",  # an app's own output may hold what viewers should not see
}
# What a runtime identity may read — only facts about its own app (checked against the target by the handler).
RUNTIME_READS = frozenset({"app.read", "environment.read", "operation.read", "deployment.read"})


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" | "runtime"
    id: str  # usr_… or rid_…
    name: str
    token_id: str
    app_id: str | None = None  # runtime identities belong to one app
    workspace_id: str | None = None  # the workspace the token acts in (a runtime identity's, or a user token's)
    role: str | None = None  # the most a user token may do there, whatever role its user holds


def role_in_workspace(principal: Principal, workspace_id: str, member_role: str | None) -> str | None:
    """The role `principal` acts with in a workspace where its user holds `member_role` (None: not a member).

    A user token is bound to the membership it was minted for: elsewhere it is a non-member's token, and there it
    acts with the lower of the role it was minted with and the member's role now (a demotion takes effect at once;
    a promotion does not widen old tokens)."""
    if principal.kind != "user" or member_role is None or principal.workspace_id != workspace_id:
        return None
    if principal.role is None:
        return member_role
    return min(member_role, principal.role, key=RANK.__getitem__)


def require(principal: Principal, action: str, role: str | None, *, app_id: str | None = None) -> None:
    """Raise unless `principal` (holding `role` in the workspace, or None) may perform `action`."""
    if principal.kind == "runtime":
        if action in RUNTIME_READS and app_id is not None and app_id == principal.app_id:
            return
        if action in MUTATIONS or action == "workspace.create":
            raise forbidden(
                "runtime_identity_forbidden",
                f"a runtime identity cannot perform {action}: tenancy is platform-owned",
                action=action,
            )
        raise forbidden("forbidden", f"a runtime identity cannot perform {action}", action=action)
    needed = MUTATIONS.get(action) or READS.get(action)
    if needed is None:
        raise DomainError("internal_error", f"unknown action {action}", 500)
    if role is None:
        # Not a member: indistinguishable from "no such workspace" would leak less, but a clear 403 helps more.
        raise forbidden("not_a_member", "you are not a member of this workspace", action=action)
    if RANK[role] < RANK[needed]:
        raise forbidden(
            "insufficient_role",
            f"{action} needs role {needed} or higher; you are {role}",
            action=action,
            needed=needed,
            role=role,
        )


def may_grant(granter_role: str, role: str) -> bool:
    """Admins grant up to admin; only owners create owners."""
    return RANK[role] <= RANK[granter_role] and (role != "owner" or granter_role == "owner")


# The bearer secrets Rhone Local issues: a prefix naming the kind (so a leaked one is recognizable and a secret
# scanner can find it), then 32 random bytes, URL-safe.
API_TOKEN, REFRESH_TOKEN, DEVICE_CODE, EDGE_TOKEN = "rht_", "rhr_", "rhd_", "rhe_"


def new_secret(prefix: str = API_TOKEN) -> str:
    """A new bearer secret of the kind `prefix` names (only its hash is ever stored)."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(secret: str) -> str:
    """Tokens are stored only as their sha256: a leaked database holds no usable credential."""
    return hashlib.sha256(secret.encode()).hexdigest()
