"""Provider bindings and runtime services through the API, in process: what is refused at request time, races
between lanes, and where secret values may and may not appear."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import BASE, LocalEnv

SECRET = "s3cr3t-value-for-the-binding-tests-0451"


@pytest.fixture
def app_path(local: LocalEnv) -> str:
    project = local.create_project("shop")
    app = local.create_app(project, "web")
    return f"{BASE}/projects/shop/apps/{app['name']}"


def bind(local: LocalEnv, app_path: str, env: str, **body) -> httpx.Response:
    payload = {"name": "db", "kind": "postgres", "resource": "pg://db/shop", **body}
    return local.client.post(f"{app_path}/environments/{env}/bindings", json=payload, headers=local.owner.headers)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"resource": "pg://user:pw@db/shop"}, 422, "invalid_request"),  # credentials belong in secrets
        ({"secrets": {"lower_case": "x"}}, 422, "invalid_request"),
        ({"kind": "oracle-rac"}, 422, "invalid_request"),
        ({"name": "Bad Name"}, 422, "invalid_request"),
        ({"region": "mars-1"}, 404, "not_found"),
        ({"shared_read_only": True}, 409, "shared_mutable_resource"),  # shared must be read-only
    ],
)
def test_bad_binding_requests_are_refused_and_change_nothing(local: LocalEnv, app_path: str, body, status, code):
    before = local.snapshot()
    response = bind(local, app_path, "preview", **body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert local.snapshot() == before


def test_racing_binds_of_one_resource_to_two_lanes_leave_exactly_one(local: LocalEnv, app_path: str, live_url) -> None:
    copies = 10
    barrier = threading.Barrier(copies)

    def send(n: int) -> httpx.Response:
        env = ("preview", "production")[n % 2]
        with httpx.Client(base_url=live_url, timeout=30) as client:
            barrier.wait(timeout=10)
            return client.post(
                f"{app_path}/environments/{env}/bindings",
                json={"name": "db", "kind": "postgres", "resource": "pg://db/shared", "secrets": {"URL": SECRET}},
                headers=local.owner.headers,
            )

    with ThreadPoolExecutor(max_workers=copies) as pool:
        responses = list(pool.map(send, range(copies)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] + [409] * (copies - 1), [r.text for r in responses]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} <= {
        "shared_mutable_resource",
        "binding_exists",
    }
    rows = local.store.all("SELECT * FROM provider_bindings")
    assert len(rows) == 1 and len(local.store.all("SELECT * FROM binding_secrets")) == 1


def test_a_secret_value_is_kept_only_in_binding_secrets(local: LocalEnv, app_path: str) -> None:
    started = bind(local, app_path, "production", secrets={"DATABASE_URL": SECRET})
    assert started.status_code == 202, started.text
    local.run_operations()
    operation = local.client.get(f"/v1/operations/{started.json()['id']}", headers=local.owner.headers).json()
    assert operation["state"] == "bound" and operation["params"]["secrets"] == ["DATABASE_URL"]
    listed = local.client.get(f"{app_path}/environments/production/bindings", headers=local.owner.headers)
    [binding] = listed.json()["items"]
    assert (binding["state"], binding["secrets"]) == ("ready", ["DATABASE_URL"])
    everything = [started.text, listed.text, json.dumps(operation), json.dumps(local.audit_rows())]
    for table in local.state_tables():
        if table != "binding_secrets":
            everything.append(repr(local.store.all(f"SELECT * FROM {table}")))
    assert not [text for text in everything if SECRET in text]
    assert local.store.all("SELECT value FROM binding_secrets") == [{"value": SECRET}]


def test_a_retried_bind_with_its_key_is_replayed_and_another_body_is_refused(local: LocalEnv, app_path: str) -> None:
    headers = {**local.owner.headers, "Idempotency-Key": "bind-once"}
    path = f"{app_path}/environments/preview/bindings"
    body = {"name": "db", "kind": "postgres", "resource": "pg://db/x", "secrets": {"URL": SECRET}}
    first = local.client.post(path, json=body, headers=headers)
    again = local.client.post(path, json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202) and first.json()["id"] == again.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    changed = local.client.post(path, json={**body, "secrets": {"URL": SECRET + "-other"}}, headers=headers)
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_key_reused"
    assert len(local.store.all("SELECT * FROM provider_bindings")) == 1


def test_services_update_refuses_contradictions_and_empty_requests(local: LocalEnv, app_path: str) -> None:
    path = f"{app_path}/environments/production/services"
    before = local.snapshot()
    for body, status, code in (
        ({"bind": ["session"], "unbind": ["session"]}, 409, "services_contradict"),
        ({}, 409, "nothing_to_do"),
        ({"bind": ["telepathy"]}, 422, "invalid_request"),
        ({"bind": ["cache"], "provider": "redis://user:pw@host"}, 422, "invalid_request"),
    ):
        response = local.client.post(path, json=body, headers=local.owner.headers)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert local.snapshot() == before


def test_the_cli_and_the_server_agree_on_kinds_and_services() -> None:
    from typing import get_args

    from rhone_cli.config.project import PROVIDER_KINDS, RUNTIME_SERVICES
    from rhone_local.api import models
    from rhone_local.domain import topology

    assert get_args(models.ProviderKind) == PROVIDER_KINDS
    assert get_args(models.RuntimeService) == topology.RUNTIME_SERVICES
    assert set(RUNTIME_SERVICES) == set(topology.RUNTIME_SERVICES)


def test_a_worker_crash_in_a_binding_frees_the_name_and_drops_the_secret(
    local: LocalEnv, app_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(op):
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(local.workers.kinds["binding.create"].handlers, "binding", crash)
    started = bind(local, app_path, "preview", secrets={"DATABASE_URL": SECRET})
    local.run_operations()
    op = local.operation(started.json()["id"])
    assert (op["state"], op["error"]["code"]) == ("failed", "internal_error")
    assert local.store.all("SELECT state FROM provider_bindings") == [{"state": "failed"}]
    assert local.store.all("SELECT * FROM binding_secrets") == []
    monkeypatch.undo()
    again = bind(local, app_path, "preview", secrets={"DATABASE_URL": SECRET})
    assert again.status_code == 202, again.text
    local.run_operations()
    assert local.operation(again.json()["id"])["state"] == "bound"


def test_a_worker_crash_in_a_region_enablement_disables_the_region(
    local: LocalEnv, app_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(op):
        raise RuntimeError("boom")

    monkeypatch.setitem(local.workers.kinds["region.enable"].handlers, "provisioning", crash)
    started = local.client.post(
        f"{app_path}/environments/production/regions/local-2/enable", headers=local.owner.headers
    )
    assert started.status_code == 202
    local.run_operations()
    assert local.operation(started.json()["id"])["state"] == "disabled"  # its machine's failure state, not "failed"
    [row] = local.store.all("SELECT state, reason FROM environment_regions")
    assert row["state"] == "disabled" and row["reason"].startswith("internal_error")


def test_spellings_of_one_resource_are_one_resource(local: LocalEnv, app_path: str) -> None:
    assert bind(local, app_path, "preview", resource="pg://DB-Host/shop/").status_code == 202
    local.run_operations()
    refused = bind(local, app_path, "production", resource="PG://db-host/shop")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "shared_mutable_resource"
    [row] = local.store.all("SELECT resource FROM provider_bindings")
    assert row["resource"] == "pg://db-host/shop"


def test_a_removed_binding_still_counts_while_allocations_started_with_it_run(local: LocalEnv, app_path: str) -> None:
    assert bind(local, app_path, "production").status_code == 202
    local.run_operations()
    [binding] = local.store.all("SELECT * FROM provider_bindings")
    local.store.conn.execute("PRAGMA foreign_keys=OFF")  # a bare allocation row: no deployment is needed here
    with local.store.write() as c:  # an allocation that started with the binding, still running
        c.execute(
            "INSERT INTO allocations (id, deployment_id, environment_id, artifact_digest, region_id, cell_id, state, "
            "version, pid, port, health, created_at, updated_at) VALUES ('alloc_x', 'dep_x', ?, 'sha256:x', ?, "
            "(SELECT id FROM cells LIMIT 1), 'ready', 1, 1, 1, NULL, '2000-01-01T00:00:00.000Z', 'x')",
            (binding["environment_id"], binding["region_id"]),
        )
    local.store.conn.execute("PRAGMA foreign_keys=ON")
    c = local.client
    removed = c.delete(f"{app_path}/environments/production/bindings/db", headers=local.owner.headers)
    assert removed.status_code == 202
    local.run_operations()
    refused = bind(local, app_path, "preview")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "shared_mutable_resource"
    with local.store.write() as conn:
        conn.execute("UPDATE allocations SET state = 'stopped' WHERE id = 'alloc_x'")
    assert bind(local, app_path, "preview").status_code == 202  # nothing uses it in production any more


def test_two_bindings_cannot_provide_one_variable(local: LocalEnv, app_path: str) -> None:
    assert bind(local, app_path, "preview", secrets={"DATABASE_URL": SECRET}).status_code == 202
    local.run_operations()
    before = local.snapshot()
    refused = bind(local, app_path, "preview", name="replica", resource="pg://r/x", secrets={"DATABASE_URL": "y" * 9})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "secret_name_taken"
    assert local.snapshot() == before
