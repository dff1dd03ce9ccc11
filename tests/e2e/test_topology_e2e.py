"""Bindings, scale and regions end to end: the real `rhone` against a real Rhone Local, copies of examples/hello
deployed, promoted and scaled through the real pipeline, runner and edge.

What an allocation received from its environment is read where the app reads it: the process's own environment
(`/proc/<pid>/environ`). Every secret value a test hands to `rhone` is searched for afterwards in everything `rhone`
printed, the server's log, and every table of the control database but the one that holds secrets.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import assert_matches_schema
from tests.e2e.helpers import HELLO, wait_until

pytestmark = pytest.mark.slow

APP_PATH = "/v1/workspaces/local/projects/hello/apps/hello"
PRODUCTION_HOST = "hello--production.localhost"


class Session:
    """Runs `rhone` in one app directory and keeps everything it printed (for the secret search)."""

    def __init__(self, server, app_dir: Path) -> None:
        self.server, self.app_dir, self.printed = server, app_dir, []

    def run(self, *args: str, environ: dict[str, str] | None = None, stdin: str = "", timeout: float = 90):
        result = self.server.rhone(*args, cwd=self.app_dir, environ=environ, stdin=stdin, timeout=timeout)
        self.printed += [result.stdout, result.stderr]
        return result

    def ok(self, *args: str, **kwargs):
        result = self.run(*args, "--json", **kwargs)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result.json()

    def refused(self, *args: str, exit_code: int, code: str, **kwargs) -> dict:
        result = self.run(*args, "--json", **kwargs)
        assert result.exit_code == exit_code, (args, result.exit_code, result.stdout, result.stderr)
        document = result.json()
        assert_matches_schema(document, "error.schema.json")
        assert document["error"]["code"] == code, document
        return document["error"]

    def deploy_and_promote(self) -> dict:
        document = self.ok("deploy", "--promote")
        assert document["promotion"]["state"] == "healthy", document
        return document["deployment"]


def app_copy(root: Path, runtime: str = "", providers: str = "", environments: str = "") -> Path:
    app_dir = root / "hello"
    if not app_dir.exists():
        import shutil

        shutil.copytree(HELLO, app_dir, ignore=shutil.ignore_patterns(".rhone", "__pycache__"))
    base = (HELLO / "rhone.toml").read_text()
    (app_dir / "rhone.toml").write_text(base + "\n" + runtime + "\n" + providers + "\n" + environments)
    return app_dir


def edge_get(server, path: str = "/", cookie: str | None = None) -> httpx.Response:
    headers = {"Host": PRODUCTION_HOST}
    if cookie:
        headers["Cookie"] = cookie
    return httpx.get(f"http://127.0.0.1:{server.edge_port}{path}", headers=headers, timeout=10)


def process_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def db_rows(server, sql: str, *args) -> list[dict]:
    with sqlite3.connect(server.data_dir / "rhone.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, args)]


def live_allocations(server, environment: str = "production") -> list[dict]:
    return db_rows(
        server,
        "SELECT a.* FROM allocations a JOIN environments e ON e.id = a.environment_id "
        "WHERE e.name = ? AND a.state IN ('planned', 'pulling', 'starting', 'ready', 'draining') ORDER BY a.id",
        environment,
    )


def route(session: Session) -> tuple[str, int]:
    owner = session.ok("route", "show", "production")
    return owner["deployment_id"], owner["epoch"]


# -- scale ----------------------------------------------------------------------------------------------------------
def test_scale_is_gated_by_runtime_services_then_spreads_and_survives_a_killed_instance(local, tmp_path):
    app_dir = app_copy(tmp_path, runtime='[runtime]\nunsafe_replay_routes = ["/pay"]\n')
    session = Session(local, app_dir)
    session.ok("init", "--link")
    deployment = session.deploy_and_promote()
    owner = route(session)
    assert len(live_allocations(local)) == 1

    # Nothing bound: each missing service is named with its reason; nothing started, the route did not move.
    error = session.refused(
        "app", "scale", "--env", "production", "--instances", "3", exit_code=6, code="runtime_services_missing"
    )
    for service in ("session", "broadcast", "idempotency"):
        assert f"{service} in local-1" in error["message"]
    operation = session.ok("op", "show", error["operation_id"])
    gate = next(s for s in operation["stages"] if s["state"] == "failed")["evidence"]
    assert [m["service"] for m in gate["missing"]] == ["session", "broadcast", "idempotency"]
    assert [s["state"] for s in operation["stages"]] == ["requested", "gate_check", "failed"]
    assert len(live_allocations(local)) == 1 and route(session) == owner

    # One service at a time: the refusal shrinks to what is still missing.
    services = session.ok("env", "services", "production", "--bind", "session")
    assert [s["service"] for s in services["items"]] == ["session"]
    assert [m["service"] for m in services["missing"]] == ["broadcast", "idempotency"]
    error = session.refused(
        "app", "scale", "--env", "production", "--instances", "3", exit_code=6, code="runtime_services_missing"
    )
    assert "session in" not in error["message"] and "broadcast in local-1" in error["message"]
    assert len(live_allocations(local)) == 1

    services = session.ok("env", "services", "production", "--bind", "broadcast", "--bind", "idempotency")
    assert services["missing"] == [] and len(services["items"]) == 3
    scaled = session.ok("app", "scale", "--env", "production", "--instances", "3")
    assert scaled["state"] == "scaled"
    allocations = session.ok("app", "allocations", "--env", "production")
    assert len(allocations) == 3
    assert {a["state"] for a in allocations} == {"ready"} and all(a["route_owner"] for a in allocations)
    assert {(a["region"], a["cell"]) for a in allocations} == {("local-1", "local-1a")}
    assert {a["deployment_id"] for a in allocations} == {deployment["id"]} and route(session) == owner

    # Each allocation received the environment's service endpoints (local implementations that exist).
    for alloc in live_allocations(local):
        environ = process_environ(alloc["pid"])
        assert environ["RHONE_ALLOCATION_ID"] == alloc["id"]
        session_store = environ["RHONE_SERVICE_SESSION_URL"]
        assert session_store.startswith("sqlite://") and Path(session_store.removeprefix("sqlite://")).is_file()
        assert environ["RHONE_SERVICE_BROADCAST_URL"].startswith("file://")

    # Without a session cookie requests spread over all three; with one they stay on one allocation.
    spread = Counter(edge_get(local).json()["allocation"] for _ in range(30))
    assert set(spread) == {a["id"] for a in allocations}
    pinned = {edge_get(local, cookie="theme=dark; vango_session=abc123").json()["allocation"] for _ in range(15)}
    assert len(pinned) == 1
    other = {edge_get(local, cookie="vango_session=someone-else").json()["allocation"] for _ in range(15)}
    assert len(other) == 1

    # Kill one instance (the pinned session's): ownership does not move; every request is still answered by the
    # owner — the session moves to another instance — and the dead one is recorded failed.
    [victim] = [a for a in live_allocations(local) if a["id"] in pinned]
    os.killpg(victim["pid"], signal.SIGKILL)
    answers = [edge_get(local, cookie="vango_session=abc123") for _ in range(20)]
    assert all(a.status_code == 200 and a.json()["deployment"] == deployment["id"] for a in answers)
    assert {a.json()["allocation"] for a in answers} & pinned == set()
    assert wait_until(lambda: len(live_allocations(local)) == 2, timeout=5)
    failed = db_rows(local, "SELECT state, health FROM allocations WHERE id = ?", victim["id"])[0]
    assert failed["state"] == "failed" and "process exited" in failed["health"]
    assert route(session) == owner

    # Scale down: the extra allocations drain and stop.
    assert session.ok("app", "scale", "--env", "production", "--instances", "1")["state"] == "scaled"
    assert len(live_allocations(local)) == 1 and edge_get(local).status_code == 200
    assert session.ok("env", "show", "production")["instances"] == 1


def test_a_promotion_into_a_scaled_environment_starts_every_instance_first(local, tmp_path):
    app_dir = app_copy(tmp_path, runtime="[runtime]\nserver_sessions = false\n")
    session = Session(local, app_dir)
    session.ok("init", "--link")
    first = session.deploy_and_promote()
    assert session.ok("app", "scale", "--env", "production", "--instances", "2")["state"] == "scaled"
    second = session.deploy_and_promote()  # an app without server sessions scales with nothing bound
    allocations = session.ok("app", "allocations", "--env", "production")
    assert [a["deployment_id"] for a in allocations] == [second["id"], second["id"]]
    assert {a["state"] for a in allocations} == {"ready"}
    assert not [a for a in live_allocations(local) if a["deployment_id"] == first["id"]]


def test_scale_refuses_bad_input_and_an_environment_nothing_serves(local, tmp_path):
    app_dir = app_copy(tmp_path)
    session = Session(local, app_dir)
    session.ok("init", "--link")
    session.ok("deploy")
    session.refused("app", "scale", "--env", "production", "--instances", "2", exit_code=5, code="no_route_owner")
    result = session.run("app", "scale", "--env", "production", "--instances", "21")
    assert result.exit_code == 2 and "21" in result.stderr
    result = session.run("app", "scale", "--instances", "2")
    assert result.exit_code == 2 and "--env" in result.stderr
    session.refused("app", "scale", "--env", "nowhere", "--instances", "2", exit_code=4, code="not_found")
    assert db_rows(local, "SELECT COUNT(*) AS n FROM operations WHERE kind = 'scale'")[0]["n"] == 0
