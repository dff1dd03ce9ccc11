"""Runtime identities (tokens handed to an app's allocations) never mutate tenancy and read only their own app.

Tenancy is platform-owned. Every mutating endpoint is tried with a runtime token — aimed at the
identity's own app wherever the endpoint takes one, the most tempting target — and must be refused with 403
`runtime_identity_forbidden`, change nothing, and leave a `denied` audit record with actor_kind `runtime`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from ._cases import CASES, Case, Target
from .conftest import BASE, Actor, LocalEnv


@dataclass
class RuntimeWorld:
    project: dict[str, Any]
    app: dict[str, Any]
    other_app: dict[str, Any]
    identity: Actor

    def app_path(self, app: dict[str, Any] | None = None) -> str:
        return f"{BASE}/projects/{self.project['name']}/apps/{(app or self.app)['name']}"


@pytest.fixture
def world(local: LocalEnv) -> RuntimeWorld:
    project = local.create_project("shop")
    app = local.create_app(project, "web")
    other = local.create_app(project, "api")
    identity = local.mint_runtime_identity(project, app)
    return RuntimeWorld(project, app, other, identity)


def test_minted_identity_is_a_runtime_principal(local: LocalEnv, world: RuntimeWorld) -> None:
    response = local.client.get("/v1/whoami", headers=world.identity.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["kind"], body["id"], body["app_id"]) == ("runtime", world.identity.id, world.app["id"])
    assert body["id"].startswith("rid_")
    assert [w["role"] for w in body["workspaces"]] == [None]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_runtime_identity_cannot_mutate_tenancy(local: LocalEnv, world: RuntimeWorld, case: Case) -> None:
    call = case.prepare(local, world.identity, Target(world.project, world.app))
    snapshot, audit_before = local.snapshot(), local.store.count("audit")
    response = local.client.request(call.method, call.path, json=call.json, headers=world.identity.headers)
    assert response.status_code == 403, response.text
    request_id = response.headers["X-Request-Id"]
    error = response.json()["error"]
    assert error["code"] == "runtime_identity_forbidden"
    assert error["request_id"] == request_id
    assert local.snapshot() == snapshot, "a runtime identity changed tenancy"
    assert local.store.count("audit") == audit_before + 1
    records = local.audit_for(request_id)
    assert [(r["action"], r["result"], r["actor_kind"], r["actor_id"], r["detail"]) for r in records] == [
        (case.action, "denied", "runtime", world.identity.id, {"code": "runtime_identity_forbidden"})
    ]
    # The refused token still works (revoking itself was refused too).
    assert local.client.get("/v1/whoami", headers=world.identity.headers).status_code == 200


def test_runtime_identity_reads_its_own_app(local: LocalEnv, world: RuntimeWorld) -> None:
    headers = world.identity.headers
    app = local.client.get(world.app_path(), headers=headers)
    assert app.status_code == 200, app.text
    assert app.json()["id"] == world.app["id"]

    environments = local.client.get(f"{world.app_path()}/environments", headers=headers)
    assert environments.status_code == 200, environments.text
    assert sorted(e["name"] for e in environments.json()["items"]) == ["preview", "production"]
    assert {e["app_id"] for e in environments.json()["items"]} == {world.app["id"]}

    production = local.client.get(f"{world.app_path()}/environments/production", headers=headers)
    assert production.status_code == 200, production.text
    assert production.json()["name"] == "production"

    # The operation that created its app is a fact about its app.
    created_by = local.client.get(f"/v1/operations/{world.app['operation_id']}", headers=headers)
    assert created_by.status_code == 200, created_by.text
    assert created_by.json()["target_id"] == world.app["id"]


def test_runtime_identity_cannot_read_another_app(local: LocalEnv, world: RuntimeWorld) -> None:
    headers = world.identity.headers
    other = world.app_path(world.other_app)
    for path in (other, f"{other}/environments", f"{other}/environments/preview"):
        response = local.client.get(path, headers=headers)
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "forbidden", path
    for op_id in (world.other_app["operation_id"], world.project["operation_id"]):
        response = local.client.get(f"/v1/operations/{op_id}", headers=headers)
        assert response.status_code == 403, op_id
        assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/workspaces",
        BASE,
        f"{BASE}/members",
        f"{BASE}/audit",
        f"{BASE}/tokens",
        f"{BASE}/projects",
        f"{BASE}/projects/shop",
        f"{BASE}/projects/shop/apps",
        f"{BASE}/operations",
    ],
)
def test_runtime_identity_cannot_read_the_workspace(local: LocalEnv, world: RuntimeWorld, path: str) -> None:
    response = local.client.get(path, headers=world.identity.headers)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"
    assert response.json()["error"]["request_id"] == response.headers["X-Request-Id"]


def test_the_identity_an_app_is_created_with_has_no_token_until_minted(local: LocalEnv, world: RuntimeWorld) -> None:
    """app.create records a runtime identity for the app; only the explicit mint endpoint issues a token."""
    identities = local.store.all("SELECT * FROM runtime_identities WHERE app_id = ?", world.app["id"])
    assert len(identities) == 2  # the one created with the app, and the minted one
    tokens = local.store.all("SELECT * FROM tokens WHERE subject_kind = 'runtime'")
    assert [t["subject_id"] for t in tokens] == [world.identity.id]
