"""RBAC: every role × every mutating endpoint, plus non-members, role grants and audit reads.

Expectations derive from `access.MUTATIONS` (and the handler rules `_cases.CASES` names). Every cell checks the
status and error code, that an audit record with the response's request id says allowed/denied, and — for a
denial — that no row of any state table changed.
"""

from __future__ import annotations

import pytest

from rhone_local.domain import access
from rhone_local.domain.access import Principal
from rhone_local.domain.errors import DomainError

from ._cases import CASES, NOT_RBAC_ROUTES, UNROUTED, Case, Target
from .conftest import BASE, Actor, LocalEnv

ROLES = access.ROLES
CASE_IDS = [case.id for case in CASES]


def _send(local: LocalEnv, actor: Actor, case: Case):
    call = case.prepare(local, actor, Target())
    before, audit_before, snapshot = local.counts(), local.store.count("audit"), local.snapshot()
    response = local.client.request(call.method, call.path, json=call.json, headers=actor.headers)
    return call, response, before, audit_before, snapshot


def _assert_denied(local, actor, case, response, audit_before, snapshot, code: str) -> None:
    assert response.status_code == 403, response.text
    request_id = response.headers["X-Request-Id"]
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == request_id
    assert local.snapshot() == snapshot, "a denied mutation changed state"
    assert local.store.count("audit") == audit_before + 1
    records = local.audit_for(request_id)
    assert [(r["action"], r["result"], r["actor_kind"], r["actor_id"], r["detail"]) for r in records] == [
        (case.action, "denied", actor.kind, actor.id, {"code": code})
    ]


# -- the table is covered --------------------------------------------------------------------------------------------
def test_every_mutation_has_a_case() -> None:
    """A mutation added to access.MUTATIONS fails here until it has a case (or is declared unrouted)."""
    tested = {case.action for case in CASES}
    assert set(access.MUTATIONS) >= UNROUTED, "UNROUTED names an action the permission table does not have"
    assert tested.isdisjoint(UNROUTED)
    missing = set(access.MUTATIONS) - tested - UNROUTED
    assert not missing, f"mutations without an RBAC case in tests/local/_cases.py: {sorted(missing)}"
    assert tested | UNROUTED == set(access.MUTATIONS)


def test_every_mutating_route_has_a_case(local: LocalEnv) -> None:
    """A new POST/PUT/PATCH/DELETE route fails here until it has a case — including one for an UNROUTED action."""
    paths = local.client.app.openapi()["paths"]  # every route the app serves (the openapi.json it publishes)
    routes = {
        (method.upper(), path)
        for path, operations in paths.items()
        for method in operations
        if method.upper() in ("POST", "PUT", "PATCH", "DELETE")
    } - NOT_RBAC_ROUTES
    covered = {case.route for case in CASES}
    assert not routes - covered, (
        f"mutating routes without an RBAC case in tests/local/_cases.py: {sorted(routes - covered)}"
    )
    assert routes == covered


@pytest.mark.parametrize("action", sorted(access.MUTATIONS))
def test_permission_table_at_the_domain_level(action: str) -> None:
    """Every mutation, including the ones no route performs yet (UNROUTED), through `access.require`."""
    user = Principal("user", "usr_x", "x", "tok_x")
    for role in ROLES:
        if access.RANK[role] >= access.RANK[access.MUTATIONS[action]]:
            access.require(user, action, role)
        else:
            with pytest.raises(DomainError) as denied:
                access.require(user, action, role)
            assert (denied.value.status, denied.value.code) == (403, "insufficient_role")
    with pytest.raises(DomainError) as outsider:
        access.require(user, action, None)
    assert (outsider.value.status, outsider.value.code) == (403, "not_a_member")
    runtime = Principal("runtime", "rid_x", "runtime:app_x", "tok_y", "app_x", "ws_x")
    with pytest.raises(DomainError) as forbidden:
        access.require(runtime, action, None, app_id="app_x")
    assert (forbidden.value.status, forbidden.value.code) == (403, "runtime_identity_forbidden")


# -- the matrix --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(local: LocalEnv, role: str, case: Case) -> None:
    actor = local.make_user(role)
    call, response, before, audit_before, snapshot = _send(local, actor, case)
    if not case.allows(role):
        _assert_denied(local, actor, case, response, audit_before, snapshot, "insufficient_role")
        return
    assert response.status_code == case.success, response.text
    request_id = response.headers["X-Request-Id"]
    expected = dict(before)
    for table, delta in case.delta.items():
        expected[table] += delta
    assert local.counts() == expected
    assert local.store.count("audit") == audit_before + 1
    records = local.audit_for(request_id)
    assert [(r["action"], r["result"], r["actor_kind"], r["actor_id"]) for r in records] == [
        (case.action, "allowed", "user", actor.id)
    ]
    if case.action == "token.revoke":
        token_id = call.path.rsplit("/", 1)[1]
        assert response.json()["revoked_at"]
        assert local.store.one("SELECT revoked_at FROM tokens WHERE id = ?", token_id)["revoked_at"]


