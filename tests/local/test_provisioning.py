"""Provisioned databases through the API and the binding operations, in process: one durable database per
environment, outside every artifact; what is refused, and that a refusal changes nothing. PostgreSQL runs for real in
its own temporary cluster (on a unix socket, no TCP port) when its binaries are on this machine."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ._cases import Target, _app_path, _preview_ready, live_allocation
from .conftest import LocalEnv


def bind(local: LocalEnv, path: str, env: str, **body: Any) -> Any:
    return local.client.post(f"{path}/environments/{env}/bindings", json=body, headers=local.owner.headers)


def bound(local: LocalEnv, path: str, env: str, name: str = "db", **body: Any) -> dict[str, Any]:
    response = bind(local, path, env, name=name, **body)
    assert response.status_code == 202, response.text
    local.run_operations()
    op = local.operation(response.json()["id"])
    assert op["state"] == "bound", op
    return op


def unbind(local: LocalEnv, path: str, env: str, name: str = "db", **params: Any) -> Any:
    return local.client.delete(f"{path}/environments/{env}/bindings/{name}", params=params, headers=local.owner.headers)


def variables(local: LocalEnv, target: Target, env: str) -> dict[str, str]:
    environment = local.store.environment(target.app["id"], env)
    return local.store.allocation_environment(environment["id"], local.store.primary_region()["id"])


def sqlite_path(url: str) -> Path:
    assert url.startswith("sqlite:////")
    return Path(url.removeprefix("sqlite:///"))


def test_each_environment_gets_its_own_durable_sqlite_database(local: LocalEnv) -> None:
    target = Target()
    path = _app_path(local, target)
    bound(local, path, "preview", kind="sqlite", provision=True, provision_secrets=["DATABASE_URL", "DB_URL"])
    bound(local, path, "production", kind="sqlite", provision=True)
    preview, production = variables(local, target, "preview"), variables(local, target, "production")
    assert preview["DATABASE_URL"] == preview["DB_URL"]
    assert sqlite_path(preview["DATABASE_URL"]) != sqlite_path(production["DATABASE_URL"])
    for url in (preview["DATABASE_URL"], production["DATABASE_URL"]):
        file = sqlite_path(url)
        assert file.is_file() and file.is_relative_to(local.data_dir / "data")
        assert oct(file.stat().st_mode & 0o777) == "0o600"
    listed = local.client.get(f"{path}/environments/preview/bindings", headers=local.owner.headers).json()["items"]
    assert [(b["name"], b["state"], b["secrets"]) for b in listed] == [("db", "ready", ["DATABASE_URL", "DB_URL"])]
    assert "sqlite://" in listed[0]["resource"]


def test_provisioning_twice_is_refused_and_changes_nothing(local: LocalEnv) -> None:
    path = _app_path(local, Target())
    bound(local, path, "preview", kind="sqlite", provision=True)
    before = local.snapshot()
    again = bind(local, path, "preview", name="db", kind="sqlite", provision=True)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "binding_exists")
    assert local.snapshot() == before


def test_a_provisioned_database_is_never_bound_to_another_lane(local: LocalEnv) -> None:
    target = Target()
    path = _app_path(local, target)
    bound(local, path, "preview", kind="sqlite", provision=True)
    resource = local.client.get(f"{path}/environments/preview/bindings", headers=local.owner.headers).json()
    url = resource["items"][0]["resource"]
    for _ in range(2):  # while preview's binding is live, and after it was removed (the data is kept)
        before = local.snapshot()
        stolen = bind(local, path, "production", name="db", kind="sqlite", resource=url)
        assert (stolen.status_code, stolen.json()["error"]["code"]) == (409, "shared_mutable_resource")
        assert local.snapshot() == before
        removed = unbind(local, path, "preview")
        if removed.status_code == 202:
            local.run_operations()


def test_unbind_keeps_the_data_and_binding_again_finds_it(local: LocalEnv) -> None:
    target = Target()
    path = _app_path(local, target)
    bound(local, path, "preview", kind="sqlite", provision=True)
    file = sqlite_path(variables(local, target, "preview")["DATABASE_URL"])
    with sqlite3.connect(file) as db:
        db.execute("CREATE TABLE visits (n INTEGER)")
        db.execute("INSERT INTO visits VALUES (1)")
    db.close()
    assert unbind(local, path, "preview").status_code == 202
    local.run_operations()
    assert "DATABASE_URL" not in variables(local, target, "preview")
    assert file.is_file()
    bound(local, path, "preview", kind="sqlite", provision=True)
    assert sqlite_path(variables(local, target, "preview")["DATABASE_URL"]) == file
    with sqlite3.connect(file) as db:
        assert db.execute("SELECT n FROM visits").fetchall() == [(1,)]
    db.close()


def test_delete_data_is_refused_while_an_allocation_uses_it_then_deletes(local: LocalEnv) -> None:
    target = Target()
    path = _app_path(local, target)
    bound(local, path, "preview", kind="sqlite", provision=True)
    file = sqlite_path(variables(local, target, "preview")["DATABASE_URL"])
    deployment = local.store.deployment(_preview_ready(local, target))
    alloc = live_allocation(local, deployment["id"])
    before = local.snapshot()
    refused = unbind(local, path, "preview", delete_data="true")
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "data_in_use")
    assert refused.json()["error"]["details"]["allocations"] == [alloc["id"]]
    assert local.snapshot() == before and file.is_file()
    with local.store.write() as c:
        c.execute("UPDATE allocations SET state = 'stopped' WHERE id = ?", (alloc["id"],))
    deleted = unbind(local, path, "preview", delete_data="true")
    assert deleted.status_code == 202, deleted.text
    local.run_operations()
    assert local.operation(deleted.json()["id"])["state"] == "unbound"
    assert not file.exists() and local.store.provisioned(deployment["environment_id"], "db") is None


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"kind": "sqlite", "provision": True, "resource": "sqlite:///tmp/x"}, 409, "provision_conflict"),
        ({"kind": "sqlite"}, 409, "resource_required"),
        ({"kind": "redis", "provision": True}, 409, "not_provisionable"),
        ({"kind": "sqlite", "provision": True, "secrets": {"DATABASE_URL": "x"}}, 409, "provision_conflict"),
        ({"kind": "sqlite", "provision": True, "shared_read_only": True, "mutable": False}, 409,
         "shared_mutable_resource"),
        ({"kind": "postgres", "provision": True}, 409, "app_databases_unavailable"),
    ],
)  # fmt: skip
def test_bad_provisioning_requests_are_refused_and_change_nothing(local: LocalEnv, body, status, code) -> None:
    path = _app_path(local, Target())
    before = local.snapshot()
    response = bind(local, path, "preview", name="db", **body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert local.snapshot() == before
    assert not (local.data_dir / "data").exists()


def test_delete_data_of_a_binding_that_was_not_provisioned_is_refused(local: LocalEnv) -> None:
    path = _app_path(local, Target())
    bound(local, path, "preview", kind="postgres", resource="pg://db-host/shop")
    before = local.snapshot()
    response = unbind(local, path, "preview", delete_data="true")
    assert (response.status_code, response.json()["error"]["code"]) == (409, "not_provisioned")
    assert local.snapshot() == before


# -- PostgreSQL, for real ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_postgres_databases_are_real_durable_and_apart(local: LocalEnv, postgres: str) -> None:
    import psycopg

    for provisioner in (local.client.app.state.ports.databases, local.workers.topology.pipeline.provisioner):
        provisioner.app_databases = postgres
    target = Target()
    path = _app_path(local, target)
    bound(local, path, "preview", kind="postgres", provision=True)
    bound(local, path, "production", kind="postgres", provision=True)
    preview, production = variables(local, target, "preview"), variables(local, target, "production")
    assert preview["DATABASE_URL"] != production["DATABASE_URL"]
    for url, value in ((preview["DATABASE_URL"], "preview"), (production["DATABASE_URL"], "production")):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE lane (name text)")
            conn.execute("INSERT INTO lane VALUES (%s)", (value,))
    # Preview's role cannot open production's database.
    production_db = production["DATABASE_URL"].split("@/", 1)[1].split("?", 1)[0]
    credentials, rest = preview["DATABASE_URL"].split("@/", 1)
    stolen = f"{credentials}@/{production_db}?{rest.split('?', 1)[1]}"
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(stolen).close()
    # Unbind keeps the data; binding again hands a new password to the same database.
    assert unbind(local, path, "production").status_code == 202
    local.run_operations()
    bound(local, path, "production", kind="postgres", provision=True)
    again = variables(local, target, "production")["DATABASE_URL"]
    assert again != production["DATABASE_URL"]
    with psycopg.connect(again) as conn:
        assert conn.execute("SELECT name FROM lane").fetchall() == [("production",)]
    # --delete-data drops it.
    assert unbind(local, path, "production", delete_data="true").status_code == 202
    local.run_operations()
    with psycopg.connect(postgres) as admin:
        names = {r[0] for r in admin.execute("SELECT datname FROM pg_database")}
    assert production_db not in names and preview["DATABASE_URL"].split("@/", 1)[1].split("?", 1)[0] in names
