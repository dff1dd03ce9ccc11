"""The runner with real processes, in process: how start commands run, drains that end by themselves, process
identity, readiness kinds and failures. The store is real (a temporary data dir); the reconciler's rounds are driven by
the test (`runner.tick()`), so a test sees each step it asserts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rhone_local import processes
from rhone_local.allocation_ports import PORT_ATTEMPTS
from rhone_local.artifacts import record_tree, store_manifest
from rhone_local.pipeline import build_pipeline
from rhone_local.runner import Runner
from rhone_local.store import now_iso

from .conftest import LocalEnv

APP = textwrap.dedent(
    """\
    import os, signal, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    args = sys.argv[1:]
    if "exit" in args:
        print("exiting at once", flush=True)
        sys.exit(3)
    if "ignore-term" in args:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "fork" in args:
        for _ in range(2):
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if "clean-child" in args:  # as nginx does: the server is a child whose environment holds only what it needs
        child = subprocess.Popen([sys.executable, sys.argv[0]], env={"PORT": os.environ["PORT"]})
        sys.exit(child.wait())
    status = 426 if "websocket-only" in args else 200

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    try:
        server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    except OSError:
        if "stay-on-a-taken-port" not in args:
            raise
        time.sleep(600)  # an app that neither listens nor exits
    print(f"pid {os.getpid()} listening", flush=True)
    server.serve_forever()
    """
)
pytestmark = pytest.mark.slow


@pytest.fixture
def runner(local: LocalEnv) -> Runner:
    return build_pipeline(local.store, local.data_dir, edge_port=None).runner


def deployment(local: LocalEnv, runner: Runner, tmp_path: Path, start: str, **process: Any) -> dict[str, Any]:
    """A preview deployment of APP (its rows written directly: the pipeline is not under test here)."""
    source = tmp_path / f"src-{local.name('d')}"
    source.mkdir()
    (source / "app.py").write_text(APP)
    (source / "child.py").write_text("import time\ntime.sleep(600)\n")
    digest = store_manifest(runner.blobs, record_tree(runner.blobs, source))
    project = local.create_project()
    app = local.create_app(project)
    environment = local.store.environment(app["id"], "preview")
    config = {"process": {"start": start, "health_path": "/healthz", "readiness_timeout": 10, **process}, "build": {}}
    deployment_id = f"dep_{local.name('x')}"
    with local.store.write() as c:
        c.execute(
            "INSERT INTO deployments VALUES (?, ?, ?, ?, 'op_x', 'preview_ready', 0, ?, ?, ?, '{}', '{}', NULL, ?, ?)",
            (deployment_id, local.workspace_id, app["id"], environment["id"], digest, digest, _json(config),
             now_iso(), now_iso()),
        )  # fmt: skip
    return local.store.deployment(deployment_id)


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def start(local: LocalEnv, runner: Runner, dep: dict[str, Any]) -> dict[str, Any]:
    environment = local.store.one("SELECT * FROM environments WHERE id = ?", dep["environment_id"])
    return runner.ensure_running(dep, environment)


def members(alloc: dict[str, Any]) -> list[int]:
    return [p.pid for p in processes.allocation_processes(alloc["id"], alloc["pid"], alloc["pid_start_time"])]


def gone(alloc: dict[str, Any], timeout: float = 30) -> bool:
    """Whether the allocation's leader has died (a SIGKILL is delivered asynchronously; reaped once it has)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not processes.leader_alive(alloc["pid"], alloc["pid_start_time"]):
            return True
        time.sleep(0.025)
    return False


