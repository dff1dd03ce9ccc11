"""A user's token acts only in the workspace it was minted for, with the role it was minted with.

The attack (issue 12, item 5): an invite into a second workspace reuses the user row, and tokens were bound to the
user, so a token a workspace's admin issued for a member acted as that user everywhere — in a workspace where the
same user is an admin or an owner too. Tokens now carry their workspace and role: elsewhere a token is refused exactly
as a non-member's is.
"""

from __future__ import annotations

from pathlib import Path

from rhone_local.domain.access import hash_token
from rhone_local.domain.ids import new_id
from rhone_local.store import SCHEMA_VERSION, Store, now_iso

from .conftest import BASE, Actor, LocalEnv, auth, database_at_version

EMAIL = "dev@example.test"


def second_workspace(local: LocalEnv, name: str = "other") -> Actor:
    """A workspace with its own owner (there is no API to create workspaces): returns that owner, token bound to it."""
    workspace_id, user_id, secret = new_id("workspace"), new_id("user"), f"rht_{name}_owner"
    with local.store.write() as c:
        c.execute("INSERT INTO workspaces VALUES (?, ?, ?)", (workspace_id, name, now_iso()))
        c.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (user_id, name, f"{name}@example.test", now_iso()))
        c.execute("INSERT INTO members VALUES (?, ?, 'owner', ?)", (workspace_id, user_id, now_iso()))
        token = local.store.create_token(
            c,
            subject_kind="user",
            subject_id=user_id,
            name="owner",
            secret_hash=hash_token(secret),
            workspace_id=workspace_id,
            role="owner",
        )
    return Actor(id=user_id, token=secret, role="owner", token_id=token["id"])


def invite_and_issue(local: LocalEnv, workspace: str, by: Actor, role: str) -> dict:
    """`by` invites EMAIL into `workspace` with `role`, then issues a token for that member there."""
    invited = local.client.post(
        f"/v1/workspaces/{workspace}/members", json={"email": EMAIL, "role": role}, headers=by.headers
    )
    assert invited.status_code == 201, invited.text
    issued = local.client.post(
        f"/v1/workspaces/{workspace}/tokens",
        json={"name": f"{role} in {workspace}", "user_id": invited.json()["user_id"]},
        headers=by.headers,
    )
    assert issued.status_code == 201, issued.text
    return {"user_id": invited.json()["user_id"], **issued.json()}


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_a_token_acts_only_in_its_own_workspace_with_its_own_role(local: LocalEnv) -> None:
    other_owner = second_workspace(local)
    outsider = local.make_outsider()
    admin_here = invite_and_issue(local, "local", local.owner, "admin")
    viewer_there = invite_and_issue(local, "other", other_owner, "viewer")
    assert admin_here["user_id"] == viewer_there["user_id"]  # the invite reused the user row
    assert (admin_here["workspace_id"], admin_here["role"]) == (local.workspace_id, "admin")
    assert viewer_there["role"] == "viewer" and viewer_there["workspace_id"] != local.workspace_id
    here, there = auth(admin_here["secret"]), auth(viewer_there["secret"])

    # Each token sees its own workspace, with its own role, and only that one.
    assert local.client.get(f"{BASE}", headers=here).json()["role"] == "admin"
    assert local.client.get("/v1/workspaces/other", headers=there).json()["role"] == "viewer"
    assert [(w["name"], w["role"]) for w in local.client.get("/v1/whoami", headers=here).json()["workspaces"]] == [
        ("local", "admin")
    ]
    assert [(w["name"], w["role"]) for w in local.client.get("/v1/workspaces", headers=there).json()["items"]] == [
        ("other", "viewer")
    ]

    # The attack: the token the other workspace's owner issued acts here exactly as a non-member's does.
    before, audit_before = local.snapshot(), local.store.count("audit")
    for method, path, body in (
        ("GET", BASE, None),
        ("GET", f"{BASE}/members", None),
        ("POST", f"{BASE}/members", {"email": "mallory@example.test", "role": "admin"}),
        ("POST", f"{BASE}/projects", {"name": "stolen"}),
        ("POST", f"{BASE}/tokens", {"name": "escalate"}),
    ):
        as_there = local.client.request(method, path, json=body, headers=there)
        as_outsider = local.client.request(method, path, json=body, headers=outsider.headers)
        assert error_of(as_there) == error_of(as_outsider) == (403, "not_a_member"), (path, as_there.text)
    assert local.snapshot() == before  # nothing created, no token minted
    denied = [r for r in local.audit_rows() if r["result"] == "denied"]
    assert [(r["actor_id"], r["action"], r["detail"]) for r in denied[-6:]] == [
        (actor, action, {"code": "not_a_member"})
        for action in ("member.invite", "project.create", "token.create")
        for actor in (admin_here["user_id"], outsider.id)
    ]
    assert local.store.count("audit") == audit_before + 6
    # And the other way round: the admin token of this workspace is a non-member's there.
    assert error_of(local.client.get("/v1/workspaces/other/members", headers=here)) == (403, "not_a_member")

    # Within their own workspaces, each acts with its own role: admin here, viewer there.
    assert local.client.post(f"{BASE}/projects", json={"name": "mine"}, headers=here).status_code == 202
    assert error_of(local.client.post("/v1/workspaces/other/projects", json={"name": "mine"}, headers=there)) == (
        403,
        "insufficient_role",
    )

    # An operation of this workspace is not readable with the other workspace's token.
    op = local.client.get(f"{BASE}/operations", headers=local.owner.headers).json()["items"][-1]
    assert local.client.get(f"/v1/operations/{op['id']}", headers=here).status_code == 200
    assert error_of(local.client.get(f"/v1/operations/{op['id']}", headers=there)) == (403, "not_a_member")

    # Token listings and revocations stay within the token's workspace.
    listed = local.client.get("/v1/workspaces/other/tokens", headers=there).json()["items"]
    assert [t["id"] for t in listed] == [viewer_there["id"]]
    before = local.snapshot()
    assert error_of(local.client.delete(f"/v1/workspaces/other/tokens/{admin_here['id']}", headers=there)) == (
        404,
        "not_found",
    )
    assert error_of(local.client.delete(f"{BASE}/tokens/{admin_here['id']}", headers=there)) == (403, "not_a_member")
    assert local.snapshot() == before


