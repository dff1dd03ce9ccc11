"""Route events on NATS JetStream (rhone_local/route_stream.py) against a real nats-server: a publisher over a log of
committed route events, and a follower feeding a real edge (`Edge`: its route table and its answers). Each test
tries to make the edge serve an owner it should not — a purged stream, a server that lost its data, a route
sequence that jumps — and checks it fails closed (503), reloads a snapshot, and serves the right owner again."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rhone_local import route_stream
from rhone_local.domain.routing import Owner, checksum
from rhone_local.edge import Edge
from rhone_local.route_stream import STREAM, RouteEventPublisher, RouteStreamFollower
from tests.engines import nats_jetstream

pytestmark = pytest.mark.slow

HOST = "web--production.localhost"
ROUTE = "web--production"
LEASE = 5.0
WAIT = 20.0  # the most any condition below waits (bounded: a broken stream fails the test, never hangs it)


class CommittedEvents:
    """The store's side, as the publisher and the edge see it: route events after a sequence, and a snapshot."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def promote(self, deployment: str, *, skip_seq: bool = False) -> int:
        with self.lock:
            seq = (self.events[-1]["seq"] if self.events else 0) + 1 + int(skip_seq)
            epoch = sum(1 for e in self.events if e["route_key"] == ROUTE) + 1
            self.events.append(
                {"seq": seq, "route_key": ROUTE, "epoch": epoch, "deployment_id": deployment, "artifact_digest": "d"}
            )
            return seq

    def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(e) for e in self.events if e["seq"] > seq][:limit]

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            owners: dict[str, Owner] = {}
            for e in self.events:
                owners[e["route_key"]] = Owner(e["deployment_id"], e["artifact_digest"], e["epoch"])
            seq = self.events[-1]["seq"] if self.events else 0
        return {
            "seq": seq,
            "owners": {
                k: {"deployment_id": o.deployment_id, "artifact_digest": o.artifact_digest, "epoch": o.epoch}
                for k, o in owners.items()
            },
            "checksum": checksum(seq, owners),
        }


class FollowingEdge:
    """A real `Edge` fed by a `RouteStreamFollower`; every allocation table names one allocation per deployment."""

    def __init__(self, url: str, log: CommittedEvents, deployments: list[str]) -> None:
        self.edge = Edge()
        self.edge.lease_until = time.monotonic()  # nothing served before the stream confirms
        self.edge.apply(
            {
                "allocations": {
                    "version": 1,
                    "routes": {f"{d}/production": [[f"alloc_{d}", 40000 + i]] for i, d in enumerate(deployments)},
                    "lanes": {},
                    "deployments": deployments,
                }
            }
        )
        self.lock = threading.Lock()
        self.closed_answers: list[int] = []
        self.follower = RouteStreamFollower(
            url,
            load_snapshot=log.snapshot,
            apply=self._apply,
            wanted_seq=lambda: self.edge.wanted_seq,
            fail_closed=self._fail_closed,
            renew=self._renew,
        )

    def _apply(self, document: dict[str, Any]) -> None:
        with self.lock:
            self.edge.apply(document)

    def _fail_closed(self, reason: str) -> None:
        with self.lock:
            self.edge.table.gap = True
            self.closed_answers.append(self.edge.candidates(HOST)[0])  # what a client is answered from now on

    def _renew(self, sent: float) -> None:
        self.edge.lease_until = sent + LEASE

    def answer(self) -> tuple[int, Any]:
        with self.lock:
            return self.edge.candidates(HOST)

    def owner(self) -> str | None:
        with self.lock:
            owner = self.edge.table.owner(ROUTE)
        return owner.deployment_id if owner else None


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def follow(url: str, running: Any, log: CommittedEvents, deployments: list[str]) -> tuple[Any, FollowingEdge]:
    """A running publisher of `log` and an edge following it, once the edge serves the first owner."""
    publisher = running(RouteEventPublisher(url, log.after))
    edge = FollowingEdge(url, log, deployments)
    running(edge.follower)
    wait_until(lambda: edge.owner() == log.events[-1]["deployment_id"], "the current owner")
    return publisher, edge


def stream_state(url: str) -> Any:
    import nats
    from nats.js.errors import NotFoundError

    async def read() -> Any:
        client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            return (await client.jetstream(timeout=5).stream_info(STREAM)).state
        except NotFoundError:  # not created yet: the publisher creates it when it first connects
            return SimpleNamespace(messages=0, first_seq=0, last_seq=0)
        finally:
            await client.close()

    return asyncio.run(read())


def purge(url: str) -> None:
    import nats

    async def run() -> None:
        client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            await client.jetstream(timeout=5).purge_stream(STREAM)
        finally:
            await client.close()

    asyncio.run(run())