def test_matrix_expectations_match_the_documented_roles() -> None:
    """The derived expectations, spelled out: a change to the table shows up here as a readable diff."""
    allowed = {case.id: [role for role in ROLES if case.allows(role)] for case in CASES}
    assert allowed == {
        "member-invite": ["admin", "owner"],
        "token-create-self": ["viewer", "developer", "admin", "owner"],
        "token-create-other": ["admin", "owner"],
        "token-revoke-self": ["viewer", "developer", "admin", "owner"],
        "token-revoke-other": ["admin", "owner"],
        "project-create": ["admin", "owner"],
        "app-create": ["developer", "admin", "owner"],
        "environment-create": ["developer", "admin", "owner"],
        "runtime-identity-create": ["admin", "owner"],
        "deployment-create": ["developer", "admin", "owner"],
        "deployment-approve": ["developer", "admin", "owner"],
        "deployment-promote": ["developer", "admin", "owner"],
        "deployment-promote-approve": ["admin", "owner"],
        "route-rollback": ["developer", "admin", "owner"],
        "environment-freeze": ["developer", "admin", "owner"],
        "environment-unfreeze": ["admin", "owner"],
        "environment-policy": ["admin", "owner"],
        "binding-create": ["admin", "owner"],
        "binding-remove": ["admin", "owner"],
        "services-update": ["admin", "owner"],
        "app-scale": ["developer", "admin", "owner"],
        "region-enable": ["admin", "owner"],
    }


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_non_member_is_refused_every_mutation(local: LocalEnv, case: Case) -> None:
    outsider = local.make_outsider()
    _call, response, _before, audit_before, snapshot = _send(local, outsider, case)
    _assert_denied(local, outsider, case, response, audit_before, snapshot, "not_a_member")


def test_non_member_cannot_read_the_workspace(local: LocalEnv) -> None:
    outsider = local.make_outsider()
    for path in (BASE, f"{BASE}/members", f"{BASE}/projects", f"{BASE}/operations", f"{BASE}/audit"):
        response = local.client.get(path, headers=outsider.headers)
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "not_a_member", path
    listed = local.client.get("/v1/workspaces", headers=outsider.headers)
    assert listed.status_code == 200
    assert listed.json()["items"] == []


# -- granting roles ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("granted", ROLES)
@pytest.mark.parametrize("inviter", ROLES)
def test_invite_grant_matrix(local: LocalEnv, inviter: str, granted: str) -> None:
    actor = local.make_user(inviter)
    snapshot, audit_before = local.snapshot(), local.store.count("audit")
    response = local.client.post(
        f"{BASE}/members", json={"email": f"{local.name('g')}@example.test", "role": granted}, headers=actor.headers
    )
    request_id = response.headers["X-Request-Id"]
    [record] = local.audit_for(request_id)
    if access.RANK[inviter] < access.RANK[access.MUTATIONS["member.invite"]]:
        code = "insufficient_role"
    elif not access.may_grant(inviter, granted):
        code = "cannot_grant_role"
    else:
        assert response.status_code == 201, response.text
        assert response.json()["role"] == granted
        assert local.store.role_of(local.workspace_id, response.json()["user_id"]) == granted
        assert (record["result"], record["actor_id"]) == ("allowed", actor.id)
        return
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == code
    assert local.snapshot() == snapshot
    assert local.store.count("audit") == audit_before + 1
    assert (record["action"], record["result"], record["detail"]) == ("member.invite", "denied", {"code": code})


@pytest.mark.parametrize("inviter", ROLES)
def test_only_an_owner_can_grant_owner(local: LocalEnv, inviter: str) -> None:
    actor = local.make_user(inviter)
    owners_before = local.store.count("members")
    response = local.client.post(
        f"{BASE}/members", json={"email": "new-owner@example.test", "role": "owner"}, headers=actor.headers
    )
    if inviter == "owner":
        assert response.status_code == 201, response.text
        assert response.json()["role"] == "owner"
    else:
        assert response.status_code == 403
        expected = "cannot_grant_role" if inviter == "admin" else "insufficient_role"
        assert response.json()["error"]["code"] == expected
        assert local.store.count("members") == owners_before
        assert local.store.one("SELECT id FROM users WHERE email = 'new-owner@example.test'") is None


def test_admin_cannot_mint_a_token_for_an_owner(local: LocalEnv) -> None:
    """A token for another member acts as that member: an admin issuing one for an owner would become an owner
    (and could then grant `owner`), which `may_grant` exists to prevent."""
    admin = local.make_user("admin")
    snapshot = local.snapshot()
    response = local.client.post(
        f"{BASE}/tokens", json={"name": "escalate", "user_id": local.owner.id}, headers=admin.headers
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "insufficient_role"
    assert local.snapshot() == snapshot
    [record] = local.audit_for(response.headers["X-Request-Id"])
    assert (record["action"], record["result"]) == ("token.create", "denied")
    # An admin still issues tokens for members it could have granted its own role to.
    peer = local.make_user("admin")
    for_peer = local.client.post(f"{BASE}/tokens", json={"name": "ok", "user_id": peer.id}, headers=admin.headers)
    assert for_peer.status_code == 201, for_peer.text


# -- reading the audit log ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_audit_read_needs_admin(local: LocalEnv, role: str) -> None:
    actor = local.make_user(role)
    response = local.client.get(f"{BASE}/audit", headers=actor.headers)
    if role in ("admin", "owner"):
        assert response.status_code == 200, response.text
        assert response.json()["items"], "the invites and token grants are audited"
    else:
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "insufficient_role"
    assert (role in ("admin", "owner")) == (access.RANK[role] >= access.RANK[access.READS["audit.read"]])