def test_a_token_never_exceeds_the_role_it_was_minted_with(local: LocalEnv) -> None:
    """A viewer's token stays a viewer's after a promotion; a demotion takes effect on existing tokens at once."""
    viewer = local.make_user("viewer")
    with local.store.write() as c:  # there is no API to change a role yet
        c.execute("UPDATE members SET role = 'admin' WHERE user_id = ?", (viewer.id,))
    assert local.client.get(BASE, headers=viewer.headers).json()["role"] == "viewer"
    before = local.snapshot()
    refused = local.client.post(f"{BASE}/projects", json={"name": "p"}, headers=viewer.headers)
    assert error_of(refused) == (403, "insufficient_role")
    assert local.snapshot() == before
    # The capped token cannot mint an uncapped one either: a token it creates carries the role it acts with.
    minted = local.client.post(f"{BASE}/tokens", json={"name": "wider"}, headers=viewer.headers)
    assert minted.status_code == 201 and minted.json()["role"] == "viewer"
    assert local.store.count("tokens") == len(before["tokens"]) + 1
    admin = local.make_user("admin")
    with local.store.write() as c:
        c.execute("UPDATE members SET role = 'viewer' WHERE user_id = ?", (admin.id,))
    assert local.client.get(BASE, headers=admin.headers).json()["role"] == "viewer"
    assert error_of(local.client.post(f"{BASE}/projects", json={"name": "p"}, headers=admin.headers)) == (
        403,
        "insufficient_role",
    )


def test_tokens_from_before_version_5_stay_bound_to_their_first_workspace(tmp_path: Path) -> None:
    """The migration binds existing user tokens to the workspace of their creation (the user's first membership)."""
    path = tmp_path / "rhone.db"
    db = database_at_version(path, 4)
    rows = (
        "INSERT INTO workspaces VALUES ('ws_first', 'first', '2026-01-01T00:00:00.000Z');"
        "INSERT INTO workspaces VALUES ('ws_second', 'second', '2026-01-02T00:00:00.000Z');"
        "INSERT INTO users VALUES ('usr_a', 'a', 'a@example.test', '2026-01-01T00:00:00.000Z');"
        "INSERT INTO members VALUES ('ws_second', 'usr_a', 'owner', '2026-01-02T00:00:00.000Z');"
        "INSERT INTO members VALUES ('ws_first', 'usr_a', 'developer', '2026-01-01T00:00:00.000Z');"
        f"INSERT INTO tokens VALUES ('tok_a', '{hash_token('rht_old')}', 'user', 'usr_a', 'old', "
        "'2026-01-01T00:00:00.000Z', NULL, NULL);"
    )
    db.executescript(rows)
    db.close()
    store = Store(path)
    try:
        assert store.one("PRAGMA user_version")["user_version"] == SCHEMA_VERSION  # migrated through 5 and on
        token = store.one("SELECT workspace_id, role FROM tokens WHERE id = 'tok_a'")
        assert token == {"workspace_id": "ws_first", "role": "developer"}
        principal = store.principal_for_token(hash_token("rht_old"))
        assert principal is not None and (principal.workspace_id, principal.role) == ("ws_first", "developer")
    finally:
        store.close()