def tick_until_ended(runner: Runner, alloc_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runner.tick()
        row = runner.store.allocation(alloc_id)
        if row["state"] in ("stopped", "failed"):
            return row
        time.sleep(0.05)
    raise AssertionError(f"{alloc_id} never ended: {runner.store.allocation(alloc_id)}")


# -- how a start command runs -----------------------------------------------------------------------------------------
def test_the_app_itself_is_the_process_the_runner_signals(local, runner, tmp_path) -> None:
    """A plain command is exec'd directly: the allocation's pid is the app's (it prints its own pid)."""
    alloc = start(local, runner, deployment(local, runner, tmp_path, "python3 app.py"))
    assert alloc["state"] == "ready", alloc["health"]
    log = runner.log_path(alloc["id"]).read_text()
    assert f"pid {alloc['pid']} listening" in log
    assert alloc["pid_start_time"] == processes.start_time(alloc["pid"])
    runner.drain(alloc, "test over", timeout=0)
    assert tick_until_ended(runner, alloc["id"])["state"] == "stopped"


# -- drains ---------------------------------------------------------------------------------------------------------
def test_a_drain_waits_for_open_connections_and_reports_them_drained(local, runner, tmp_path) -> None:
    open_now = {"count": 2}
    runner.open_connections = lambda port: open_now["count"]
    alloc = start(local, runner, deployment(local, runner, tmp_path, "python3 app.py", drain_timeout=600))
    draining = runner.drain(alloc, "route moved")
    assert draining["state"] == "draining" and draining["health"]["drain"]["open_connections"] == 2
    for _ in range(5):  # connections open, deadline far: it keeps serving them
        assert runner.tick() == []
    assert runner.store.allocation(alloc["id"])["state"] == "draining"
    assert members(alloc) == [alloc["pid"]]
    open_now["count"] = 0
    ended = tick_until_ended(runner, alloc["id"])
    assert ended["state"] == "stopped"
    assert ended["health"]["drain"]["outcome"] == "drained" and ended["health"]["drain"]["cut_connections"] == 0
    assert members(alloc) == []


def test_a_drain_past_its_deadline_is_cut_and_says_how_many_connections_it_cut(local, runner, tmp_path) -> None:
    runner.open_connections = lambda port: 3
    alloc = start(local, runner, deployment(local, runner, tmp_path, "python3 app.py", drain_timeout=0))
    runner.drain(alloc, "route moved")
    ended = tick_until_ended(runner, alloc["id"])
    assert ended["state"] == "stopped"
    assert (ended["health"]["drain"]["outcome"], ended["health"]["drain"]["cut_connections"]) == ("cut", 3)


def test_an_app_that_ignores_sigterm_is_killed_after_the_grace(local, runner, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("rhone_local.runner.STOP_GRACE_SECONDS", 0.5)
    alloc = start(local, runner, deployment(local, runner, tmp_path, "python3 app.py ignore-term"))
    runner.drain(alloc, "test", timeout=0)
    runner.tick()  # SIGTERM, ignored
    assert members(alloc) == [alloc["pid"]]
    ended = tick_until_ended(runner, alloc["id"])
    assert ended["state"] == "stopped" and ended["health"]["drain"]["killed"] is True
    assert members(alloc) == []


@pytest.mark.parametrize("command", ["python3 app.py fork", "python3 child.py & python3 app.py"])
def test_no_child_outlives_its_allocation(local, runner, tmp_path, command) -> None:
    """Children the app forks, and the orphans of a shell wrapper, stop with the allocation."""
    alloc = start(local, runner, deployment(local, runner, tmp_path, command))
    assert alloc["state"] == "ready", alloc["health"]
    before = members(alloc)
    assert len(before) == 3  # the leader (app or shell) and two more
    runner.drain(alloc, "test", timeout=0)
    tick_until_ended(runner, alloc["id"])
    assert [pid for pid in before if processes.process_info(pid) and processes.process_info(pid).state != "Z"] == []


def test_the_wrappers_children_stop_when_the_leader_dies(local, runner, tmp_path) -> None:
    alloc = start(local, runner, deployment(local, runner, tmp_path, "python3 child.py & python3 app.py"))
    os.kill(alloc["pid"], signal.SIGKILL)  # the shell goes; its children are orphans now
    assert gone(alloc)
    assert [a["id"] for a in runner.check_processes()] == [alloc["id"]]
    ended = tick_until_ended(runner, alloc["id"])
    assert ended["state"] == "failed" and ended["health"]["error"] == "process exited"
    assert members(alloc) == []


def test_a_restarted_runner_ends_a_drain_by_its_stored_deadline(local, runner, tmp_path) -> None:
    """The deadline is on the row: a new Runner (a restarted server, whose edge lost every connection) ends it."""
    runner.open_connections = lambda port: 5
    alloc = start(local, runner, deployment(local, runner, tmp_path, "python3 app.py", drain_timeout=600))
    runner.drain(alloc, "route moved")
    runner.tick()
    restarted = Runner(local.store, runner.blobs, local.data_dir)
    assert restarted.reconcile() == []  # a draining allocation is neither adopted nor failed
    ended = tick_until_ended(restarted, alloc["id"])
    assert ended["state"] == "stopped" and ended["health"]["drain"]["outcome"] == "drained"
    assert members(alloc) == []


# -- process identity -----------------------------------------------------------------------------------------------
@pytest.fixture
def unrelated() -> subprocess.Popen:
    """A process that is nobody's allocation, leading its own group (so killpg on its pid would reach it)."""
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize("state", ["ready", "draining"])
def test_a_reused_pid_is_never_signalled(local, runner, tmp_path, unrelated, state) -> None:
    """After a crash an allocation's pid belongs to an unrelated process: reconcile and drains leave it alone."""
    alloc = start(local, runner, deployment(local, runner, tmp_path, "python3 app.py"))
    os.kill(alloc["pid"], signal.SIGKILL)
    assert gone(alloc)
    with local.store.write() as c:  # the store still names the dead allocation's pid — now the unrelated one's
        c.execute(
            "UPDATE allocations SET pid = ?, state = ?, drain_deadline = ? WHERE id = ?",
            (unrelated.pid, state, time.time(), alloc["id"]),
        )
    before = local.store.allocation(alloc["id"])
    restarted = Runner(local.store, runner.blobs, local.data_dir)
    assert restarted.reconcile() == []
    ended = tick_until_ended(restarted, alloc["id"])
    assert ended["state"] == ("failed" if state == "ready" else "stopped")
    assert unrelated.poll() is None  # still running: never signalled
    assert processes.process_info(unrelated.pid).state != "Z"
    assert before["pid_start_time"] != processes.start_time(unrelated.pid)


# -- readiness ------------------------------------------------------------------------------------------------------
def test_an_app_that_exits_at_once_fails_readiness_with_its_log(local, runner, tmp_path) -> None:
    alloc = start(local, runner, deployment(local, runner, tmp_path, "python3 app.py exit"))
    assert alloc["state"] == "failed"
    assert alloc["health"]["last"] == "the process exited with status 3"
    assert "exiting at once" in alloc["health"]["log_tail"]
    assert "GET http://127.0.0.1:" in alloc["health"]["summary"] and "/healthz" in alloc["health"]["summary"]


def test_a_websocket_only_server_fails_http_readiness_and_passes_tcp(local, runner, tmp_path) -> None:
    http = start(
        local, runner, deployment(local, runner, tmp_path, "python3 app.py websocket-only", readiness_timeout=5)
    )
    assert http["state"] == "failed"
    assert http["health"]["last"] == "HTTP 426"
    assert "(http readiness)" in http["health"]["summary"] and "/healthz" in http["health"]["summary"]
    assert gone(http), "the failed allocation's leader is still alive"
    assert members(http) == []
    tcp = start(local, runner, deployment(local, runner, tmp_path, "python3 app.py websocket-only", readiness="tcp"))
    assert tcp["state"] == "ready" and tcp["health"]["probe"] == "tcp"
    runner.drain(tcp, "test over", timeout=0)
    tick_until_ended(runner, tcp["id"])


class Squatter:
    """Another process's listener on a port: silent, or answering 200 to every GET (a readiness probe included)."""

    def __init__(self, port: int, answering: bool) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler, bind_and_activate=False)
        self.server.server_bind()
        self.server.server_activate()
        self.port, self.answering = port, answering
        if answering:
            threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def listening(self) -> bool:
        return self.server.socket.fileno() != -1

    def close(self) -> None:
        if self.answering:
            self.server.shutdown()
        self.server.server_close()


class PortTakenAtRelease:
    """A probe of the runner's port reservations whose port another process takes the moment the runner lets it go —
    the window no reservation can close."""

    def __init__(self, probe: socket.socket, squatters: list[Squatter], answering: bool) -> None:
        self.probe, self.squatters, self.answering = probe, squatters, answering

    def getsockname(self) -> tuple[str, int]:
        return self.probe.getsockname()

    def close(self) -> None:
        if self.probe.fileno() != -1:
            port = self.probe.getsockname()[1]
            self.probe.close()
            self.squatters.append(Squatter(port, self.answering))


@pytest.fixture
def steal_ports(runner: Runner, monkeypatch):
    """`steal_ports(count, answering)`: the first `count` ports the runner chooses are taken between its choice and
    the app's bind; the squatters, stopped after the test."""
    squatters: list[Squatter] = []

    def steal(count: int, answering: bool = False) -> list[Squatter]:
        hold = runner.ports.hold

        def hold_then_lose() -> Any:
            probe = hold()
            return PortTakenAtRelease(probe, squatters, answering) if len(squatters) < count else probe

        monkeypatch.setattr(runner.ports, "hold", hold_then_lose)
        return squatters

    yield steal
    for squatter in squatters:
        squatter.close()


@pytest.mark.parametrize(
    ("start_command", "answering", "reason"),
    [
        ("python3 app.py", False, "the app could not bind it: address already in use"),
        # The taker answers the readiness probe while the app, unable to bind, neither listens nor exits: the
        # listener's owner gives it away.
        ("python3 app.py stay-on-a-taken-port", True, "served by a process that is not the allocation's"),
    ],
)
def test_a_port_taken_between_choice_and_start_is_retried_on_another(
    local, runner, tmp_path, steal_ports, start_command, answering, reason
) -> None:
    dep = deployment(local, runner, tmp_path, start_command)
    squatters = steal_ports(1, answering)
    alloc = start(local, runner, dep)
    assert alloc["state"] == "ready", alloc["health"]
    assert alloc["port"] != squatters[0].port
    assert alloc["health"]["port_retries"] == [{"port": squatters[0].port, "reason": reason}]
    assert [a["id"] for a in runner.allocations_of(dep["id"])] == [alloc["id"]]  # no second allocation
    assert wait_for(lambda: members(alloc) == [alloc["pid"]])  # the first app is gone; nothing of it is left
    assert len(squatters) == 1 and squatters[0].listening()  # the taker was left alone
    assert runner.ports._reserved == set()  # every reservation settled
    runner.drain(alloc, "test over", timeout=0)
    assert tick_until_ended(runner, alloc["id"])["state"] == "stopped"


def test_a_server_whose_environment_is_cleared_is_still_the_allocations(local, runner, tmp_path) -> None:
    """nginx clears its workers' environment and writes its process title over its own: the listener on the port
    belongs to the allocation by descent from its leader, not by RHONE_ALLOCATION_ID. It used to be taken for a
    process that stole the port, and the allocation failed after giving up every port."""
    dep = deployment(local, runner, tmp_path, "python3 app.py clean-child")
    alloc = start(local, runner, dep)
    assert alloc["state"] == "ready", alloc["health"]
    assert not alloc["health"].get("port_retries")
    runner.drain(alloc, "test over", timeout=0)
    assert tick_until_ended(runner, alloc["id"])["state"] == "stopped"


def test_port_retries_are_bounded_and_the_allocation_fails_naming_them(local, runner, tmp_path, steal_ports) -> None:
    dep = deployment(local, runner, tmp_path, "python3 app.py")
    squatters = steal_ports(100)
    alloc = start(local, runner, dep)
    ports = [s.port for s in squatters]
    assert len(ports) == PORT_ATTEMPTS  # then it stopped trying
    assert alloc["state"] == "failed"
    assert [r["port"] for r in alloc["health"]["port_retries"]] == ports[:-1]
    assert alloc["port"] == ports[-1] and "Address already in use" in alloc["health"]["log_tail"]
    assert [a["id"] for a in runner.allocations_of(dep["id"])] == [alloc["id"]]
    assert members(alloc) == [] and runner.ports._reserved == set()


def wait_for(condition: Any, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_start_command_naming_a_missing_program_fails_cleanly(local, runner, tmp_path) -> None:
    alloc = start(local, runner, deployment(local, runner, tmp_path, "no-such-program-xyz --flag"))
    assert alloc["state"] == "failed"
    assert "cannot run the start command" in alloc["health"]["error"]


def test_shutdown_stops_every_allocation_within_its_bound(local, runner, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("rhone_local.runner.SHUTDOWN_GRACE_SECONDS", 0.5)
    monkeypatch.setattr("rhone_local.runner.STOP_GRACE_SECONDS", 0.5)
    runner.open_connections = lambda port: 1  # a connection that never closes: shutdown bounds it
    stubborn = start(local, runner, deployment(local, runner, tmp_path, "python3 app.py ignore-term"))
    plain = start(local, runner, deployment(local, runner, tmp_path, "python3 app.py", drain_timeout=600))
    runner.stop_all("Rhone Local stopped", drain_seconds=0.5)
    for alloc in (stubborn, plain):
        row = local.store.allocation(alloc["id"])
        assert row["state"] == "stopped", row
        assert row["health"]["drain"]["outcome"] == "cut"
        assert gone(alloc), "the allocation's leader outlived the shutdown"
        assert members(alloc) == []
