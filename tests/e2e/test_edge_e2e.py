"""The edge end to end: what network clients of a real Rhone Local can and cannot do to it (and to the API beside it).

The server is started by the real `rhone local up`; its listeners, relay and connection cap are the ones `serve`
wires. See docs/security.md, "Network clients of the edge".
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from rhone_cli.services.local import process_alive
from rhone_local.edge_relay import client_cap
from tests.conftest import REPO, RHONE_BIN
from tests.e2e.helpers import HELLO, wait_until


def _open_file_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc/<pid>/limits")


def test_the_api_answers_while_more_clients_than_the_cap_hold_the_edge(local_env) -> None:
    """More idle connections than the edge accepts: the excess is refused with a 503, the API keeps answering.

    Rhone Local runs under a small open-file limit (soft 128, hard 256) so a few hundred loopback connections are
    enough to exhaust it: without a cap the edge would accept until the process has no descriptor left, and the API's
    own accept() would fail with it."""

    def small_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256))

    ports = ["--port", str(local_env.port), "--edge-port", str(local_env.edge_port)]
    started = subprocess.run(
        [str(RHONE_BIN), "local", "up", *ports, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=local_env.cwd,
        env=local_env.environ,
        preexec_fn=small_file_limit,
    )
    assert started.returncode == 0, started.stderr
    pid = json.loads(started.stdout)["pid"]
    local_env.started.append(pid)
    assert _open_file_limits(pid) == (256, 256)  # the soft limit was raised to the hard one at start
    cap = client_cap(256)

    connections = 300
    clients = [socket.create_connection(("127.0.0.1", local_env.edge_port), timeout=10) for _ in range(connections)]
    try:
        health = httpx.get(f"{local_env.api_url}/v1/health", timeout=10)
        assert health.status_code == 200

        # Every connection past the cap got the refusal, then the end of the connection; the others got nothing.
        answers: dict[socket.socket, bytes] = {}
        selector = selectors.DefaultSelector()
        for sock in clients:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            answers[sock] = b""

        def read_refusals() -> bool:
            for key, _ in selector.select(timeout=0.2):
                sock = key.fileobj
                try:
                    chunk = sock.recv(65536)
                except (BlockingIOError, ConnectionResetError):
                    chunk = b""
                answers[sock] += chunk
                if not chunk:
                    selector.unregister(sock)
            return sum(a.startswith(b"HTTP/1.1 503") for a in answers.values()) >= connections - cap

        assert wait_until(read_refusals, timeout=30)
        refused = [a for a in answers.values() if a.startswith(b"HTTP/1.1 503")]
        assert len(refused) == connections - cap
        assert all(a.endswith(b"503 the edge is at its connection limit; retry later\n") for a in refused)
        assert all(a == b"" for a in answers.values() if not a.startswith(b"HTTP/1.1 503"))
        selector.close()
        assert httpx.get(f"{local_env.api_url}/v1/health", timeout=10).status_code == 200
    finally:
        for sock in clients:
            sock.close()

    # Once they are gone the edge accepts again, and the refusals were logged — a few lines, not one per refusal.
    answer = httpx.get(f"http://127.0.0.1:{local_env.edge_port}/", headers={"Host": "nowhere.localhost"}, timeout=10)
    assert answer.status_code == 404
    log = (local_env.data_dir / "rhone-local.log").read_text()
    lines = [line for line in log.splitlines() if "client connection(s): already serving its cap" in line]
    assert 1 <= len(lines) <= 3 and f"cap of {cap} concurrent" in lines[0]


# -- lanes and affinity against deployed apps ------------------------------------------------------------------------
SESSIONS = REPO / "tests" / "fixtures" / "sessions"


def _deployed(server, source: Path, root: Path, *, scale: int = 1) -> dict:
    """A copy of `source` deployed and promoted (and scaled) through the real CLI; the deployment document."""
    app_dir = root / source.name
    shutil.copytree(source, app_dir, ignore=shutil.ignore_patterns(".rhone", "__pycache__"))
    assert server.rhone("init", "--link", "--json", cwd=app_dir).exit_code == 0
    document = server.json("deploy", "--promote", cwd=app_dir, timeout=120)
    assert document["promotion"]["state"] == "healthy", document
    if scale > 1:
        assert server.json("app", "scale", "--env", "production", "--instances", str(scale), cwd=app_dir)
    return document["deployment"]


def _allocations(server, deployment_id: str) -> list[dict]:
    """The deployment's allocations with their environment's name, from the store."""
    with sqlite3.connect(server.data_dir / "rhone.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT a.id, a.pid, a.state, e.name AS environment FROM allocations a "
            "JOIN environments e ON e.id = a.environment_id WHERE a.deployment_id = ? ORDER BY a.id",
            (deployment_id,),
        )
        return [dict(r) for r in rows]


def _edge(server, host: str, path: str = "/", **kwargs) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.edge_port}{path}", headers={"Host": host}, timeout=10, **kwargs)


def test_a_deployments_url_reaches_only_its_preview_allocation_never_production(local, tmp_path) -> None:
    deployment = _deployed(local, HELLO, tmp_path)
    lane_host = "dep-" + deployment["id"].removeprefix("dep_") + ".localhost"
    allocations = {a["environment"]: a for a in _allocations(local, deployment["id"]) if a["state"] == "ready"}
    assert set(allocations) == {"preview", "production"}  # one deployment, now serving two lanes

    for _ in range(10):
        answer = _edge(local, lane_host).json()
        assert (answer["environment"], answer["allocation"]) == ("preview", allocations["preview"]["id"])
        production = _edge(local, "hello--production.localhost").json()
        assert (production["environment"], production["allocation"]) == ("production", allocations["production"]["id"])

    # The preview allocation goes: the deployment's URL has nothing of its own lane to offer; production is unmoved.
    os.killpg(allocations["preview"]["pid"], signal.SIGKILL)
    assert wait_until(
        lambda: (
            {a["id"]: a["state"] for a in _allocations(local, deployment["id"])}[allocations["preview"]["id"]]
            == "failed"
        )
    )
    answer = _edge(local, lane_host)
    if answer.status_code == 200:  # a replacement preview allocation already serves the lane: still its own
        assert answer.json()["environment"] == "preview"
    else:
        assert answer.status_code == 503 and "no ready allocation in its own environment" in answer.text
    production = _edge(local, "hello--production.localhost")
    assert production.status_code == 200 and production.json()["allocation"] == allocations["production"]["id"]


def _upgrade(server, host: str, origin: str, cookie: str) -> tuple[bytes, socket.socket]:
    sock = socket.create_connection(("127.0.0.1", server.edge_port), timeout=10)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nCookie: {cookie}\r\nConnection: Upgrade\r\n"
        f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    return head, sock


def test_logins_of_both_session_kinds_hold_behind_three_instances_and_only_a_lost_ones_clients_move(
    local, tmp_path
) -> None:
    deployment = _deployed(local, SESSIONS, tmp_path, scale=3)
    host = f"sessions--production.localhost:{local.edge_port}"
    production = {a["id"]: a for a in _allocations(local, deployment["id"]) if a["environment"] == "production"}
    assert len(production) == 3 and {a["state"] for a in production.values()} == {"ready"}
    clients = [
        httpx.Client(base_url=f"http://127.0.0.1:{local.edge_port}", headers={"Host": host}, timeout=10)
        for _ in range(6)
    ]
    try:
        # Six logins of each kind: each client is pinned to the instance its first request reached.
        home = {}
        for n, client in enumerate(clients):
            first = client.post("/flask/login", content=f"user=u{n}")
            assert first.status_code == 200 and "rhone_affinity" in first.cookies
            home[n] = first.json()["allocation"]
            assert client.post("/express/login", content=f"user=u{n}").json()["allocation"] == home[n]
        assert set(home.values()) == set(production)  # spread over all three

        for _ in range(5):
            for n, client in enumerate(clients):
                for kind in ("flask", "express"):
                    answer = client.get(f"/{kind}/me")
                    assert answer.status_code == 200 and answer.json()["user"] == f"u{n}", (n, kind)
                    assert answer.json()["allocation"] == home[n]
                    assert "rhone_affinity" not in answer.json()["cookie_names"]  # the edge's cookie stays there
                    assert "rhone_affinity" not in answer.headers.get("set-cookie", "")

        # A WebSocket upgrade carries the client's cookies to its own instance; the app's origin check sees the
        # browser's Host and Origin, and its refusal of a foreign Origin passes through unchanged.
        for n, client in enumerate(clients):
            cookies = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
            head, sock = _upgrade(local, host, f"http://{host}", cookies)
            with sock:
                assert head.startswith(b"HTTP/1.1 101") and f"x-allocation: {home[n]}".encode() in head.lower()
                sock.sendall(b"hello")
                assert sock.recv(100) == b"hello"
        head, sock = _upgrade(local, host, "http://evil.example", "")
        with sock:
            assert head.startswith(b"HTTP/1.1 403") and b"does not match host" in head + sock.recv(65536)

        # One instance dies: its clients move (and are told where), everyone else stays, logged in.
        victim = home[0]
        os.killpg(production[victim]["pid"], signal.SIGKILL)
        for n, client in enumerate(clients):
            answers = [client.get("/express/me") for _ in range(3)]
            if home[n] == victim:
                assert "rhone_affinity" in answers[0].headers["set-cookie"]
                moved_to = answers[0].json()["allocation"]
                assert moved_to != victim and answers[0].status_code == 401  # its session died with the instance
                assert [a.json()["allocation"] for a in answers] == [moved_to] * 3
            else:
                assert [(a.status_code, a.json()["allocation"]) for a in answers] == [(200, home[n])] * 3
                assert all("set-cookie" not in a.headers for a in answers)
                assert client.get("/flask/me").json()["user"] == f"u{n}"
    finally:
        for client in clients:
            client.close()


# -- the edge's own process: supervised, and never outliving the server ---------------------------------------------
def _edge_pids(server_pid: int) -> list[int]:
    """The server's edge processes (`python -m rhone_local edge`), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError, IndexError):
            continue
        if parent == server_pid and b"rhone_local edge" in cmdline:
            found.append(int(entry.name))
    return found


