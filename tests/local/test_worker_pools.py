"""Worker pools: builds (deploy operations) and control operations are claimed by separate pools, so no number of
long builds can keep a tenancy change, a promotion or a rollback waiting (end to end: tests/e2e/test_processes_e2e.py).
"""

from __future__ import annotations

from rhone_local.domain.manifest import digest_of
from rhone_local.domain.operations import NOT_RUNNABLE
from rhone_local.workers import BUILD_POOL, Workers

from ._cases import EMPTY_CONFIG, EMPTY_MANIFEST
from .conftest import BASE, LocalEnv


def _deploy(local: LocalEnv, project: dict, app: dict) -> str:
    body = {"manifest": EMPTY_MANIFEST, "manifest_digest": digest_of(EMPTY_MANIFEST), "config": EMPTY_CONFIG}
    response = local.client.post(
        f"{BASE}/projects/{project['name']}/apps/{app['name']}/deployments", json=body, headers=local.owner.headers
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _claim(local: LocalEnv, worker: str, *, builds: bool) -> dict | None:
    return local.store.claim_operation(worker, 30, NOT_RUNNABLE, pool=BUILD_POOL, outside_pool=not builds)


def test_each_pool_claims_only_its_own_kinds_oldest_first(local: LocalEnv) -> None:
    project = local.create_project()
    app = local.create_app(project)
    deploys = [_deploy(local, project, app) for _ in range(2)]  # older than the control operation below
    control = local.client.post(f"{BASE}/projects", json={"name": "later"}, headers=local.owner.headers).json()["id"]

    assert _claim(local, "control-0", builds=False)["id"] == control
    assert _claim(local, "control-1", builds=False) is None  # the queued deploys are not the control pool's
    assert [_claim(local, f"build-{n}", builds=True)["id"] for n in range(2)] == deploys
    assert _claim(local, "build-2", builds=True) is None
    leases = {op["id"]: op["lease_owner"] for op in local.store.all("SELECT id, lease_owner FROM operations")}
    assert {op_id: leases[op_id] for op_id in [control, *deploys]} == {
        control: "control-0",
        deploys[0]: "build-0",
        deploys[1]: "build-1",
    }


def test_a_deploy_resumed_by_an_approval_is_the_control_pools(local: LocalEnv) -> None:
    """Its remaining stage (gates, then the preview) must not wait behind builds either."""
    project = local.create_project()
    app = local.create_app(project)
    building = _deploy(local, project, app)
    assert _claim(local, "build-0", builds=True)["id"] == building  # a build under way
    approved = _deploy(local, project, app)
    deployment_id = local.operation(approved)["target_id"]
    evidence = {"gates": [{"gate": "db_impact", "outcome": "block", "summary": "1 new migration", "facts": {}}]}
    with local.store.write() as c:  # parked by a gate (the gate itself is tested elsewhere)
        c.execute("UPDATE operations SET state = 'blocked', version = version + 1 WHERE id = ?", (approved,))
        local.store.update_deployment(c, deployment_id, state="blocked", evidence=evidence)
    response = local.client.post(f"/v1/deployments/{deployment_id}/approve", json={}, headers=local.owner.headers)
    assert response.status_code == 202, response.text
    assert local.operation(approved)["state"] == "validating"

    assert _claim(local, "build-1", builds=True) is None
    assert _claim(local, "control-0", builds=False)["id"] == approved


def test_a_restart_releases_the_leases_of_both_pools(local: LocalEnv) -> None:
    project = local.create_project()
    deploy = _deploy(local, project, local.create_app(project))
    control = local.client.post(f"{BASE}/projects", json={"name": "later"}, headers=local.owner.headers).json()["id"]
    assert _claim(local, "worker-1-build-0", builds=True)["id"] == deploy
    assert _claim(local, "worker-1-control-0", builds=False)["id"] == control
    restarted = Workers(local.store, local.notifier, count=0, build_count=0)
    restarted.start()  # no threads: only the start-up release of a dead process's leases
    restarted.stop()
    rows = local.store.all("SELECT id, lease_owner FROM operations WHERE id IN (?, ?)", deploy, control)
    assert [row["lease_owner"] for row in rows] == [None, None]
