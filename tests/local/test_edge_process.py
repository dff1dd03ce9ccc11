"""A real edge process, fed by the real API over its /v1/edge interface, in front of small app servers on loopback.

The control database is driven directly (the same rows promotions and the runner write: `World` from
test_edge_routes.py); the API (uvicorn on port 0, in a thread) serves the feed and takes the reports; the edge runs
as `python -m rhone_local edge` under its supervisor. What must hold:
- a route move, and an allocation leaving `ready`, reach the edge process; `wait_applied` (what promotion waits on)
  returns only once the next request through the edge is served by the new owner;
- a gap fails closed until a snapshot verifies; an edge whose feed is lost fails closed at its lease;
- the drain's view of open connections: a WebSocket held through the edge counts until it closes — never 0 before;
- kill -9 of the edge process: the supervisor starts another, which serves the committed owner.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from rhone_local.edge import Edge
from rhone_local.edge_feed import EDGE_LEASE_SECONDS, EdgeFeed
from rhone_local.edge_supervisor import EdgeSupervisor
from rhone_local.notify import ChangeNotifier
from rhone_local.server import standalone_api
from rhone_local.store import Store
from tests.e2e.helpers import wait_until

from .test_edge_routes import World

pytestmark = pytest.mark.slow
WEB = "web--production"
# The short lease of the lapse test (the others run on EDGE_LEASE_SECONDS): long enough that, between its feed's
# first refused poll and the lapse, the edge answers many requests even on a busy machine.
LEASE = 4.5
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
UPGRADE = f"GET /ws HTTP/1.1\r\nHost: {WEB}.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".encode()


class Backend:
    """An app allocation: answers every request with its name (keep-alive), and `/ws` with a 101 and an echo."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn, contextlib.suppress(OSError):
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                if head.split(b" ", 2)[1] == b"/ws":
                    conn.sendall(SWITCHING)
                    while data := buffer or conn.recv(65536):
                        buffer = b""
                        conn.sendall(data.upper())
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(self.name), self.name))

    def close(self) -> None:
        self.sock.close()


@dataclass
class EdgeStack:
    world: World
    feed: EdgeFeed
    edges: EdgeSupervisor

    @property
    def port(self) -> int:
        return self.edges.port

    def get(self, host: str = f"{WEB}.localhost") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/", headers={"Host": host})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def allocate(self, deployment_id: str, backend: Backend, env: str = "production") -> str:
        alloc_id, _ = self.world.allocate(deployment_id, env)
        with self.world.store.write() as c:
            c.execute("UPDATE allocations SET port = ? WHERE id = ?", (backend.port, alloc_id))
        return alloc_id

    def edge_pids(self) -> list[int]:
        return self.edges.pids()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[EdgeStack]:
    """An edge process on the product's lease: a busy machine never makes it lapse in the middle of a test."""
    yield from _stack(tmp_path, EDGE_LEASE_SECONDS)


@pytest.fixture
def short_lease_stack(tmp_path: Path) -> Iterator[EdgeStack]:
    """An edge process whose lease lapses LEASE seconds after its feed last answered: for the test of that lapse."""
    yield from _stack(tmp_path, LEASE)


def _stack(tmp_path: Path, lease: float) -> Iterator[EdgeStack]:
    store = Store(tmp_path / "rhone.db")
    ids = store.bootstrap(workspace="local", owner="owner", token_hash="x", region="local-1", cell="local-1a")
    feed = EdgeFeed(store)
    world = World(store, Edge(feed), ids["workspace_id"], ids["region_id"], ids["cell_id"])
    world.add_app("web")
    sock = socket.create_server(("127.0.0.1", 0))
    app = standalone_api(store, ChangeNotifier(), edge_feed=feed)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started)
    api_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    edges = EdgeSupervisor(feed, host="127.0.0.1", port=0, api_url=api_url, data_dir=tmp_path, lease=lease)
    feed.start()
    edges.start()
    try:
        yield EdgeStack(world, feed, edges)
    finally:
        edges.stop()
        feed.stop()
        server.should_exit = True
        thread.join(10)
        sock.close()
        store.close()
        assert not edges.pids()


def _reported(stack: EdgeStack) -> bool:
    return any(e.version is not None and e.version == stack.feed.version for e in stack.feed.edges())


def test_route_moves_and_allocations_leaving_ready_reach_the_edge_process(stack: EdgeStack) -> None:
    world = stack.world
    a, b = Backend("A"), Backend("B")
    first, second = world.deploy("web"), world.deploy("web")
    stack.allocate(first, a)
    second_alloc = stack.allocate(second, b)
    assert wait_until(lambda: _reported(stack), timeout=30)
    assert stack.get()[0] == 404  # nothing owns the route yet

    for owner, name in ((first, b"A"), (second, b"B"), (first, b"A"), (second, b"B")):
        event = world.move(owner)
        applied = stack.feed.wait_applied(event["seq"], timeout=30)  # what promotion's edge_propagating waits on
        assert applied is not None and all(seq >= event["seq"] for seq in applied.values())
        assert stack.get() == (200, name)  # the very next request: the new owner, never the old one

    # The owner's only allocation leaves `ready` (a drain begins): the edge stops sending it requests.
    world.set_allocation(second_alloc, "draining")
    assert wait_until(lambda: stack.get()[0] == 503, timeout=30)
    status, body = stack.get()
    assert status == 503 and b"has no ready allocation" in body
    assert stack.get(f"dep-{second.removeprefix('dep_')}.localhost")[0] == 503  # its lane URL too
    assert stack.get("dep-000000000000000000000000.localhost")[0] == 404


