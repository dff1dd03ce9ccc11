"""Lists that fit: newest first, a default limit (30) with `-L N` and `--all`, pages served by the API (`order`,
`limit`, `cursor`) — for allocations and route history too — and `rhone status`.

The CLI runs in process against the real API app on a loopback port; a recording transport counts what it sent.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest

from rhone_cli.errors import ExitCode
from tests.conftest import RecordingTransport, assert_matches_schema

from .conftest import BASE, LocalEnv, queued_deployments

APP = f"{BASE}/projects/shop/apps/web"


@pytest.fixture
def environ(local: LocalEnv, live_url: str) -> dict[str, str]:
    return {"RHONE_API_URL": live_url, "RHONE_TOKEN": local.owner.token}


@pytest.fixture
def app(local: LocalEnv) -> dict:
    return local.create_app(local.create_project("shop"), "web")


def _deployments(local: LocalEnv, count: int) -> list[str]:
    return queued_deployments(local, APP, count)


def _queries(transport: RecordingTransport, path_end: str) -> list[dict]:
    return [
        {k: v[0] for k, v in parse_qs(r.url.query.decode()).items()}
        for r in transport.requests
        if r.url.path.endswith(path_end)
    ]


def test_lists_are_newest_first_with_a_default_limit_and_a_hint(rhone, local: LocalEnv, environ):
    names = [f"p{i:02d}" for i in range(35)]
    for name in names:
        local.create_project(name)
    transport = RecordingTransport()

    result = rhone("project", "ls", "-w", "local", "--json", environ=environ, transport=transport)

    assert result.exit_code == 0, result.stderr
    assert [p["name"] for p in result.json()] == names[::-1][:30]
    assert "showing the 30 newest; `-L N` shows N, `--all` every one" in result.stderr
    assert _queries(transport, "/projects") == [{"limit": "30", "order": "newest"}]  # one page, only what is shown


def test_limit_and_all(rhone, local: LocalEnv, environ):
    names = [f"p{i}" for i in range(5)]
    for name in names:
        local.create_project(name)

    five = rhone("project", "ls", "-w", "local", "-L", "2", "--json", environ=environ)
    assert [p["name"] for p in five.json()] == ["p4", "p3"]
    assert "showing the 2 newest" in five.stderr

    transport = RecordingTransport()
    every = rhone("project", "ls", "-w", "local", "--all", "--json", environ=environ, transport=transport)
    assert [p["name"] for p in every.json()] == names[::-1]
    assert "showing" not in every.stderr
    assert _queries(transport, "/projects") == [{"limit": "200", "order": "newest"}]

    both = rhone("project", "ls", "-w", "local", "--all", "-L", "2", environ=environ)
    assert both.exit_code == ExitCode.USAGE
    assert "--all and --limit cannot be combined" in both.stderr


def test_the_api_pages_newest_first_by_cursor(local: LocalEnv, app):
    ids = _deployments(local, 5)
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": 2, "order": "newest", **({"cursor": cursor} if cursor else {})}
        page = local.client.get(f"{APP}/deployments", params=params, headers=local.owner.headers).json()
        seen.extend(d["id"] for d in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    oldest = local.client.get(f"{APP}/deployments", params={"limit": 10}, headers=local.owner.headers).json()
    assert [d["id"] for d in oldest["items"]] == ids  # the default order is unchanged for other clients
    bad = local.client.get(f"{APP}/deployments", params={"order": "sideways"}, headers=local.owner.headers)
    assert bad.status_code == 422


def test_deploy_ls_shows_the_newest_with_owner_and_superseded_fields(rhone, local: LocalEnv, app, environ):
    ids = _deployments(local, 4)
    result = rhone("deploy", "ls", "-w", "local", "-p", "shop", "-a", "web", "-L", "3", "--json", environ=environ)

    assert result.exit_code == 0, result.stderr
    rows = result.json()
    assert [d["id"] for d in rows] == ids[::-1][:3]
    assert all(d["superseded_by"] is None and d["routes"] == [] for d in rows)
    assert_matches_schema(rows, "deployment-list.schema.json")


def test_route_history_pages_by_sequence(local: LocalEnv, app):
    ids = _deployments(local, 4)
    production = local.store.environment(app["id"], "production")
    with local.store.write() as c:
        for epoch, deployment_id in enumerate(ids):
            moved = local.store.move_route(
                c,
                app_id=app["id"],
                environment_id=production["id"],
                route_key="web--production",
                expect_epoch=epoch,
                deployment_id=deployment_id,
                artifact_digest="sha256:" + "0" * 64,
                operation_id=f"op_test{epoch}",
                kind="promote",
            )
            assert moved is not None
    path = f"{APP}/routes/production/history"
    first = local.client.get(path, params={"limit": 3, "order": "newest"}, headers=local.owner.headers).json()
    assert [e["epoch"] for e in first["items"]] == [4, 3, 2]
    rest = local.client.get(
        path, params={"limit": 3, "order": "newest", "cursor": first["next_cursor"]}, headers=local.owner.headers
    ).json()
    assert ([e["epoch"] for e in rest["items"]], rest["next_cursor"]) == ([1], None)
    bad = local.client.get(path, params={"cursor": "dep_1"}, headers=local.owner.headers)
    assert bad.status_code == 422


def test_allocations_page_newest_first(local: LocalEnv, app):
    [deployment_id] = _deployments(local, 1)
    preview = local.store.environment(app["id"], "preview")
    region = local.store.primary_region()
    cell = local.store.one("SELECT id FROM cells WHERE region_id = ?", region["id"])
    with local.store.write() as c:
        for i in range(5):
            c.execute(
                "INSERT INTO allocations (id, deployment_id, environment_id, artifact_digest, region_id, cell_id, "
                "state, version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'ready', 1, 'now', 'now')",
                (f"alloc_{i:02d}", deployment_id, preview["id"], "sha256:" + "0" * 64, region["id"], cell["id"]),
            )
    path = f"{APP}/allocations"
    first = local.client.get(path, params={"limit": 2, "order": "newest"}, headers=local.owner.headers).json()
    assert [a["id"] for a in first["items"]] == ["alloc_04", "alloc_03"]
    second = local.client.get(
        path, params={"limit": 2, "order": "newest", "cursor": first["next_cursor"]}, headers=local.owner.headers
    ).json()
    assert [a["id"] for a in second["items"]] == ["alloc_02", "alloc_01"]


def test_status_of_an_app_without_deployments(rhone, local: LocalEnv, app, environ):
    result = rhone("status", "-w", "local", "-p", "shop", "-a", "web", "--json", environ=environ)

    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert_matches_schema(doc, "status.schema.json")
    assert doc["app"] == {"id": app["id"], "name": "web", "project_id": app["project_id"]}
    assert [e["environment"] for e in doc["environments"]] == ["preview", "production"]
    for row in doc["environments"]:
        assert row["route_owner"] is None and row["epoch"] is None and row["url"] is None
        assert row["instances"] == {"ready": 0, "total": 0}
    human = rhone("status", "-w", "local", "-p", "shop", "-a", "web", environ=environ)
    assert "preview" in human.stdout and "0/0 ready" in human.stdout
    assert json.dumps(doc)  # plain data
