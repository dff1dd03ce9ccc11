"""Runtime services on real engines, through the real CLI: a Redis (and a NATS) server per lane that Rhone Local
starts, each allocation a user of its own, lanes apart, the data kept across `local down`/`up`."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from rhone_local.resp import RespConnection, RespError
from tests.e2e.helpers import hello_app, linked, wait_until
from tests.e2e.test_topology_e2e import live_allocations, process_environ

if not shutil.which("redis-server"):
    pytest.skip("needs redis-server (apt-get install redis-server)", allow_module_level=True)


def connect(url: str) -> RespConnection:
    """A Redis connection authenticated with the URL's user and password, on its database."""
    parts = urlsplit(url)
    conn = RespConnection(parts.port)
    conn.call("AUTH", parts.username, parts.password)
    conn.call("SELECT", parts.path.strip("/") or "0")
    return conn


def session_row(local, app_dir) -> dict:
    services = local.json("env", "services", "production", cwd=app_dir)
    return next(r for r in services["items"] if r["service"] == "session")


def test_each_lane_has_its_own_redis_and_each_allocation_its_own_user(local, tmp_path):
    app_dir = linked(local, hello_app(tmp_path))
    assert local.rhone("deploy", "--promote", cwd=app_dir, timeout=120).exit_code == 0
    for env in ("production", "preview"):
        bound = local.rhone(
            "env", "services", env, *("--bind", "session", "--bind", "broadcast", "--bind", "cache"), cwd=app_dir
        )
        assert bound.exit_code == 0, bound.stderr
    scaled = local.rhone("app", "scale", "--env", "production", "--instances", "2", cwd=app_dir)
    assert scaled.exit_code == 0, scaled.stderr
    # The allocation from before the binding drains (it lacks the services); the two new ones serve.
    assert wait_until(lambda: [a["state"] for a in live_allocations(local)] == ["ready", "ready"], timeout=40)
    allocations = live_allocations(local)
    urls = {a["id"]: process_environ(a["pid"]) for a in allocations}
    first, second = allocations
    session = urls[first["id"]]["RHONE_SERVICE_SESSION_URL"]
    parts = urlsplit(session)
    assert (parts.scheme, parts.username, parts.hostname, parts.path) == ("redis", first["id"], "127.0.0.1", "/0")
    assert urlsplit(urls[first["id"]]["RHONE_SERVICE_CACHE_URL"]).path == "/1"  # its own database in the lane

    # Bound but unused shows: no allocation of hello connects to Redis.
    row = session_row(local, app_dir)
    assert row["engine_up"] is True and {a["connections"] for a in row["allocations"]} == {0}
    listing = local.rhone("env", "services", "production", cwd=app_dir)
    assert "0/2 allocation(s)" in listing.stdout

    with connect(session) as conn:
        assert conn.call("SET", "vango:session:abc", "3") == "OK"
        with pytest.raises(RespError, match="NOPERM"):  # apps cannot reconfigure or stop the engine
            conn.call("CONFIG", "SET", "appendonly", "no")
        row = session_row(local, app_dir)
        assert {a["allocation_id"]: a["connections"] for a in row["allocations"]} == {
            first["id"]: 1,
            second["id"]: 0,
        }
    # The other instance shares the lane's data; another allocation's password is not its own.
    with connect(urls[second["id"]]["RHONE_SERVICE_SESSION_URL"]) as conn:
        assert conn.call("GET", "vango:session:abc") == "3"
    forged = session.replace(f"{first['id']}:", f"{second['id']}:")
    with pytest.raises(RespError, match="WRONGPASS"):
        connect(forged)

    # Preview's lane is another engine: production's credentials open nothing there, and its data is its own.
    preview_port = session_row_port(local, app_dir, "preview")
    assert preview_port != parts.port
    with RespConnection(preview_port) as conn, pytest.raises(RespError, match="WRONGPASS"):
        conn.call("AUTH", parts.username, parts.password)

    # Data survives `local down`/`up`; a stopped allocation's user is gone (and with it its access).
    assert local.rhone("local", "down").exit_code == 0
    assert local.up().exit_code == 0
    assert wait_until(lambda: len([a for a in live_allocations(local) if a["state"] == "ready"]) == 2, timeout=60)
    current = {a["id"]: process_environ(a["pid"]) for a in live_allocations(local)}
    url = next(iter(current.values()))["RHONE_SERVICE_SESSION_URL"]
    assert wait_until(lambda: _get(url, "vango:session:abc") == "3", timeout=60)
    with pytest.raises(RespError, match="WRONGPASS"):
        connect(session)  # the first allocation stopped with Rhone Local: its user went with it


def _get(url: str, key: str) -> str | None:
    try:
        with connect(url) as conn:
            return conn.call("GET", key)
    except (OSError, RespError):
        return None