def test_the_edge_process_comes_back_after_kill_9_while_the_api_keeps_answering(local, tmp_path) -> None:
    deployment = _deployed(local, HELLO, tmp_path)
    server_pid = local.pid()
    [edge_pid] = _edge_pids(server_pid)
    assert _edge(local, "hello--production.localhost").json()["deployment"] == deployment["id"]
    health: list[int] = []
    stop = threading.Event()

    def poll_the_api() -> None:
        with httpx.Client(base_url=local.api_url, timeout=10) as client:
            while not stop.is_set():
                health.append(client.get("/v1/health").status_code)
                time.sleep(0.01)

    poller = threading.Thread(target=poll_the_api)
    poller.start()
    try:
        os.kill(edge_pid, signal.SIGKILL)
        # Connecting meanwhile is fine: the server holds the listening socket, the next edge process answers.
        answer = _edge(local, "hello--production.localhost")
        assert answer.status_code == 200 and answer.json()["deployment"] == deployment["id"]
        [restarted] = _edge_pids(server_pid)
        assert restarted != edge_pid
        for _ in range(20):
            assert _edge(local, "hello--production.localhost").json()["deployment"] == deployment["id"]
    finally:
        stop.set()
        poller.join(10)
    assert health and set(health) == {200}  # the API never stopped answering
    assert f"edge process {edge_pid} exited" in (local.data_dir / "rhone-local.log").read_text()

    assert local.rhone("local", "down").exit_code == 0
    assert wait_until(lambda: not process_alive(restarted))  # stopped with the server


def test_the_edge_process_stops_when_the_server_dies(local) -> None:
    server_pid = local.pid()
    assert wait_until(lambda: _edge_pids(server_pid))
    [edge_pid] = _edge_pids(server_pid)
    os.kill(server_pid, signal.SIGKILL)
    assert wait_until(lambda: not process_alive(edge_pid), timeout=60)  # its stdin ended with the server
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", local.edge_port), timeout=2).close()  # nothing holds the port
