"""Edges of several nodes (docs/multi-node.md, "Nodes"): an edge another node registered is recognised by this API
node, and `wait_applied` (promotion's `edge_propagating`) waits for every live edge of every node — also those that
report to another API node. Several `Store` objects on one SQLite file stand for the nodes; the store's clock is
replaced, so a lease passing is a number, never a wait.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from rhone_local.edge import Edge
from rhone_local.edge_feed import EDGE_LEASE_SECONDS, EdgeFeed
from rhone_local.edge_supervisor import EdgeSupervisor
from rhone_local.notify import ChangeNotifier
from rhone_local.server import standalone_api
from rhone_local.store import Store
from rhone_local.store.nodes import NodeStore
from tests.e2e.helpers import wait_until

from .test_edge_process import WEB, Backend
from .test_edge_routes import World


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [2_000_000.0]
    monkeypatch.setattr(NodeStore, "node_clock", lambda self: now[0])
    return now


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[Store]]:
    """Three stores on one database: API node A, API node C, and edge-only node B."""
    first = Store(tmp_path / "rhone.db")
    first.bootstrap(workspace="local", owner="owner", token_hash="x", region="local-1", cell="local-1a")
    opened = [first, Store(tmp_path / "rhone.db"), Store(tmp_path / "rhone.db")]
    yield opened
    for store in opened:
        store.close()


def test_an_edge_of_another_node_is_recognised_and_waited_for_on_every_api_node(stores: list[Store], clock):
    api_a, api_c = EdgeFeed(stores[0], "api-a"), EdgeFeed(stores[1], "api-c")
    edge_only = EdgeFeed(stores[2], "edge-b")  # the edge-only node's registry: it serves no feed
    token = edge_only.register("edge-0.1@edge-b")
    assert api_a.edge_for_token("edge_not-a-token") is None
    edge = api_a.edge_for_token(token)  # the edge follows node A's API
    assert edge is not None and edge.edge_id == "edge-0.1@edge-b"
    assert api_c.wait_applied(1, timeout=0) == {}  # never heard from: it serves nothing yet, nothing to wait for

    api_a.report(edge, 3, 1, {})
    assert api_a.wait_applied(3, timeout=0) == {"edge-0.1@edge-b": 3}
    assert api_c.wait_applied(4, timeout=0) is None  # node C waits for an edge that reports to node A
    api_a.report(edge, 4, 1, {})
    assert api_c.wait_applied(4, timeout=0) == {"edge-0.1@edge-b": 4}

    clock[0] += EDGE_LEASE_SECONDS + 1  # its reports stop: past its lease it serves no route, so nobody waits
    assert api_c.wait_applied(5, timeout=0) == {}
    edge_only.forget("edge-0.1@edge-b")
    assert api_c.edge_for_token(token) is None  # a forgotten edge's token opens nothing on another node
    assert stores[0].count("edges") == 0


@pytest.mark.slow
def test_an_edge_only_node_follows_another_node_s_api_and_promotion_waits_for_it(tmp_path: Path, stores):
    """A real edge process of node `edge-b` (edge role only), started by its own supervisor, follows node A's API
    (uvicorn on port 0): it serves each new owner, and A's `wait_applied` names it."""
    store_a, store_b = stores[0], stores[2]
    feed = EdgeFeed(store_a, "api-a")
    workspace, region, cell = (store_a.one(f"SELECT id FROM {table}") for table in ("workspaces", "regions", "cells"))
    world = World(store_a, Edge(feed), workspace["id"], region["id"], cell["id"])
    world.add_app("web")
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(standalone_api(store_a, ChangeNotifier(), edge_feed=feed), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    edges = None
    backends = [Backend("A"), Backend("B")]
    try:
        assert wait_until(lambda: server.started)
        feed.start()
        api_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        registry = EdgeFeed(store_b, "edge-b")
        edges = EdgeSupervisor(registry, host="127.0.0.1", port=0, api_url=api_url, data_dir=tmp_path)
        edges.start()
        deployments = [world.deploy("web"), world.deploy("web")]
        for deployment, backend in zip(deployments, backends, strict=True):
            alloc_id, _ = world.allocate(deployment, "production")
            with store_a.write() as c:
                c.execute("UPDATE allocations SET port = ? WHERE id = ?", (backend.port, alloc_id))
        # The edge authenticated at node A with the identity node B registered, and applies A's table.
        assert wait_until(lambda: any(e.version == feed.version for e in feed.edges()), timeout=30)
        for deployment, name in zip([*deployments, deployments[0]], (b"A", b"B", b"A"), strict=True):
            event = world.move(deployment)
            applied = feed.wait_applied(event["seq"], timeout=30)
            assert applied is not None and set(applied) == {"edge-0.1@edge-b"}, applied
            assert applied["edge-0.1@edge-b"] >= event["seq"]
            assert _get(edges.port) == (200, name)
        assert {r["node"] for r in store_a.all("SELECT node FROM edges")} == {"edge-b"}
    finally:
        if edges is not None:
            edges.stop()
            assert not edges.pids()
        feed.stop()
        server.should_exit = True
        thread.join(10)
        sock.close()
        for backend in backends:
            backend.close()


def _get(port: int) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": f"{WEB}.localhost"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_a_request_of_a_forgotten_edge_in_flight_does_not_bring_it_back(stores: list[Store], monkeypatch) -> None:
    """An edge process killed mid-request: its supervisor forgets it, and a request of its that reads the store row
    before the row is deleted must not register it again (edges() is what promotions wait for)."""
    feed = EdgeFeed(stores[0])
    token = feed.register("edge-0.1")
    # The window of the race: forget() has dropped the edge from memory, its row is not deleted yet.
    monkeypatch.setattr(stores[0], "forget_edge", lambda edge_id: None)
    feed.forget("edge-0.1")
    assert feed.edge_for_token(token) is None
    assert [edge.edge_id for edge in feed.edges()] == []
    # An identity registered again (a restarted node reuses its edge ids) is live again.
    again = feed.register("edge-0.1")
    assert feed.edge_for_token(again) is not None and feed.edge_for_token(token) is None
    assert [edge.edge_id for edge in feed.edges()] == ["edge-0.1"]