def session_row_port(local, app_dir, env: str) -> int:
    """The port of an environment's Redis engine, from its state file under the data directory."""
    environments = {r["name"]: r["id"] for r in local.json("env", "ls", cwd=app_dir)}
    engine = local.data_dir / "services" / "engines" / environments[env]
    return int(json.loads(next(engine.glob("*/redis/engine.json")).read_text())["port"])


@pytest.mark.skipif(
    not (shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")), reason="needs nats-server"
)
def test_nats_serves_broadcast_with_a_user_per_allocation_and_refuses_what_it_cannot_serve(local, tmp_path):
    app_dir = linked(local, hello_app(tmp_path))
    deployed = local.rhone("deploy", "--json", cwd=app_dir, timeout=120)
    assert deployed.exit_code == 0, deployed.stderr
    wrong = local.rhone(
        "env", "services", "production", "--bind", "session", "--provider", "nats", "--json", cwd=app_dir
    )
    assert wrong.exit_code == 2 and wrong.json()["error"]["code"] == "provider_cannot_serve"
    assert "serves broadcast, queue" in wrong.json()["error"]["message"]
    assert local.json("env", "services", "production", cwd=app_dir)["items"] == []  # nothing half-bound

    bound = local.rhone("env", "services", "production", "--bind", "broadcast", "--provider", "nats", cwd=app_dir)
    assert bound.exit_code == 0, bound.stderr
    assert local.rhone("promote", deployed.json()["id"], cwd=app_dir).exit_code == 0
    [alloc] = live_allocations(local)
    url = urlsplit(process_environ(alloc["pid"])["RHONE_SERVICE_BROADCAST_URL"])
    assert (url.scheme, url.username, url.hostname) == ("nats", alloc["id"], "127.0.0.1")
    with socket.create_connection(("127.0.0.1", url.port), timeout=5) as sock:
        sock.recv(4096)  # INFO
        hello = {"user": url.username, "pass": url.password, "verbose": False}
        sock.sendall(f"CONNECT {json.dumps(hello)}\r\nPING\r\n".encode())
        assert sock.recv(64).startswith(b"PONG")
        time.sleep(0.1)
        row = next(r for r in local.json("env", "services", "production", cwd=app_dir)["items"])
        connected = {a["allocation_id"]: a["connections"] for a in row["allocations"]}
        assert (row["provider"], row["engine_up"], connected[alloc["id"]]) == ("nats", True, 1)


def test_promote_says_plainly_when_live_sessions_will_restart(local, tmp_path):
    app_dir = linked(local, hello_app(tmp_path))  # keeps server sessions (the default) and binds no store
    first = local.rhone("deploy", "--promote", "--json", cwd=app_dir, timeout=120)
    assert first.exit_code == 0 and first.json()["promotion"]["live_sessions"] is None  # nothing served before
    assert "restart" not in first.stderr
    (app_dir / "app.py").write_text((app_dir / "app.py").read_text().replace('VERSION = "', 'VERSION = "2-'))
    second = local.rhone("deploy", "--promote", "--json", cwd=app_dir, timeout=120)
    assert second.exit_code == 0, second.stderr
    assert second.json()["promotion"]["live_sessions"] == "restart"
    assert "production has no session store" in second.stderr and "--bind session" in second.stderr

    assert local.rhone("env", "services", "production", "--bind", "session", cwd=app_dir).exit_code == 0
    deployed = local.json("deploy", cwd=app_dir, timeout=120)
    rolled = local.rhone("promote", deployed["id"], "--json", cwd=app_dir)
    assert rolled.exit_code == 0 and rolled.json()["live_sessions"] == "resume"
    assert "no session store" not in rolled.stderr


def test_a_sql_session_store_is_a_provisioned_database_of_the_lane(local, tmp_path):
    app_dir = linked(local, hello_app(tmp_path))
    bound = local.rhone("env", "services", "preview", "--bind", "session", "--provider", "sql", "--json", cwd=app_dir)
    assert bound.exit_code == 0, bound.stderr
    [row] = bound.json()["items"]
    assert (row["provider"], row["engine_up"]) == ("sql", None)  # no engine: a database file
    deployed = local.json("deploy", cwd=app_dir, timeout=120)
    [alloc] = [a for a in live_allocations(local, "preview") if a["deployment_id"] == deployed["id"]]
    url = process_environ(alloc["pid"])["RHONE_SERVICE_SESSION_URL"]
    assert url.startswith("sqlite:////") and url.endswith("/_session.sqlite3")
    path = url.removeprefix("sqlite:///")
    assert path.startswith(str(local.data_dir)) and Path(path).is_file()  # outside every artifact, kept
    assert not list((local.data_dir / "services").glob("**/redis"))  # no engine was started for it