def test_a_gap_fails_closed_until_a_snapshot_verifies(stack: EdgeStack, monkeypatch: pytest.MonkeyPatch) -> None:
    world = stack.world
    a, rogue = Backend("A"), Backend("rogue")
    owner, other = world.deploy("web"), world.deploy("web")
    stack.allocate(owner, a)
    stack.allocate(other, rogue)
    event = world.move(owner)
    assert stack.feed.wait_applied(event["seq"], timeout=30) is not None
    assert stack.get() == (200, b"A")

    # The snapshot cannot be read (the store is busy), then a row lands beyond the next sequence number, naming
    # another deployment at a higher epoch: the edge sees the gap and must not route until a snapshot verifies.
    real_snapshot = world.store.route_snapshot

    def busy():
        raise OSError("the store is busy")

    monkeypatch.setattr(world.store, "route_snapshot", busy)
    world.insert_event(seq=event["seq"] + 2, route_key=WEB, epoch=99, deployment_id=other)
    assert wait_until(lambda: stack.get()[0] == 503, timeout=30)
    for _ in range(20):
        status, body = stack.get()
        assert status == 503 and b"failing closed" in body  # never the rogue, never the (maybe stale) owner

    monkeypatch.setattr(world.store, "route_snapshot", real_snapshot)
    assert wait_until(lambda: stack.get() == (200, b"A"), timeout=30)  # the committed owner, not the gapped row's


def test_an_edge_that_lost_its_feed_fails_closed_at_its_lease(
    short_lease_stack: EdgeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = short_lease_stack
    world = stack.world
    a = Backend("A")
    owner = world.deploy("web")
    stack.allocate(owner, a)
    assert stack.feed.wait_applied(world.move(owner)["seq"], timeout=30) is not None
    assert stack.get() == (200, b"A")

    refused: list[int] = []

    def unreachable(*_):
        refused.append(1)
        raise OSError("the control plane is away")

    monkeypatch.setattr(stack.feed, "document", unreachable)  # every feed request now fails (500)
    served_after_a_refusal = []

    def lapsed() -> bool:
        polls_refused = len(refused)  # counted before the request: a 200 then came after a refused poll
        status = stack.get()[0]
        if status == 200 and polls_refused:
            served_after_a_refusal.append(polls_refused)
        return status == 503

    assert wait_until(lapsed, timeout=LEASE + 10)
    assert served_after_a_refusal  # a refused poll does not fail it closed: it keeps serving while its lease holds
    status, body = stack.get()
    assert status == 503 and b"lost its feed" in body  # ... and fails closed once the lease lapsed

    monkeypatch.undo()
    assert wait_until(lambda: stack.get() == (200, b"A"), timeout=30)


def test_a_websocket_through_the_edge_holds_the_drain_open_until_it_closes(stack: EdgeStack) -> None:
    world = stack.world
    a, b = Backend("A"), Backend("B")
    first, second = world.deploy("web"), world.deploy("web")
    first_alloc = stack.allocate(first, a)
    stack.allocate(second, b)
    assert stack.feed.wait_applied(world.move(first)["seq"], timeout=30) is not None

    tunnel = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
    tunnel.sendall(UPGRADE)
    assert tunnel.recv(65536).startswith(b"HTTP/1.1 101")
    tunnel.sendall(b"ping")
    assert tunnel.recv(100) == b"PING"

    # The route moves on and A drains, as after a promotion: its WebSocket is still open through the edge.
    assert stack.feed.wait_applied(world.move(second)["seq"], timeout=30) is not None
    world.set_allocation(first_alloc, "draining")
    assert stack.feed.open_connections(a.port) >= 1  # asked at once: the edge has not reported yet — still open
    assert wait_until(lambda: _reported(stack), timeout=30)
    for _ in range(20):  # reported after the edge took A out of rotation: exactly the tunnel
        assert stack.feed.open_connections(a.port) == 1
        time.sleep(0.05)
    tunnel.sendall(b"still here")
    assert tunnel.recv(100) == b"STILL HERE"
    assert stack.get() == (200, b"B")  # new requests go to the new owner meanwhile

    tunnel.close()
    assert wait_until(lambda: stack.feed.open_connections(a.port) == 0, timeout=30)


def test_the_edge_process_comes_back_after_kill_9_and_serves_the_committed_owner(stack: EdgeStack) -> None:
    world = stack.world
    a, b = Backend("A"), Backend("B")
    first, second = world.deploy("web"), world.deploy("web")
    stack.allocate(first, a)
    stack.allocate(second, b)
    assert stack.feed.wait_applied(world.move(first)["seq"], timeout=30) is not None
    assert stack.get() == (200, b"A")
    [pid] = stack.edge_pids()

    os.kill(pid, signal.SIGKILL)
    world.move(second)  # the route moves while no edge runs: the next one starts from a snapshot
    # A client connecting meanwhile waits in the listening socket's backlog (the supervisor holds it open) and is
    # served by the next edge process: no refused connection.
    assert stack.get() == (200, b"B")
    [restarted] = stack.edge_pids()
    assert restarted != pid and stack.edges.restarts == 1
    assert [e.edge_id for e in stack.feed.edges()] == [stack.edges.edge_ids[0]]  # the dead one's reports are gone