@pytest.fixture
def nats(tmp_path: Path):
    """A JetStream server of this test's own: the tests purge and restart it."""
    with nats_jetstream(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def running():
    """Starts publishers and followers, and stops each one at the end."""
    started: list[Any] = []

    def start(part: Any) -> Any:
        part.start()
        started.append(part)
        return part

    yield start
    for part in reversed(started):
        part.stop()


def test_events_reach_the_edge_in_order_and_a_repeated_publish_is_dropped(nats, running):
    log = CommittedEvents()
    deployments = [f"dep_{i}" for i in range(6)]
    log.promote("dep_0")
    publisher = running(RouteEventPublisher(nats.url, log.after))
    edge = FollowingEdge(nats.url, log, deployments)
    running(edge.follower)
    wait_until(lambda: edge.owner() == "dep_0", "the first owner")
    seen = []
    for deployment in deployments[1:]:
        log.promote(deployment)
        publisher.poke()
        wait_until(lambda d=deployment: edge.owner() == d, f"owner {deployment}")
        seen.append(edge.answer())
    assert [s[0] for s in seen] == [200] * 5
    assert [s[1][0].port for s in seen] == [40001, 40002, 40003, 40004, 40005]
    assert edge.edge.table.seq == 6 and edge.edge.table.counts["gap"] == 0
    state = stream_state(nats.url)
    assert (state.messages, state.first_seq, state.last_seq) == (6, 1, 6)

    # A publisher that lost track (a crash before it learned its acks, another node taking over) sends 1..6 again:
    # JetStream drops every one of them by its Nats-Msg-Id.
    again = RouteEventPublisher(nats.url, log.after)

    async def republish() -> None:
        import nats as nats_client

        client = await nats_client.connect(nats.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = client.jetstream(timeout=5)

            async def nothing_yet(_js: Any) -> None:
                return None

            again.last_on_stream = nothing_yet
            assert await again.publish_pending(js) == 6
        finally:
            await client.close()

    asyncio.run(republish())
    assert again.counts == {"published": 0, "duplicate": 6}
    assert stream_state(nats.url).messages == 6
    assert edge.follower.counts["closed"] == 0 and edge.owner() == "dep_5"


def test_only_one_publisher_holds_the_lock(nats, running):
    log = CommittedEvents()
    log.promote("dep_0")
    first = running(RouteEventPublisher(nats.url, log.after))
    second = running(RouteEventPublisher(nats.url, log.after))  # same lock name, same process
    wait_until(lambda: first.published + second.published >= 1, "a publish")
    log.promote("dep_1")
    first.poke()
    second.poke()
    # The stream stores an event before its publisher has read the ack (`published` moves then): wait for both.
    wait_until(
        lambda: stream_state(nats.url).messages == 2 and max(first.published, second.published) == 2,
        "both events on the stream, and their acks read",
    )
    assert sorted([first.published, second.published]) == [0, 2]
    assert first.counts["duplicate"] + second.counts["duplicate"] == 0


def test_a_purged_stream_fails_the_edge_closed_until_a_snapshot_then_it_serves_the_new_owner(nats, running):
    log = CommittedEvents()
    log.promote("dep_0")
    publisher, edge = follow(nats.url, running, log, ["dep_0", "dep_1", "dep_2"])
    edge.follower.stop()  # the edge is slow: it has not read what comes next when the stream is purged
    log.promote("dep_1")
    publisher.poke()
    wait_until(lambda: stream_state(nats.url).last_seq == 2, "the second event on the stream")
    purge(nats.url)
    assert edge.owner() == "dep_0"  # what it has is all it knows until it reads on

    follower = running(edge.follower)  # it reads on from where it was
    wait_until(lambda: follower.counts["snapshots"] == 2, "a new snapshot")
    assert follower.counts["closed"] == 1 and edge.closed_answers == [503]
    assert edge.owner() == "dep_1"
    wait_until(lambda: edge.answer()[0] == 200, "serving again, once the stream confirmed it is caught up")
    log.promote("dep_2")
    publisher.poke()
    wait_until(lambda: edge.owner() == "dep_2", "the owner after the purge")
    assert follower.counts["closed"] == 1


def test_a_server_that_comes_back_without_its_data_fails_the_edge_closed_then_it_recovers(nats, running):
    log = CommittedEvents()
    for deployment in ("dep_0", "dep_1", "dep_2"):
        log.promote(deployment)
    publisher, edge = follow(nats.url, running, log, ["dep_0", "dep_1", "dep_2", "dep_3"])
    # It has read the stream to its end (else the new stream's first message simply comes next, and nothing is lost).
    wait_until(lambda: edge.follower.next_stream_seq == 4, "the edge at the stream's end")
    nats.restart(lose_data=True)
    log.promote("dep_3")
    publisher.poke()
    wait_until(lambda: edge.owner() == "dep_3", "the owner after the restart")
    assert edge.follower.counts["closed"] >= 1 and set(edge.closed_answers) == {503}
    assert edge.follower.counts["snapshots"] >= 2
    wait_until(lambda: edge.answer()[0] == 200, "serving again, once the stream confirmed it is caught up")
    assert edge.edge.table.seq == 4


def test_a_route_sequence_gap_fails_closed_and_never_serves_an_older_owner(nats, running):
    log = CommittedEvents()
    log.promote("dep_0")
    publisher, edge = follow(nats.url, running, log, ["dep_0", "dep_1", "dep_2"])
    owners: list[str | None] = []
    probing = threading.Event()

    def probe() -> None:
        while not probing.is_set():
            status, targets = edge.answer()
            owners.append(targets[0].port if status == 200 else status)
            time.sleep(0.001)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        log.promote("dep_1", skip_seq=True)  # seq 3 is published while seq 2 was never seen: a gap
        publisher.poke()
        wait_until(lambda: edge.follower.counts["closed"] == 1, "the gap")
        wait_until(lambda: edge.owner() == "dep_1", "the owner from the snapshot")
    finally:
        probing.set()
        prober.join(5)
    assert edge.closed_answers == [503]
    assert edge.edge.table.counts["gap"] == 1 and edge.edge.table.seq == 3
    # Served dep_0 (port 40000), then 503 while closed, then dep_1 (40001): never dep_0 after dep_1.
    served = [o for o in owners if o != 503]
    assert served and set(served) <= {40000, 40001}
    if 40001 in served:
        assert 40000 not in served[served.index(40001) :]


def test_an_edge_cut_off_from_nats_stops_serving_when_its_lease_passes(nats, running):
    log = CommittedEvents()
    log.promote("dep_0")
    publisher = running(RouteEventPublisher(nats.url, log.after))
    edge = FollowingEdge(nats.url, log, ["dep_0"])
    running(edge.follower)
    wait_until(lambda: edge.answer()[0] == 200, "serving")
    nats.stop()
    edge.edge.lease_until = time.monotonic() + 0.2  # a short lease, so the test need not wait for a long one
    wait_until(lambda: edge.answer()[0] == 503, "the lease to pass")
    assert "lost its feed" in edge.answer()[1]
    # Stopping while NATS is unreachable ends the publisher (a shutdown does not hang on it) and frees its lock.
    publisher.stop()
    assert not publisher._thread.is_alive()
    assert route_stream.LocalPublisherLock(STREAM).acquire() is True
    route_stream.LocalPublisherLock(STREAM).release()


@pytest.mark.parametrize("events", ["http://127.0.0.1:4222", "nats://", "redis://127.0.0.1:1"])
def test_an_events_url_the_server_cannot_use_refuses_the_start(tmp_path, events):
    import os
    import subprocess
    import sys

    from rhone_local.datadir import REFUSED_STATUS

    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    command = [sys.executable, "-m", "rhone_local", "serve", "--data-dir", str(data_dir), "--port", "0"]
    environ = {**os.environ, "RHONE_LOCAL_EVENTS": events}
    finished = subprocess.run(
        command, env=environ, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert finished.returncode == REFUSED_STATUS, finished.stderr
    assert "error [events_unavailable]" in finished.stderr and "Traceback" not in finished.stderr
    assert not (data_dir / "server.json").exists()


def test_committed_route_events_of_a_real_store_reach_the_edge_when_the_feed_sees_the_commit(
    nats, running, tmp_path, monkeypatch
):
    """The publisher reads the store's own route events (`route_events_after`, committed by the route CAS), and is
    woken by the edge feed's watcher (`EdgeFeed.on_change`), not by its interval: the interval is made longer than
    the test may wait, so only the wake-up can carry each event in time."""
    from rhone_local.edge_feed import EdgeFeed
    from rhone_local.store import Store
    from tests.local.test_edge_routes import World

    monkeypatch.setattr(route_stream, "PUBLISH_INTERVAL_SECONDS", WAIT * 10)
    store = Store(tmp_path / "rhone.db")
    try:
        ids = store.bootstrap(workspace="local", owner="owner", token_hash="x", region="local-1", cell="local-1a")
        world = World(store, Edge(), ids["workspace_id"], ids["region_id"], ids["cell_id"])
        world.add_app("web")
        deployments = [world.deploy("web") for _ in range(3)]
        world.move(deployments[0])
        feed = EdgeFeed(store)
        publisher = RouteEventPublisher(nats.url, store.route_events_after)
        feed.on_change(publisher.poke)
        running(publisher)
        feed.start()
        try:
            wait_until(lambda: stream_state(nats.url).messages == 1, "the first event, published at start")
            for count, deployment in enumerate(deployments[1:], start=2):
                world.move(deployment)  # the route CAS commits; the feed's watcher sees it and pokes the publisher
                wait_until(lambda c=count: stream_state(nats.url).messages == c, f"event {count}")
        finally:
            feed.stop()
        wait_until(lambda: publisher.published == 3, "the last ack read")  # the stream stores before the ack is read
        assert publisher.counts == {"published": 3, "duplicate": 0}
        assert [e["seq"] for e in store.route_events_after(0, 10)] == [1, 2, 3]
    finally:
        store.close()
