"""Worker pools: builds, roll-outs (what waits for an app's readiness) and control operations are claimed by separate
pools, so no number of long builds or never-ready releases can keep a tenancy change waiting (end to end:
tests/e2e/test_processes_e2e.py; docs/architecture.md, "Worker pools").
"""

from __future__ import annotations

from rhone_local.domain.access import Principal
from rhone_local.domain.manifest import digest_of
from rhone_local.domain.operations import NOT_RUNNABLE
from rhone_local.workers import BUILD_POOL, ROLLOUT_POOL, Workers

from ._cases import EMPTY_CONFIG, EMPTY_MANIFEST
from .conftest import BASE, LocalEnv


def _deploy(local: LocalEnv, project: dict, app: dict) -> str:
    body = {"manifest": EMPTY_MANIFEST, "manifest_digest": digest_of(EMPTY_MANIFEST), "config": EMPTY_CONFIG}
    response = local.client.post(
        f"{BASE}/projects/{project['name']}/apps/{app['name']}/deployments", json=body, headers=local.owner.headers
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _claim(local: LocalEnv, worker: str, *, pool: str) -> dict | None:
    within, outside = {
        "build": (BUILD_POOL, ()),
        "rollout": (ROLLOUT_POOL, ()),
        "control": ((), BUILD_POOL + ROLLOUT_POOL),
    }[pool]
    return local.store.claim_operation(worker, 30, NOT_RUNNABLE, within=within, outside=outside)


def test_each_pool_claims_only_its_own_kinds_oldest_first(local: LocalEnv) -> None:
    project = local.create_project()
    app = local.create_app(project)
    deploys = [_deploy(local, project, app) for _ in range(2)]  # older than the control operation below
    control = local.client.post(f"{BASE}/projects", json={"name": "later"}, headers=local.owner.headers).json()["id"]

    assert _claim(local, "control-0", pool="control")["id"] == control
    assert _claim(local, "control-1", pool="control") is None  # the queued deploys are not the control pool's
    assert [_claim(local, f"build-{n}", pool="build")["id"] for n in range(2)] == deploys
    assert _claim(local, "build-2", pool="build") is None
    leases = {op["id"]: op["lease_owner"] for op in local.store.all("SELECT id, lease_owner FROM operations")}
    assert {op_id: leases[op_id] for op_id in [control, *deploys]} == {
        control: "control-0",
        deploys[0]: "build-0",
        deploys[1]: "build-1",
    }


def test_a_deploy_resumed_by_an_approval_is_the_rollout_pools(local: LocalEnv) -> None:
    """Its remaining stage (gates, then the preview) must not wait behind builds, nor hold a control worker."""
    project = local.create_project()
    app = local.create_app(project)
    building = _deploy(local, project, app)
    assert _claim(local, "build-0", pool="build")["id"] == building  # a build under way
    approved = _deploy(local, project, app)
    deployment_id = local.operation(approved)["target_id"]
    evidence = {"gates": [{"gate": "db_impact", "outcome": "block", "summary": "1 new migration", "facts": {}}]}
    with local.store.write() as c:  # parked by a gate (the gate itself is tested elsewhere)
        c.execute("UPDATE operations SET state = 'blocked', version = version + 1 WHERE id = ?", (approved,))
        local.store.update_deployment(c, deployment_id, state="blocked", evidence=evidence)
    response = local.client.post(f"/v1/deployments/{deployment_id}/approve", json={}, headers=local.owner.headers)
    assert response.status_code == 202, response.text
    assert local.operation(approved)["state"] == "validating"

    assert _claim(local, "build-1", pool="build") is None
    assert _claim(local, "control-0", pool="control") is None  # it waits for the preview's readiness
    assert _claim(local, "rollout-0", pool="rollout")["id"] == approved


def _operation(local: LocalEnv, kind: str, state: str | None = None) -> str:
    """An operation of `kind` as a request would record it (its stages are another test's business)."""
    with local.store.write() as c:
        op = local.store.create_operation(
            c,
            workspace_id=local.workspace_id,
            kind=kind,
            target_kind="environment",
            target_id="env_x",
            params={},
            principal=Principal(kind="user", id=local.owner.id, name="owner", token_id="tok_x"),
            request_id="req_pools",
            idempotency_key=None,
        )
        if state is not None:
            c.execute("UPDATE operations SET state = ? WHERE id = ?", (state, op["id"]))
    return op["id"]


def test_what_waits_for_an_apps_readiness_never_holds_the_control_pool(local: LocalEnv) -> None:
    """The attack: two promotions whose production allocation never became ready held both control workers for
    their readiness timeout, and a project create queued behind them. Every kind that waits for an app is the
    rollout pool's, in every state; the control pool still claims a tenancy change that came after them."""
    waiting = [
        _operation(local, "promote", "policy_check"),
        _operation(local, "rollback"),
        _operation(local, "scale", "scaling"),
        _operation(local, "config.update", "rolling"),
        _operation(local, "promote", "route_cas"),
    ]
    project = local.client.post(f"{BASE}/projects", json={"name": "after"}, headers=local.owner.headers).json()["id"]

    assert [_claim(local, f"rollout-{n}", pool="rollout")["id"] for n in range(5)] == waiting
    assert _claim(local, "rollout-5", pool="rollout") is None
    assert _claim(local, "build-0", pool="build") is None
    assert _claim(local, "control-0", pool="control")["id"] == project
    assert _claim(local, "control-1", pool="control") is None
    leases = {op["id"]: op["lease_owner"] for op in local.store.all("SELECT id, lease_owner FROM operations")}
    assert [leases[op_id] for op_id in waiting] == [f"rollout-{n}" for n in range(5)]


def test_control_operations_are_never_the_rollout_pools(local: LocalEnv) -> None:
    project = local.create_project()
    binding = _operation(local, "binding.create")
    services = _operation(local, "services.update")
    region = _operation(local, "region.enable")
    app = local.client.post(
        f"{BASE}/projects/{project['name']}/apps", json={"name": "later"}, headers=local.owner.headers
    ).json()["id"]
    assert _claim(local, "rollout-0", pool="rollout") is None
    assert [_claim(local, f"control-{n}", pool="control")["id"] for n in range(4)] == [binding, services, region, app]


def test_a_restart_releases_the_leases_of_both_pools(local: LocalEnv) -> None:
    project = local.create_project()
    deploy = _deploy(local, project, local.create_app(project))
    control = local.client.post(f"{BASE}/projects", json={"name": "later"}, headers=local.owner.headers).json()["id"]
    assert _claim(local, "worker-1-build-0", pool="build")["id"] == deploy
    assert _claim(local, "worker-1-control-0", pool="control")["id"] == control
    restarted = Workers(local.store, local.notifier, count=0, build_count=0)
    restarted.start()  # no threads: only the start-up release of a dead process's leases
    restarted.stop()
    rows = local.store.all("SELECT id, lease_owner FROM operations WHERE id IN (?, ?)", deploy, control)
    assert [row["lease_owner"] for row in rows] == [None, None]
