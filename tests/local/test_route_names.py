"""Route keys (`<app>--<env>`, the hostnames on the one edge) belong to one app (issue 12, item 15).

The attack: two same-named apps in different projects promoted concurrently — one worker crashed on the UNIQUE
constraint (`internal_error`) and left a non-owner production allocation running. App names are now unique in a
workspace (refused at creation), and a route key another app holds fails its promotion cleanly at the
compare-and-swap, for pairs that exist anyway (created before this rule, or in another workspace on the same edge).
"""

from __future__ import annotations

import time

import pytest

from rhone_local.domain.ids import new_id

from ._stack import Stack, hello_config, hello_files
from .conftest import BASE, LocalEnv


def create_app_request(local: LocalEnv, project: str, name: str):
    return local.client.post(f"{BASE}/projects/{project}/apps", json={"name": name}, headers=local.owner.headers)


def test_an_app_name_is_unique_in_the_workspace(local: LocalEnv) -> None:
    shop, other = local.create_project("shop"), local.create_project("other")
    local.create_app(shop, "web")
    before = local.snapshot()
    refused = create_app_request(local, "other", "web")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["details"]["project"]) == ("app_name_taken", "shop")
    assert "web--production" in error["message"] and "another app name" in error["details"]["hint"]
    assert local.snapshot() == before
    [record] = local.audit_for(refused.headers["X-Request-Id"])
    assert (record["action"], record["result"], record["detail"]) == (
        "app.create",
        "failed",
        {"code": "app_name_taken"},
    )

    # Two creates of one new name in two projects, both accepted and both validated before either applies: the
    # apply stage, in its write transaction, lets exactly one insert.
    first, second = create_app_request(local, "shop", "api"), create_app_request(local, "other", "api")
    assert (first.status_code, second.status_code) == (202, 202)
    ops = []
    for worker in ("w1", "w2"):
        op = local.store.claim_operation(worker, 60, frozenset({"succeeded", "failed"}))
        assert op is not None
        for _ in range(2):  # queued -> validating -> applying
            op = local.workers.step(op, worker)
        assert op["state"] == "applying"
        ops.append((op, worker))
    done = [local.workers.step(op, worker) for op, worker in ops]
    assert [(d["state"], (d["error"] or {}).get("code")) for d in done] == [
        ("succeeded", None),
        ("failed", "name_taken"),
    ]
    assert [a["project_id"] for a in local.store.all("SELECT * FROM apps WHERE name = 'api'")] == [shop["id"]]
    assert other["id"] != shop["id"]


def legacy_app(local: LocalEnv, project: dict, name: str) -> dict:
    """A same-named app in another project, as a version without the rule could have left it."""
    app_id, workspace_id = new_id("app"), project["workspace_id"]
    with local.store.write() as c:
        local.store.insert_app(
            c, app_id=app_id, workspace_id=workspace_id, project_id=project["id"], name=name, operation_id="op_legacy"
        )
        for environment in ("preview", "production"):
            local.store.insert_environment(
                c,
                environment_id=new_id("environment"),
                workspace_id=workspace_id,
                app_id=app_id,
                name=environment,
                approval_required=False,
                frozen=False,
                operation_id="op_legacy",
            )
    app = local.store.app_by_id(app_id)
    assert app is not None
    return app


@pytest.mark.slow
def test_two_same_named_apps_promoted_concurrently(stack: Stack) -> None:
    local = stack.local
    other_project = local.create_project("legacy")
    twin = legacy_app(local, other_project, stack.app["name"])
    twin_path = f"{BASE}/projects/legacy/apps/{twin['name']}"
    mine = stack.preview_ready(hello_files("1.0.0"), hello_config())
    theirs_op = stack.deploy(hello_files("9.0.0"), hello_config(), app_path=twin_path)
    assert theirs_op["state"] == "preview_ready", theirs_op["error"]
    theirs = local.store.deployment(theirs_op["target_id"])
    assert theirs is not None

    # Both promotions are accepted (nothing serves web--production yet), then run concurrently by real workers.
    accepted = [
        local.client.post(
            f"/v1/deployments/{d['id']}/promote", json={"environment": "production"}, headers=local.owner.headers
        )
        for d in (mine, theirs)
    ]
    assert [r.status_code for r in accepted] == [202, 202], [r.text for r in accepted]
    op_ids = [r.json()["id"] for r in accepted]
    local.workers.start()
    try:
        deadline = time.monotonic() + 120
        while not all(local.store.operation(i)["state"] in ("healthy", "failed") for i in op_ids):
            assert time.monotonic() < deadline, [local.store.operation(i)["state"] for i in op_ids]
            time.sleep(0.05)
    finally:
        local.workers.stop()
    outcomes = {i: local.store.operation(i) for i in op_ids}
    assert sorted((o["state"], (o["error"] or {}).get("code")) for o in outcomes.values()) == [
        ("failed", "route_key_taken"),
        ("healthy", None),
    ]
    [winner] = [o for o in outcomes.values() if o["state"] == "healthy"]
    [loser] = [o for o in outcomes.values() if o["state"] == "failed"]
    assert loser["stages"][-1]["state"] == "failed" and "route_cas" in [s["state"] for s in loser["stages"]]

    # One owner, one event; the only live production allocation is the winner's (the loser's was released).
    owners = local.store.all("SELECT * FROM route_owners")
    assert [(o["route_key"], o["deployment_id"], o["epoch"]) for o in owners] == [
        ("web--production", winner["params"]["deployment_id"], 1)
    ]
    assert len(local.store.all("SELECT * FROM route_events")) == 1
    stack.settle()  # the loser's released allocation drains and stops
    live = local.store.all(
        "SELECT a.deployment_id FROM allocations a JOIN environments e ON e.id = a.environment_id "
        "WHERE e.name = 'production' AND a.state IN ('planned', 'pulling', 'starting', 'ready', 'draining')"
    )
    assert [a["deployment_id"] for a in live] == [winner["params"]["deployment_id"]]

    # Promoting the loser again is refused before anything starts, changing nothing.
    before = stack.world()
    again = local.client.post(
        f"/v1/deployments/{loser['params']['deployment_id']}/promote",
        json={"environment": "production"},
        headers=local.owner.headers,
    )
    assert (again.status_code, again.json()["error"]["code"]) == (409, "route_key_taken")
    assert stack.world() == before
