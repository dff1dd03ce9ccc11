"""The edges' interface to the control plane, without an edge process: `EdgeFeed` and /v1/edge through the real API.

- only an edge identity reaches /v1/edge, and an edge identity reaches nothing else;
- a report is validated like any request (422, and the edge's state is unchanged);
- what promotion reads back (`wait_applied`): every live edge's sequence; a lapsed edge is not waited for;
- what drains read back (`open_connections`): a port out of rotation counts only fresh reports made after the edge
  applied the table that took it out; anything else is unknown, and unknown is "still open" (≥ 1);
- the feed's documents: the table is read after the events, and changes version only when it changes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rhone_local import edge_feed
from rhone_local.edge import Edge
from rhone_local.edge_feed import EdgeFeed
from rhone_local.notify import ChangeNotifier
from rhone_local.server import bootstrap, ensure_topology, standalone_api
from rhone_local.store import Store

from .test_edge_routes import WEB, World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = Store(tmp_path / "rhone.db")
    ids = store.bootstrap(workspace="local", owner="owner", token_hash="x", region="local-1", cell="local-1a")
    w = World(store, Edge(EdgeFeed(store)), ids["workspace_id"], ids["region_id"], ids["cell_id"])
    w.add_app("web")
    yield w
    store.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- who may use /v1/edge ---------------------------------------------------------------------------------------------
def test_only_an_edge_identity_reaches_the_edge_interface_and_it_reaches_nothing_else(tmp_path: Path) -> None:
    store = Store(tmp_path / "rhone.db")
    bootstrap(store, tmp_path)
    ensure_topology(store)
    feed = EdgeFeed(store)
    owner = (tmp_path / "owner.token").read_text().strip()
    edge_token = feed.register("edge-0.1")
    with TestClient(standalone_api(store, ChangeNotifier(), edge_feed=feed)) as client:
        for path, method in (("/v1/edge/feed", "GET"), ("/v1/edge/reports", "POST")):
            kwargs = {"json": {"seq": 1}} if method == "POST" else {}
            refused = client.request(method, path, headers=bearer(owner), **kwargs)  # the workspace owner: no
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "edge_identity_required"
            for headers in ({}, bearer("rhe_forged"), bearer(edge_token + "x")):
                assert client.request(method, path, headers=headers, **kwargs).status_code == 401
        assert [e.reported_at for e in feed.edges()] == [float("-inf")]  # nothing refused reached the feed

        document = client.get("/v1/edge/feed", headers=bearer(edge_token))
        assert document.status_code == 200 and "snapshot" in document.json()["routes"]
        assert client.get("/v1/workspaces/local", headers=bearer(edge_token)).status_code == 401
        assert client.get("/v1/workspaces/local", headers=bearer(owner)).status_code == 200

        feed.forget("edge-0.1")  # its process exited: the identity dies with it
        assert client.get("/v1/edge/feed", headers=bearer(edge_token)).status_code == 401
        assert "/v1/edge/feed" not in client.get("/v1/openapi.json").json()["paths"]
    store.close()


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"seq": -1},
        {"seq": "3"},
        {"seq": 1.5},
        {"seq": True},
        {"version": -2},
        {"open": []},
        {"open": {"http": 1}},
        {"open": {"0": 1}},
        {"open": {"70000": 1}},
        {"open": {"8000": -1}},
        {"open": {"8000": "1"}},
        {"seq": 1, "extra": 1},
    ],
)
def test_a_malformed_report_is_refused_and_changes_nothing(tmp_path: Path, body: object) -> None:
    store = Store(tmp_path / "rhone.db")
    feed = EdgeFeed(store)
    token = feed.register("edge-0.1")
    with TestClient(standalone_api(store, ChangeNotifier(), edge_feed=feed)) as client:
        accepted = client.post("/v1/edge/reports", json={"seq": 4, "open": {"8000": 2}}, headers=bearer(token))
        assert accepted.status_code == 204
        refused = client.post("/v1/edge/reports", json=body, headers=bearer(token))
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
        assert client.post("/v1/edge/reports", content=b"{", headers=bearer(token)).status_code == 400
    [edge] = feed.edges()
    assert (edge.seq, edge.version, edge.open) == (4, None, {8000: 2})
    store.close()


# -- what promotion waits for ----------------------------------------------------------------------------------------
def test_wait_applied_waits_for_every_live_edge_and_never_for_a_lapsed_one(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = EdgeFeed(world.store)
    assert feed.wait_applied(5, timeout=0) == {}  # no edge runs: nothing to wait for
    a = feed.edge_for_token(feed.register("a"))
    b = feed.edge_for_token(feed.register("b"))
    feed.report(a, 5, 1, {})
    feed.report(b, 4, 1, {})
    assert feed.wait_applied(5, timeout=0.2) is None  # b has not applied 5
    threading.Timer(0.1, feed.report, args=(b, 5, 1, {})).start()
    assert feed.wait_applied(5, timeout=10) == {"a": 5, "b": 5}
    feed.report(b, None, 1, {})  # b failed closed after a gap: it has applied nothing until its snapshot
    assert feed.wait_applied(5, timeout=0.1) is None
    # b stops answering: once its lease has lapsed it serves no route by itself, so it is not waited for.
    b.last_contact = time.monotonic() - edge_feed.EDGE_LEASE_SECONDS - 0.1
    assert feed.wait_applied(5, timeout=0) == {"a": 5}


# -- what drains read ------------------------------------------------------------------------------------------------
def test_open_connections_of_a_port_out_of_rotation_count_only_reports_that_know_it(world: World) -> None:
    feed = EdgeFeed(world.store)
    dep = world.deploy("web")
    alloc_id, port = world.allocate(dep)
    feed.refresh()
    edge = feed.edge_for_token(feed.register("edge-0.1"))
    feed.report(edge, 0, feed.version, {port: 2})
    assert feed.open_connections(port) == 2  # in rotation, reported fresh

    world.set_allocation(alloc_id, "draining")  # committed; the feed has not refreshed yet
    assert feed.open_connections(port) == 2  # asking refreshes: the port is out of rotation from this version ...
    retired_at = feed.retired[port]
    feed.report(edge, 0, retired_at - 1, {})  # ... so a report about an older table says nothing about it
    assert feed.open_connections(port) == 1  # unknown counts as open
    feed.report(edge, 0, retired_at, {port: 3})
    assert feed.open_connections(port) == 3
    feed.report(edge, 0, retired_at, {})
    assert feed.open_connections(port) == 0  # the edge knows, and holds none: the drain may end

    edge.reported_at -= edge_feed.REPORT_STALENESS_SECONDS + 1  # a report too old says nothing either
    assert feed.open_connections(port) == 1
    feed.forget("edge-0.1")  # the edge process is gone: its connections died with it
    assert feed.open_connections(port) == 0
    assert feed.open_connections(port + 1) == 0  # a port no edge ever routed to


def test_a_new_edge_counts_as_open_until_it_reports(world: World) -> None:
    feed = EdgeFeed(world.store)
    dep = world.deploy("web")
    alloc_id, port = world.allocate(dep)
    feed.refresh()
    world.set_allocation(alloc_id, "draining")
    feed.register("edge-0.2")  # started (or restarted), not heard from yet
    assert feed.open_connections(port) == 1


# -- the documents ---------------------------------------------------------------------------------------------------
def test_documents_carry_events_then_a_table_as_new_as_them(world: World) -> None:
    feed = EdgeFeed(world.store)
    first, second = world.deploy("web"), world.deploy("web")
    _, port1 = world.allocate(first)
    document = feed.document(None, None)
    snapshot = document["routes"]["snapshot"]
    assert (snapshot["seq"], snapshot["owners"]) == (0, {})
    table = document["allocations"]
    assert table["routes"] == {f"{first}/production": [[world.store.one("SELECT id FROM allocations")["id"], port1]]}
    assert feed.document(0, table["version"]) == {"routes": {"events": []}, "allocations": None}  # nothing new

    _, port2 = world.allocate(second)  # the new owner's allocation is ready before the route moves (as promotion)
    world.move(second)
    later = feed.document(0, table["version"])
    assert [e["deployment_id"] for e in later["routes"]["events"]] == [second]
    assert later["allocations"]["version"] == table["version"] + 1
    assert port2 in [p for _, p in later["allocations"]["routes"][f"{second}/production"]]
    edge = Edge(feed)
    edge.apply(later | {"routes": document["routes"]})
    edge.apply({"routes": later["routes"], "allocations": None})
    assert edge.candidates(f"{WEB}.localhost")[1][0].port == port2

    assert "snapshot" in feed.document(99, None)["routes"]  # an edge ahead of the store gets the truth


def test_a_long_poll_answers_on_a_change_and_every_one_answers_when_the_api_shuts_down(world: World) -> None:
    feed = EdgeFeed(world.store)
    dep = world.deploy("web")
    feed.start()
    try:
        seq, version = feed.seq, feed.version

        async def polls() -> None:
            waiting = asyncio.create_task(feed.wait_for_change(seq, version, 30))
            await asyncio.sleep(0.05)
            assert not waiting.done()  # nothing changed: it waits
            world.allocate(dep)  # a commit: the watcher sees it and wakes the poll
            await asyncio.wait_for(waiting, 10)
            assert feed.version == version + 1

            stuck = asyncio.create_task(feed.wait_for_change(feed.seq, feed.version, 30))
            await asyncio.sleep(0.05)
            assert not stuck.done()
            feed.close()  # the API's shutdown: it must not wait out a 30 s poll
            await asyncio.wait_for(stuck, 10)

        asyncio.run(polls())
    finally:
        feed.stop()


# -- promotion's edge_propagating stage --------------------------------------------------------------------------------
def test_promotion_drains_the_previous_owner_only_after_every_live_edge_applied_the_move(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from rhone_local import promotion
    from rhone_local.domain.errors import StageFailed
    from rhone_local.domain.urls import EdgeUrls

    feed = EdgeFeed(world.store)
    edge = feed.edge_for_token(feed.register("edge-0.1"))
    feed.report(edge, 6, 1, {})
    drained: list[tuple[str, int | None]] = []  # (who, the edge's sequence when the drain began)
    draining = {"id": "alloc_old", "health": {"drain": {"open_connections": 0, "timeout": 30, "deadline": "soon"}}}
    runner = SimpleNamespace(stop_environment=lambda dep, env, why: drained.append((dep, edge.seq)) or [draining])
    pipeline = SimpleNamespace(urls=EdgeUrls("localhost", 8471), runner=runner)
    promotions = promotion.Promotions(world.store, pipeline, feed)
    new = world.deploy("web")
    op = {
        "params": {"route_key": WEB, "deployment_id": new, "environment_id": world.environments[("web", "production")]},
        "stages": [{"state": "edge_propagating", "evidence": {"epoch": 3, "seq": 7, "previous_owner": "dep_old"}}],
    }
    threading.Timer(0.2, feed.report, args=(edge, 7, 1, {})).start()  # the edge applies seq 7 a moment later
    evidence = promotions.propagate(op)
    assert drained == [("dep_old", 7)]  # not before the edge had the new owner
    assert evidence["edges"] == {"edge-0.1": 7} and evidence["edge_seq"] == 7
    assert evidence["draining"] == [{"id": "alloc_old", "open_connections": 0, "timeout": 30, "deadline": "soon"}]

    # An edge that keeps answering but never applies the move fails the stage; nothing is drained.
    monkeypatch.setattr(promotion, "PROPAGATION_TIMEOUT_SECONDS", 0.3)
    feed.report(edge, 7, 1, {})
    op["stages"][0]["evidence"]["seq"] = 8
    with pytest.raises(StageFailed) as failed:
        promotions.propagate(op)
    assert failed.value.code == "edge_propagation_timeout" and drained == [("dep_old", 7)]


def test_a_store_that_cannot_be_read_counts_as_open(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    feed = EdgeFeed(world.store)
    dep = world.deploy("web")
    _, port = world.allocate(dep)
    feed.refresh()
    feed.report(feed.edge_for_token(feed.register("edge-0.1")), 0, feed.version, {})
    assert feed.open_connections(port) == 0

    def busy() -> list:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(world.store, "edge_candidates", busy)
    assert feed.open_connections(port) == 1  # maybe it left rotation, maybe an edge holds it: not known, so open
