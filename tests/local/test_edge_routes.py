"""The edge's routing decisions against a real store: `Edge.candidates(host)` and `Edge.sync_once()` over a temporary
`Store` whose routes move through `store.move_route` (the CAS the promotion's route_cas stage commits) — and whose
`route_events` log is also fed duplicate, reordered, stale and gapped rows directly.

What must hold whatever the log looks like:
- the edge routes a route key only to an owner the store committed (and, once synced, to the current one);
- a gap fails closed: every route key answers 503 until a snapshot verifies and is loaded;
- an unknown route key (or host) is 404; a known owner without a ready allocation in that environment is 503 — the
  edge never falls back to another deployment or another environment's allocation.
No HTTP server runs here: `route()` returns (status, upstream port or reason).
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rhone_local.domain.ids import new_id
from rhone_local.domain.routing import RouteEvent, SnapshotRejected
from rhone_local.edge import Affinity, Edge, affinity_key
from rhone_local.edge_feed import EdgeFeed
from rhone_local.store import Store, now_iso

WEB = "web--production"
API = "api--production"


@dataclass
class World:
    store: Store
    edge: Edge
    workspace_id: str
    region_id: str
    cell_id: str
    apps: dict[str, str] = field(default_factory=dict)  # name -> id
    environments: dict[tuple[str, str], str] = field(default_factory=dict)  # (app, env) -> id
    deployments: dict[str, str] = field(default_factory=dict)  # deployment id -> app name
    ports: Iterator[int] = field(default_factory=lambda: itertools.count(41000))

    # -- topology ------------------------------------------------------------------------------------------------
    def add_app(self, name: str) -> None:
        ts = now_iso()
        with self.store.write() as c:
            project_id = new_id("project")
            c.execute("INSERT INTO projects VALUES (?, ?, ?, ?, ?)", (project_id, self.workspace_id, name, ts, "op_x"))
            self.apps[name] = new_id("app")
            c.execute(
                "INSERT INTO apps VALUES (?, ?, ?, ?, ?, ?)",
                (self.apps[name], self.workspace_id, project_id, name, ts, "op_x"),
            )
            for env in ("preview", "production", "staging"):
                self.environments[(name, env)] = new_id("environment")
                c.execute(
                    "INSERT INTO environments (id, workspace_id, app_id, name, created_at, operation_id) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (self.environments[(name, env)], self.workspace_id, self.apps[name], env, ts, "op_x"),
                )

    def deploy(self, app: str) -> str:
        """A preview_ready deployment row (nothing runs: the edge only reads the rows)."""
        deployment_id, ts = new_id("deployment"), now_iso()
        digest = "sha256:" + deployment_id.encode().hex().ljust(64, "0")[:64]
        with self.store.write() as c:
            c.execute(
                "INSERT INTO deployments VALUES "
                "(?, ?, ?, ?, ?, 'preview_ready', 0, ?, ?, '{}', '{}', '{}', NULL, ?, ?)",
                (
                    deployment_id,
                    self.workspace_id,
                    self.apps[app],
                    self.environments[(app, "preview")],
                    "op_x",
                    digest,
                    digest,
                    ts,
                    ts,
                ),
            )
        self.deployments[deployment_id] = app
        return deployment_id

    def allocate(
        self, deployment_id: str, env: str = "production", state: str = "ready", region: str | None = None
    ) -> tuple[str, int]:
        alloc_id, port, ts = new_id("allocation"), next(self.ports), now_iso()
        app = self.deployments[deployment_id]
        digest = self.store.deployment(deployment_id)["artifact_digest"]
        with self.store.write() as c:
            c.execute(
                "INSERT INTO allocations (id, deployment_id, environment_id, artifact_digest, region_id, cell_id, "
                "state, version, pid, port, health, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, NULL, ?, ?)",
                (
                    alloc_id,
                    deployment_id,
                    self.environments[(app, env)],
                    digest,
                    self.store.region(region)["id"] if region else self.region_id,
                    self.store.one("SELECT id FROM cells WHERE region_id = ?", self.store.region(region)["id"])["id"]
                    if region
                    else self.cell_id,
                    state,
                    4242,
                    port,
                    ts,
                    ts,
                ),
            )
        self.delivered()
        return alloc_id, port

    def set_allocation(self, alloc_id: str, state: str) -> None:
        with self.store.write() as c:
            c.execute("UPDATE allocations SET state = ?, version = version + 1 WHERE id = ?", (state, alloc_id))
        self.delivered()

    def delivered(self) -> None:
        """The edge learns allocation changes from its feed (a server's edge: milliseconds after the commit); once it
        follows one, a test's change is delivered at once — with the route events committed so far."""
        if self.edge.version is not None:
            self.edge.sync_once()

    # -- route ownership -------------------------------------------------------------------------------------------
    def move(self, deployment_id: str, env: str = "production", *, expect_epoch: int | None = None) -> dict | None:
        """What the route_cas stage commits: the CAS on the route and its event, in one transaction."""
        app = self.deployments[deployment_id]
        app_id, environment_id = self.apps[app], self.environments[(app, env)]
        with self.store.write() as c:
            if expect_epoch is None:
                current = self.store.route_owner(app_id, environment_id)
                expect_epoch = current["epoch"] if current else 0
            return self.store.move_route(
                c,
                app_id=app_id,
                environment_id=environment_id,
                route_key=f"{app}--{env}",
                expect_epoch=expect_epoch,
                deployment_id=deployment_id,
                artifact_digest=self.store.deployment(deployment_id)["artifact_digest"],
                operation_id=new_id("operation"),
                kind="promote",
            )

    def committed(self) -> dict[str, tuple[str, int]]:
        """route key -> (owner, epoch), as the store has it now."""
        rows = self.store.all("SELECT route_key, deployment_id, epoch FROM route_owners")
        return {r["route_key"]: (r["deployment_id"], r["epoch"]) for r in rows}

    def insert_event(self, *, seq: int | None, route_key: str, epoch: int, deployment_id: str) -> None:
        """A route_events row written straight into the log (no CAS, route_owners untouched)."""
        app = self.deployments[deployment_id]
        environment = route_key.split("--", 1)[1]
        with self.store.write() as c:
            c.execute(
                "INSERT INTO route_events (seq, route_key, app_id, environment_id, epoch, deployment_id, "
                "artifact_digest, previous_deployment_id, operation_id, kind, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, 'promote', ?)",
                (
                    seq,
                    route_key,
                    self.apps[app],
                    self.environments[(app, environment)],
                    epoch,
                    deployment_id,
                    self.store.deployment(deployment_id)["artifact_digest"],
                    new_id("operation"),
                    now_iso(),
                ),
            )

    def max_seq(self) -> int:
        return self.store.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM route_events").fetchone()[0]

    def stored_events(self) -> list[RouteEvent]:
        return [
            RouteEvent(r["seq"], r["route_key"], r["epoch"], r["deployment_id"], r["artifact_digest"])
            for r in self.store.route_events_after(0, limit=100_000)
        ]

    # -- the edge ---------------------------------------------------------------------------------------------------
    def route(self, key: str) -> tuple[int, str | int]:
        return self.route_host(f"{key}.localhost")

    def route_host(self, host: str) -> tuple[int, str | int]:
        """(200, the first-choice port) or (status, reason): where the relay would send a request for `host`."""
        status, target = self.edge.candidates(host)
        return (status, target[0].port) if isinstance(target, list) else (status, target)

    def candidate_ports(self, host: str, affinity: tuple[str, ...] = ()) -> list[int]:
        """The candidate ports for `host`, in the order the relay would try them."""
        status, targets = self.edge.candidates(host, affinity)
        assert status == 200, (status, targets)
        return [t.port for t in targets]

    def routed_owners(self) -> dict[str, tuple[str, int]]:
        return {key: (o.deployment_id, o.epoch) for key, o in self.edge.table.owners.items()}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = Store(tmp_path / "rhone.db")
    ids = store.bootstrap(workspace="local", owner="owner", token_hash="x", region="local-1", cell="local-1a")
    edge = Edge(EdgeFeed(store))
    w = World(store, edge, ids["workspace_id"], ids["region_id"], ids["cell_id"])
    w.add_app("web")
    w.add_app("api")
    yield w
    store.close()


# -- committed moves ------------------------------------------------------------------------------------------------
def test_nothing_routes_before_the_first_snapshot(world: World) -> None:
    dep = world.deploy("web")
    _, port = world.allocate(dep)
    world.move(dep)
    status, reason = world.route(WEB)
    assert status == 503 and "failing closed" in str(reason)  # no baseline yet: fail closed, even for a real owner
    world.edge.sync_once()
    assert world.route(WEB) == (200, port)
    assert world.edge.table.seq == 1 and world.routed_owners() == world.committed()


def test_the_edge_follows_committed_moves_and_only_committed_ones(world: World) -> None:
    first, second = world.deploy("web"), world.deploy("web")
    _, port1 = world.allocate(first)
    _, port2 = world.allocate(second)
    world.edge.sync_once()
    assert world.route(WEB)[0] == 404  # nothing promoted yet

    assert world.move(first)["epoch"] == 1
    world.edge.sync_once()
    assert world.route(WEB) == (200, port1)

    event = world.move(second)
    assert (event["epoch"], event["previous_deployment_id"]) == (2, first)
    assert world.route(WEB) == (200, port1)  # not synced yet: the previous committed owner, never anything else
    world.edge.sync_once()
    assert world.route(WEB) == (200, port2)
    assert world.edge.table.applied_epoch(WEB) == 2 and world.routed_owners() == world.committed()

    # A lost compare-and-swap writes nothing: no event, no move, nothing for the edge to apply.
    assert world.move(first, expect_epoch=1) is None
    assert world.max_seq() == 2
    world.edge.sync_once()
    assert world.route(WEB) == (200, port2)
    assert world.edge.table.counts == {"applied": 2, "duplicate": 0, "stale": 0, "gap": 0}


def test_the_sync_thread_applies_a_commit_at_its_next_sync(world: World) -> None:
    first, second = world.deploy("web"), world.deploy("web")
    _, port1 = world.allocate(first)
    _, port2 = world.allocate(second)
    world.move(first)
    moved = threading.Event()
    left_by_later_syncs = []  # the route each sync that began after the commit left
    sync_once = world.edge.sync_once

    def recorded_sync() -> None:
        began_after_the_commit = moved.is_set()
        sync_once()
        if began_after_the_commit:
            left_by_later_syncs.append(world.route(WEB))

    world.edge.sync_once = recorded_sync
    world.edge.start_sync()
    try:
        assert world.route(WEB) == (200, port1)  # start_sync syncs once before returning
        world.move(second)
        moved.set()
        deadline = time.monotonic() + 30  # a bound for a hang only: the sync thread runs every 20 ms
        while not left_by_later_syncs and time.monotonic() < deadline:
            time.sleep(0.01)
        assert left_by_later_syncs[:1] == [(200, port2)]  # the first sync after the commit applied it
    finally:
        world.edge.stop_sync()


# -- 404 and 503 ----------------------------------------------------------------------------------------------------
def test_unknown_route_keys_and_hosts_are_404(world: World) -> None:
    dep = world.deploy("web")
    _, port = world.allocate(dep)
    world.move(dep)
    world.edge.sync_once()
    assert world.route(WEB) == (200, port)
    assert world.route_host("WEB--Production.localhost.:8080") == (200, port)  # case, trailing dot and port ignored
    for host in (
        "web--staging.localhost",  # the environment exists; nothing was ever promoted to it
        "api--production.localhost",  # the app exists; no route
        "nope--production.localhost",
        "web--production.example.com",  # not under the edge's suffix
        "a.web--production.localhost",
        "localhost",
        "",
        "dep-000000000000000000000000.localhost",
    ):
        status, reason = world.route_host(host)
        assert status == 404, (host, status, reason)


def test_an_owner_without_a_ready_allocation_is_503_and_never_falls_back(world: World) -> None:
    first, second = world.deploy("web"), world.deploy("web")
    _, port1 = world.allocate(first)
    world.move(first)
    world.move(second)  # the route moves to a deployment with no production allocation yet
    world.edge.sync_once()
    status, reason = world.route(WEB)
    assert status == 503 and second in str(reason) and "epoch 2" in str(reason)

    # Not the previous owner's ready production allocation, not the new owner's preview or staging allocation,
    # not a production allocation that is not ready: still 503.
    assert world.store.one("SELECT state FROM allocations WHERE port = ?", port1)["state"] == "ready"
    world.allocate(second, "preview")
    world.allocate(second, "staging")
    starting, port2 = world.allocate(second, "production", state="starting")
    for state in ("planned", "pulling", "starting"):
        world.set_allocation(starting, state)
        assert world.route(WEB)[0] == 503, state

    world.set_allocation(starting, "ready")
    assert world.route(WEB) == (200, port2)
    for state in ("draining", "stopped", "failed"):  # leaving ready stops new requests at once
        world.set_allocation(starting, state)
        status, reason = world.route(WEB)
        assert status == 503 and second in str(reason), state


# -- the log fed duplicate, stale, reordered and gapped rows --------------------------------------------------------
def test_duplicate_events_have_no_second_effect(world: World) -> None:
    first, second = world.deploy("web"), world.deploy("web")
    world.allocate(first)
    _, port2 = world.allocate(second)
    world.edge.sync_once()  # the baseline: an empty snapshot at seq 0
    world.move(first)
    world.move(second)
    world.edge.sync_once()
    world.edge.sync_once()  # reads nothing new: the edge asks only for events after its sequence
    assert world.edge.table.counts["applied"] == 2
    for event in world.stored_events() * 2:  # every stored event redelivered, twice
        assert world.edge.table.apply(event) == "duplicate"
    assert world.route(WEB) == (200, port2)
    assert world.routed_owners() == world.committed() and world.edge.table.seq == 2


def test_a_row_repeating_an_epoch_never_moves_the_owner(world: World) -> None:
    first, second = world.deploy("web"), world.deploy("web")
    world.allocate(first)
    _, port2 = world.allocate(second)
    world.move(first)
    world.move(second)
    world.edge.sync_once()

    # The log refuses a second row for an epoch it already has (the current one or an older one) ...
    for epoch in (1, 2):
        with pytest.raises(sqlite3.IntegrityError):
            world.insert_event(seq=None, route_key=WEB, epoch=epoch, deployment_id=first)
    # ... so a repeated epoch reaches the edge only as a late copy: epoch 1 (first) re-logged after epoch 2.
    with world.store.write() as c:
        c.execute("DELETE FROM route_events WHERE route_key = ? AND epoch = 1", (WEB,))
    world.insert_event(seq=None, route_key=WEB, epoch=1, deployment_id=first)
    world.insert_event(seq=None, route_key=WEB, epoch=0, deployment_id=first)  # and one older than any epoch
    world.edge.sync_once()
    assert world.edge.table.counts["stale"] == 2 and world.edge.table.seq == 4  # the sequence advanced ...
    assert world.route(WEB) == (200, port2)  # ... the owner did not
    assert world.routed_owners() == world.committed() == {WEB: (second, 2)}
    # Delivered straight to the table (a transport could), a same-epoch event naming another owner is stale too.
    assert world.edge.table.apply(RouteEvent(5, WEB, 2, first, "sha256:" + "f" * 64)) == "stale"
    assert world.route(WEB) == (200, port2)


def test_rows_logged_out_of_epoch_order_keep_the_highest_committed_epoch(world: World) -> None:
    first, second = world.deploy("web"), world.deploy("web")
    world.allocate(first)
    _, port2 = world.allocate(second)
    world.move(first)
    world.edge.sync_once()
    # Two moves whose rows were logged in the reverse of their epoch order (seq 2 carries epoch 3, seq 3 epoch 2),
    # inserted into the log in the reverse of their sequence order; the committed owner is epoch 3.
    world.insert_event(seq=3, route_key=WEB, epoch=2, deployment_id=first)
    world.insert_event(seq=2, route_key=WEB, epoch=3, deployment_id=second)
    with world.store.write() as c:
        c.execute("UPDATE route_owners SET deployment_id = ?, epoch = 3 WHERE route_key = ?", (second, WEB))
    world.edge.sync_once()
    assert world.edge.table.counts == {"applied": 1, "duplicate": 0, "stale": 1, "gap": 0}  # (seq 1: the snapshot)
    assert world.route(WEB) == (200, port2) and world.routed_owners() == world.committed() == {WEB: (second, 3)}
    # The next real move continues the sequence and the epoch.
    event = world.move(first)
    assert (event["seq"], event["epoch"]) == (4, 4)
    world.edge.sync_once()
    assert world.routed_owners() == world.committed() == {WEB: (first, 4)}


def test_events_delivered_out_of_order_fail_closed_until_a_snapshot(world: World) -> None:
    web1, web2, api1 = world.deploy("web"), world.deploy("web"), world.deploy("api")
    _, web1_port = world.allocate(web1)
    _, web2_port = world.allocate(web2)
    _, api_port = world.allocate(api1)
    world.move(web1)
    world.move(api1)
    world.edge.sync_once()
    world.move(web2)
    world.move(web1)
    later = world.stored_events()[2:]  # seq 3 (web2) and seq 4 (web1)
    assert world.edge.table.apply(later[1]) == "gap"  # seq 4 arrives before seq 3
    for key in (WEB, API):  # fail closed for every key, not just the one that moved
        status, reason = world.route(key)
        assert status == 503 and "gap" in str(reason), key
    assert world.edge.table.apply(later[0]) == "gap"  # the missing event does not clear a gap; only a snapshot does
    assert world.route(WEB)[0] == 503
    world.edge.sync_once()
    assert world.route(WEB) == (200, web1_port) and world.route(API) == (200, api_port)
    assert world.routed_owners() == world.committed() and world.edge.table.seq == 4
    assert web2_port != web1_port


def test_a_gapped_row_fails_closed_until_sync_reloads_a_snapshot(world: World, monkeypatch) -> None:
    web1, web2, other, api1 = world.deploy("web"), world.deploy("web"), world.deploy("web"), world.deploy("api")
    world.allocate(web1)
    _, web2_port = world.allocate(web2)
    world.allocate(other)
    _, api_port = world.allocate(api1)
    world.move(web1)
    world.move(web2)
    world.move(api1)
    world.edge.sync_once()
    assert world.edge.table.seq == 3

    # A row beyond the next sequence number (4 and 5 missing), naming a deployment the store never made the owner.
    world.insert_event(seq=6, route_key=WEB, epoch=99, deployment_id=other)
    real_snapshot = world.store.route_snapshot

    def locked():
        raise sqlite3.OperationalError("database is locked")

    # The sync sees the gap but cannot reload (the store is busy): the table stays closed.
    monkeypatch.setattr(world.store, "route_snapshot", locked)
    with pytest.raises(sqlite3.OperationalError):
        world.edge.sync_once()
    assert not world.edge.table.serving
    assert world.route(WEB)[0] == 503 and world.route(API)[0] == 503
    with pytest.raises(sqlite3.OperationalError):  # and stays closed for as long as reloading fails
        world.edge.sync_once()
    assert world.route(WEB)[0] == 503

    # A snapshot that does not verify is refused: still closed.
    def forged():
        seq, owners, _ = real_snapshot()
        return seq, owners, "sha256:" + "0" * 64

    monkeypatch.setattr(world.store, "route_snapshot", forged)
    with pytest.raises(SnapshotRejected):
        world.edge.sync_once()
    assert world.route(WEB)[0] == 503 and world.route(API)[0] == 503

    # A verified snapshot: the committed owners (route_owners), not the gapped row's claim.
    monkeypatch.setattr(world.store, "route_snapshot", real_snapshot)
    world.edge.sync_once()
    assert world.edge.table.serving and world.edge.table.seq == 6
    assert world.route(WEB) == (200, web2_port) and world.route(API) == (200, api_port)
    assert world.routed_owners() == world.committed() == {WEB: (web2, 2), API: (api1, 1)}

    # The log continues after the gap; the next real move (epoch 3) is applied although the gapped row said 99.
    event = world.move(web1)
    assert (event["seq"], event["epoch"]) == (7, 3)
    world.edge.sync_once()
    assert world.routed_owners() == world.committed() == {WEB: (web1, 3), API: (api1, 1)}
    assert world.edge.table.counts["gap"] == 1 and world.edge.table.counts["applied"] == 1  # (the rest: snapshots)


def test_a_gap_found_by_sync_once_is_reloaded_in_the_same_call(world: World) -> None:
    first, second, third = world.deploy("web"), world.deploy("web"), world.deploy("web")
    world.allocate(first)
    world.allocate(second)
    _, port3 = world.allocate(third)
    world.move(first)
    world.edge.sync_once()
    world.move(second)  # seq 2 ...
    with world.store.write() as c:  # ... lost from the log: the edge will see seq 3 right after seq 1
        c.execute("DELETE FROM route_events WHERE seq = 2")
    assert world.move(third)["seq"] == 3
    world.edge.sync_once()
    assert world.edge.table.counts["gap"] == 1 and world.edge.table.serving and world.edge.table.seq == 3
    assert world.route(WEB) == (200, port3) and world.routed_owners() == world.committed() == {WEB: (third, 3)}


# -- everything at once ---------------------------------------------------------------------------------------------
def committed_at(events: list[RouteEvent], seq: int) -> dict[str, tuple[str, int]]:
    """The owners the log says were committed as of `seq`: per key, the highest epoch logged at or before it."""
    owners: dict[str, tuple[str, int]] = {}
    for e in events:
        if e.seq <= seq and (e.route_key not in owners or e.epoch > owners[e.route_key][1]):
            owners[e.route_key] = (e.deployment_id, e.epoch)
    return owners


@pytest.mark.parametrize("seed", range(12))
def test_under_any_interleaving_the_edge_routes_only_to_committed_owners(world: World, seed: int) -> None:
    rng = random.Random(seed)
    keys = {"web": [world.deploy("web") for _ in range(3)], "api": [world.deploy("api") for _ in range(3)]}
    ports = {}
    for deployments in keys.values():
        for dep in deployments:
            if rng.random() < 0.8:  # some owners never get a ready production allocation: those keys must be 503
                ports[dep] = world.allocate(dep)[1]
    stale_epochs = itertools.count(-1, -1)
    for _ in range(150):
        action = rng.random()
        if action < 0.3:  # a promotion commits (sometimes with a stale expectation: the CAS refuses it)
            app = rng.choice(sorted(keys))
            current = world.committed().get(f"{app}--production", (None, 0))[1]
            expect = current if rng.random() < 0.85 else max(0, current - 1)
            event = world.move(rng.choice(keys[app]), expect_epoch=expect)
            assert (event is None) == (expect != current)
        elif action < 0.6:  # the sync loop runs: afterwards the edge has exactly the store's committed owners
            world.edge.sync_once()
            assert world.edge.table.serving and world.routed_owners() == world.committed()
        elif action < 0.7:  # a stale row lands in the log: an epoch older than any, for a key that has an owner
            owned = sorted(world.committed().items())
            if owned:
                key, _ = rng.choice(owned)
                app = key.split("--")[0]
                world.insert_event(seq=None, route_key=key, epoch=next(stale_epochs), deployment_id=keys[app][0])
        else:  # a stored event delivered out of band: a duplicate, the next one, or one ahead of the table (a gap)
            events = world.stored_events()
            ahead = [e for e in events if e.seq > (world.edge.table.seq or 0)]
            pool = ahead if ahead and rng.random() < 0.6 else events
            if pool:
                world.edge.table.apply(rng.choice(pool))
        table = world.edge.table
        events = world.stored_events()
        for app in keys:
            key = f"{app}--production"
            status, target = world.route(key)
            if not table.serving:
                assert status == 503, (key, status, target)
                continue
            expected = committed_at(events, table.seq).get(key)
            assert world.routed_owners().get(key) == expected  # never anything the store did not commit
            if expected is None:
                assert status == 404
            elif expected[0] in ports:
                assert (status, target) == (200, ports[expected[0]])
            else:
                assert status == 503
    world.edge.sync_once()
    assert world.routed_owners() == world.committed()


# -- several allocations: eligibility, spreading, affinity ---------------------------------------------------------
def test_only_allocations_in_eligible_regions_are_candidates(world: World) -> None:
    world.store.ensure_region("local-2", "us", ["local-2a"])
    dep = world.deploy("web")
    _, home = world.allocate(dep)
    away_id, away = world.allocate(dep, region="local-2")
    world.move(dep)
    world.edge.sync_once()
    environment_id = world.environments[("web", "production")]
    # A ready allocation in a region the environment has not made eligible gets nothing — enabling or disabled.
    for state in (None, "enabling", "disabled"):
        if state:
            with world.store.write() as c:
                world.store.set_environment_region(
                    c, environment_id, world.store.region("local-2")["id"], state, "op_x", None
                )
            world.delivered()
        assert {tuple(world.candidate_ports(f"{WEB}.localhost")) for _ in range(10)} == {(home,)}
    with world.store.write() as c:
        world.store.set_environment_region(
            c, environment_id, world.store.region("local-2")["id"], "eligible", "op_x", None
        )
    world.delivered()
    assert {frozenset(world.candidate_ports(f"{WEB}.localhost")) for _ in range(4)} == {frozenset({home, away})}
    # Another deployment's ready allocation in the same environment is never a candidate.
    other = world.deploy("web")
    world.allocate(other)
    assert set(world.candidate_ports(f"{WEB}.localhost")) == {home, away}
    world.set_allocation(away_id, "draining")
    assert world.candidate_ports(f"{WEB}.localhost") == [home]


# -- lanes: a deployment's own URL -----------------------------------------------------------------------------------
def test_a_deployments_own_url_reaches_only_its_own_lane_and_is_503_without_it(world: World) -> None:
    dep, other = world.deploy("web"), world.deploy("web")
    host = "dep-" + dep.removeprefix("dep_") + ".localhost"
    preview_id, preview = world.allocate(dep, "preview")
    world.allocate(dep, "staging")  # another environment's allocation of the same deployment
    world.allocate(other, "preview")  # another deployment in the same lane
    world.move(dep)
    _, production = world.allocate(dep, "production")  # promoted: the newest allocation is production's
    world.edge.sync_once()
    for _ in range(5):
        assert world.candidate_ports(host) == [preview]
    assert world.route(WEB) == (200, production)

    rows_before = world.store.count("allocations")
    world.set_allocation(preview_id, "stopped")
    status, reason = world.route_host(host)
    assert status == 503 and "no ready allocation in its own environment" in str(reason)
    assert world.route(WEB) == (200, production)  # production is untouched, and never answers for the lane
    assert world.store.count("allocations") == rows_before and world.routed_owners() == world.committed()
    assert world.route_host("dep-" + "0" * 24 + ".localhost")[0] == 404


# -- affinity: the edge's own cookie ---------------------------------------------------------------------------------
def _cookie_value(set_cookie: bytes) -> str:
    first, *attributes = set_cookie.decode().split("; ")
    name, _, value = first.partition("=")
    assert name == "rhone_affinity" and attributes == ["Path=/", "HttpOnly", "SameSite=Lax"]
    return value


def test_a_client_without_a_cookie_is_spread_and_told_which_allocation_served_it(world: World) -> None:
    dep = world.deploy("web")
    allocations = dict(world.allocate(dep) for _ in range(3))  # id -> port
    world.move(dep)
    world.edge.sync_once()
    firsts = []
    for _ in range(30):
        status, targets = world.edge.candidates(f"{WEB}.localhost")
        assert status == 200 and len(targets) == 3
        for target in targets:  # whichever serves the request pins the client to itself
            alloc_id = _cookie_value(target.set_cookie).rpartition(".")[0]
            assert allocations[alloc_id] == target.port
        firsts.append(targets[0].port)
    assert Counter(firsts) == dict.fromkeys(allocations.values(), 10)


def test_a_valid_cookie_keeps_the_client_on_its_allocation_until_it_leaves_rotation(world: World) -> None:
    dep = world.deploy("web")
    allocations = dict(world.allocate(dep) for _ in range(3))
    world.move(dep)
    world.edge.sync_once()
    [chosen, kept_id] = list(allocations)[1:3]
    cookie = world.edge.affinity.value(chosen)
    for _ in range(10):
        _, targets = world.edge.candidates(f"{WEB}.localhost", ("someone-else.forged", cookie))
        assert targets[0] == (allocations[chosen], None)  # no new cookie: the client has the right one
        assert {t.port for t in targets} == set(allocations.values())  # the others follow, to fall back on
    kept_cookie = world.edge.affinity.value(kept_id)

    # Its allocation drains: the client moves (and is told where); another client stays where it was.
    world.set_allocation(chosen, "draining")
    _, targets = world.edge.candidates(f"{WEB}.localhost", (cookie,))
    assert targets[0].port != allocations[chosen] and targets[0].set_cookie is not None
    assert world.edge.candidates(f"{WEB}.localhost", (kept_cookie,))[1][0] == (allocations[kept_id], None)

    # The route moves to another deployment: old cookies name no candidate, so every client is re-pinned.
    successor = world.deploy("web")
    for _ in range(2):
        world.allocate(successor)
    world.move(successor)
    world.edge.sync_once()
    _, targets = world.edge.candidates(f"{WEB}.localhost", (kept_cookie,))
    assert targets[0].port not in allocations.values() and targets[0].set_cookie is not None


def test_a_forged_or_tampered_cookie_counts_as_none(world: World) -> None:
    dep = world.deploy("web")
    allocations = dict(world.allocate(dep) for _ in range(3))
    world.move(dep)
    world.edge.sync_once()
    victim, other = list(allocations)[:2]
    genuine = world.edge.affinity.value(victim)
    signature = genuine.rpartition(".")[2]
    another_server = Edge(EdgeFeed(world.store)).affinity.value(victim)  # the same allocation, signed with another key
    forged = [
        victim,
        victim + ".",
        f"{victim}.{'A' * len(signature)}",
        f"{other}.{signature}",  # a real signature moved onto another allocation
        another_server,
        genuine[:-1] + ("A" if genuine[-1] != "A" else "B"),
        genuine + "x",
        f"{victim}.{signature}.{signature}",
    ]
    assert another_server != genuine
    for value in forged:
        firsts = set()
        for _ in range(6):
            _, targets = world.edge.candidates(f"{WEB}.localhost", (value,))
            assert targets[0].set_cookie is not None, value  # treated as no cookie: a genuine one is issued
            firsts.add(targets[0].port)
        assert len(firsts) == 3, value  # and the client is spread like any other


def test_one_allocation_needs_no_cookie(world: World) -> None:
    dep = world.deploy("web")
    _, port = world.allocate(dep)
    world.move(dep)
    world.edge.sync_once()
    assert world.edge.candidates(f"{WEB}.localhost")[1] == [(port, None)]
    assert world.edge.candidates(f"{WEB}.localhost", ("stale.cookie",))[1] == [(port, None)]


def test_the_affinity_key_is_made_once_private_and_reused(tmp_path: Path) -> None:
    key = affinity_key(tmp_path)
    path = tmp_path / "edge-affinity.key"
    assert len(key) == 32 and path.read_bytes() == key and (path.stat().st_mode & 0o777) == 0o600
    assert affinity_key(tmp_path) == key
    assert Affinity(key).value("alloc_1") == Affinity(affinity_key(tmp_path)).value("alloc_1")  # across restarts
    path.write_bytes(b"short")  # damaged: replaced (clients are only re-pinned), never used as a key
    replaced = affinity_key(tmp_path)
    assert len(replaced) == 32 and replaced != key and (path.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edge-affinity.key"]


# -- rotation: what the relay may keep connections to ----------------------------------------------------------------
def test_the_relay_is_told_the_ports_in_rotation_whenever_they_change(world: World) -> None:
    told: list[frozenset[int]] = []
    world.edge.on_rotation = told.append
    dep = world.deploy("web")
    first_id, first = world.allocate(dep)
    world.edge.sync_once()
    _, second = world.allocate(dep, "preview")
    world.edge.sync_once()
    world.edge.sync_once()  # nothing changed: nothing told
    world.set_allocation(first_id, "draining")
    world.edge.sync_once()
    assert told == [frozenset({first}), frozenset({first, second}), frozenset({second})]
