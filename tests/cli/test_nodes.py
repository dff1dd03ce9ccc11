"""Nodes sharing one store (docs/multi-node.md, "Nodes"): names held by one live process, placement on live runner
nodes only, start-up and shutdown per node, and a lapsed node's allocations replaced elsewhere.

Several in-process control planes share one SQLite file (several `Store` objects, as several nodes would share one
PostgreSQL database); the nodes' clock is replaced (`NodeStore.node_clock`), so a lapse is a number, never a wait.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rhone_cli.errors import ExitCode
from rhone_local import processes
from rhone_local.nodes import NodeIdentity, node_name_problem, parse_roles
from rhone_local.operations.placement import runner_nodes
from rhone_local.server import _join, open_control_plane
from rhone_local.store import NodeNameTaken, Store
from rhone_local.store.nodes import NodeStore
from tests.e2e.helpers import hello_app

LAPSE = 10.0


@pytest.fixture
def app_dir(cli):
    return hello_app(cli.cwd)


def route_owner(cli, app_dir) -> tuple[str, int]:
    route = cli.json("route", "show", "production", cwd=app_dir)
    return route["deployment_id"], route["epoch"]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The nodes' clock, for every store of the test: `clock[0] += n` moves it."""
    now = [1_000_000.0]
    monkeypatch.setattr(NodeStore, "node_clock", lambda self: now[0])
    return now


def test_node_names_and_roles_are_validated():
    assert node_name_problem("runner-1") is None and node_name_problem("a" * 63) is None
    for bad in ("", "A", "a_b", "a" * 64, "a/b", "../x", "a b"):
        assert node_name_problem(bad), bad
    assert parse_roles("runner") == (frozenset({"runner"}), None)
    assert parse_roles("api, edge")[0] == frozenset({"api", "edge"})
    for bad in ("", "api,", "apis", "api,root"):
        assert parse_roles(bad)[0] is None, bad


def test_a_live_name_is_refused_to_another_instance_and_free_once_it_lapsed(tmp_path: Path, clock: list[float]):
    store = Store(tmp_path / "rhone.db")
    store.register_node("a", ["runner"], "127.0.0.1", "first", LAPSE)
    before = store.all("SELECT * FROM nodes")
    with pytest.raises(NodeNameTaken):
        store.register_node("a", ["api"], "127.0.0.1", "second", LAPSE)
    clock[0] += LAPSE - 1
    with pytest.raises(NodeNameTaken):  # not lapsed yet: one second left
        store.register_node("a", ["api"], "127.0.0.1", "second", LAPSE)
    assert store.all("SELECT * FROM nodes") == before  # a refusal changes nothing
    assert store.heartbeat_node("a", "first")  # the holder renews
    clock[0] += LAPSE + 1
    taken = store.register_node("a", ["api"], "127.0.0.1", "second", LAPSE)  # lapsed: taken over
    assert (taken["instance_id"], taken["roles"]) == ("second", "api")
    assert not store.heartbeat_node("a", "first")  # the old instance learns it lost the name
    store.leave_node("a", "second")
    assert store.register_node("a", ["runner"], "127.0.0.1", "third", LAPSE)["instance_id"] == "third"
    assert store.count("nodes") == 1


def test_placement_picks_the_least_loaded_live_runner_by_name_and_never_a_lapsed_one(tmp_path: Path, clock):
    store = Store(tmp_path / "rhone.db")
    assert runner_nodes(store, 2, own=("local", "127.0.0.1"), lapse=LAPSE) == [("local", "127.0.0.1")] * 2
    assert runner_nodes(store, 1, own=None, lapse=LAPSE) == [None]  # no runner anywhere: nowhere to run
    for name, roles in (("b", ["runner"]), ("a", ["runner"]), ("w", ["worker", "api"]), ("old", ["runner"])):
        store.register_node(name, roles, "127.0.0.1", name, LAPSE)
    clock[0] += LAPSE / 2
    for name in ("a", "b", "w"):
        store.heartbeat_node(name, name)
    clock[0] += LAPSE / 2 + 1  # "old" lapsed; the others beat half a window ago
    placed = runner_nodes(store, 4, own=("w", "127.0.0.1"), lapse=LAPSE)
    assert [p[0] for p in placed if p] == ["a", "b", "a", "b"]  # ties by name, then balanced; never w or old


def _live(store: Store, environment_id: str) -> list[dict]:
    return store.all(
        "SELECT * FROM allocations WHERE environment_id = ? AND state IN ('planned', 'pulling', 'starting', 'ready') "
        "ORDER BY id",
        environment_id,
    )


def _production(api_app) -> dict:
    return api_app.store.one("SELECT * FROM environments WHERE name = 'production'")


def _until(predicate, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout  # generous: a loaded machine delays, never changes, the outcome
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_stopping_node_b_never_touches_node_a_s_allocations_or_leases(cli, api_app, app_dir, clock):
    """The bug the issue opens with: a second control plane on the same store adopted, released and stopped what
    the first one runs. Here node B starts and stops beside node `local`; `local`'s allocation rows, process, leases
    and route epoch are exactly as they were."""
    api_app.plane.join()
    deployed = cli.json("deploy", "--promote", cwd=app_dir)["deployment"]
    env = _production(api_app)
    (alloc,) = _live(api_app.store, env["id"])
    assert (alloc["node"], alloc["state"]) == ("local", "ready")
    lease = ("local/worker-999999-control-0", 4_000_000_000.0)  # a lease node local's worker holds
    api_app.store.conn.execute(
        "UPDATE operations SET lease_owner = ?, lease_until = ? WHERE id = (SELECT MAX(id) FROM operations)", lease
    )
    before = {
        t: api_app.store.all(f"SELECT * FROM {t} ORDER BY 1") for t in ("allocations", "route_owners", "operations")
    }

    node_b = open_control_plane(api_app.data_dir, node=NodeIdentity("zz-b"))
    try:
        node_b.join()
        assert node_b.runner.reconcile() == []  # start-up: adopts nothing of another node's, drains nothing
        node_b.workers.start()  # start-up releases its own node's stale leases only
        node_b.reconciler.round()  # local leads the cluster's share (first live worker by name): B heals nothing
    finally:
        node_b.close()  # SIGTERM's path: stop every allocation of B, leave the cluster

    after = {
        t: api_app.store.all(f"SELECT * FROM {t} ORDER BY 1") for t in ("allocations", "route_owners", "operations")
    }
    assert after == before
    assert processes.leader_alive(alloc["pid"], alloc["pid_start_time"])
    assert route_owner(cli, app_dir) == (deployed["id"], 1)
    assert {n["name"]: n["live"] for n in api_app.store.nodes(LAPSE)} == {"local": True, "zz-b": False}


def test_an_operation_no_live_worker_node_would_advance_is_refused_not_left_queued(cli, api_app, app_dir, clock):
    """An API node whose cluster has no live worker (an `api,edge` node beside stopped worker nodes; here node
    local's heartbeat lapsed) used to accept a deploy that then waited in `queued` forever, and the CLI with it.
    Refused instead (409 `no_live_worker`, exit 5), recording nothing; accepted again once a worker node is live."""
    api_app.plane.join()
    clock[0] += LAPSE + 1
    tables = ("operations", "projects", "apps", "deployments")
    before = {t: api_app.store.all(f"SELECT * FROM {t} ORDER BY 1") for t in tables}
    refused = cli.fails(ExitCode.CONFLICT, "deploy", "--no-wait", cwd=app_dir)
    assert refused["code"] == "no_live_worker", refused
    assert {t: api_app.store.all(f"SELECT * FROM {t} ORDER BY 1") for t in tables} == before
    assert api_app.plane.membership.beat()  # a worker node is live again
    accepted = cli.json("deploy", "--no-wait", cwd=app_dir)
    assert (accepted["kind"], accepted["state"]) == ("deploy", "queued"), accepted


@pytest.mark.slow
def test_a_stopping_node_is_no_placement_target_while_it_drains(cli, api_app, app_dir, clock, monkeypatch):
    """Runner-only node `z-run` beside node `local`: the preview lands on local and production on z-run (least
    loaded, ties by name). z-run stops cleanly while local's reconciler heals the instance z-run drained: the
    replacement must go to local. A stopping node that still counted as live (it left only after its drains) got the
    replacement placed on itself, `planned` on a node whose runner was closing, left behind once it left."""
    local = api_app.plane
    local.join()
    stopping = open_control_plane(api_app.data_dir, node=NodeIdentity("z-run", frozenset({"runner"})))
    try:
        stopping.join()
        stopping.reconciler.start()  # starts what local's workers place on it
        deployed = cli.json("deploy", "--promote", cwd=app_dir)["deployment"]
        env = _production(api_app)
        (placed,) = _live(api_app.store, env["id"])
        assert (placed["node"], placed["state"]) == ("z-run", "ready")
        epoch = route_owner(cli, app_dir)
        events = api_app.store.all("SELECT * FROM route_events")
        stop_engines = stopping.pipeline.engines.stop_all

        def heal_then_stop_engines() -> None:
            local.reconciler.round()  # the leader's round, once z-run's drain ended and before it is gone
            _until(lambda: _live(api_app.store, env["id"]), "the heal placing the instance")
            stop_engines()

        monkeypatch.setattr(stopping.pipeline.engines, "stop_all", heal_then_stop_engines)
        # The path of a hand-over that failed (local's runner, which runs no rounds here, never starts it): the
        # instance drains first, and healing replaces it.
        monkeypatch.setattr(stopping.runner, "hand_over", lambda: [])
        stopping.close()

        def replaced() -> bool:
            local.reconciler.round()
            return any(a["state"] == "ready" for a in _live(api_app.store, env["id"]))

        _until(replaced, "a replacement on local")
        assert [(a["node"], a["deployment_id"]) for a in _live(api_app.store, env["id"])] == [("local", deployed["id"])]
        on_stopped = api_app.store.all("SELECT id, state FROM allocations WHERE node = 'z-run' ORDER BY id")
        assert on_stopped == [{"id": placed["id"], "state": "stopped"}], on_stopped
        assert route_owner(cli, app_dir) == epoch == (deployed["id"], 1)
        assert api_app.store.all("SELECT * FROM route_events") == events
        assert {n["name"]: n["live"] for n in api_app.store.nodes(LAPSE)} == {"local": True, "z-run": False}
    finally:
        stopping.close()


@pytest.mark.slow
def test_a_stopping_node_hands_its_production_instance_over_before_it_drains_it(
    cli, api_app, app_dir, clock, monkeypatch
):
    """Runner-only node `z-run` beside node `local` (every role, its reconciler running: it starts what is placed on
    it and leads the healing). Production lands on z-run; z-run stops cleanly. A replacement must be ready on local
    before z-run's instance leaves `ready` — exactly one, the route's deployment and epoch unchanged. Before, z-run
    drained first (or the leader took its instances for a lapsed node's) and healing started one only afterwards:
    the edges had no ready instance for about a second."""
    local = api_app.plane
    local.join()
    stopping = open_control_plane(api_app.data_dir, node=NodeIdentity("z-run", frozenset({"runner"})))
    try:
        stopping.join()
        stopping.reconciler.start()
        deployed = cli.json("deploy", "--promote", cwd=app_dir)["deployment"]
        env = _production(api_app)
        (placed,) = _live(api_app.store, env["id"])
        assert (placed["node"], placed["state"]) == ("z-run", "ready")
        epoch = route_owner(cli, app_dir)
        events = api_app.store.all("SELECT * FROM route_events")
        before = api_app.store.count("allocations")
        local.reconciler.start()  # the leader's rounds run while z-run stops: healing must not add a second one

        ready_elsewhere_when_it_left: list[list[str]] = []
        moves = api_app.store.move_allocation.__func__

        def watch(store, alloc, state, **columns):
            if alloc["id"] == placed["id"] and state != "ready":
                rows = _live(store, env["id"])
                ready_elsewhere_when_it_left.append(
                    [a["node"] for a in rows if a["state"] == "ready" and a["id"] != placed["id"]]
                )
            return moves(store, alloc, state, **columns)

        monkeypatch.setattr(Store, "move_allocation", watch)
        stopping.close()
        local.reconciler.stop()

        assert ready_elsewhere_when_it_left[0] == ["local"], ready_elsewhere_when_it_left
        live = _live(api_app.store, env["id"])
        assert [(a["node"], a["state"], a["deployment_id"]) for a in live] == [("local", "ready", deployed["id"])]
        assert api_app.store.count("allocations") == before + 1  # exactly one replacement
        assert api_app.store.allocation(placed["id"])["state"] == "stopped"
        assert not processes.allocation_processes(placed["id"], placed["pid"], placed["pid_start_time"])
        assert route_owner(cli, app_dir) == epoch == (deployed["id"], 1)
        assert api_app.store.all("SELECT * FROM route_events") == events
        assert {n["name"]: n["live"] for n in api_app.store.nodes(LAPSE)} == {"local": True, "z-run": False}
    finally:
        local.reconciler.stop()
        stopping.close()


@pytest.mark.slow
def test_a_stopping_node_with_no_other_live_runner_drains_as_before_and_ends(cli, api_app, app_dir, clock):
    """The only runner node stops: nowhere to hand its instance over, so it drains and stops it (no new allocation,
    the route unchanged) and the stop ends."""
    local = api_app.plane
    local.join()
    deployed = cli.json("deploy", "--promote", cwd=app_dir)["deployment"]
    env = _production(api_app)
    (placed,) = _live(api_app.store, env["id"])
    epoch = route_owner(cli, app_dir)
    before = api_app.store.count("allocations")
    local.stop()
    assert api_app.store.count("allocations") == before
    assert api_app.store.allocation(placed["id"])["state"] == "stopped"
    assert not processes.allocation_processes(placed["id"], placed["pid"], placed["pid_start_time"])
    assert _live(api_app.store, env["id"]) == []
    assert api_app.store.one("SELECT deployment_id, epoch FROM route_owners") == {
        "deployment_id": deployed["id"],
        "epoch": epoch[1],
    }


@pytest.mark.slow
def test_a_lapsed_runner_s_allocations_are_replaced_on_a_live_node_and_it_stops_them_when_back(
    cli, api_app, app_dir, clock
):
    """Runner-only nodes `a-run` and `b-run` beside node `local` (every role): the preview lands on a-run and
    production on b-run (least loaded, ties by name). b-run's heartbeat lapses; local's reconciler replaces its
    allocation on the least loaded live runner (local) — the route's owner and epoch unchanged. When b-run comes back
    it finds its allocation out of rotation and stops its process itself."""
    local = api_app.plane
    local.join()
    runners = [
        open_control_plane(api_app.data_dir, node=NodeIdentity(n, frozenset({"runner"}))) for n in ("a-run", "b-run")
    ]
    try:
        for node in runners:
            node.join()
            node.reconciler.start()  # starts what local's workers place on it
        deployed = cli.json("deploy", "--promote", cwd=app_dir)["deployment"]
        env = _production(api_app)
        (placed,) = _live(api_app.store, env["id"])
        assert (placed["node"], placed["state"], placed["deployment_id"]) == ("b-run", "ready", deployed["id"])
        assert processes.leader_alive(placed["pid"], placed["pid_start_time"])
        stalled = runners[1]
        stalled.reconciler.stop()  # b-run stalls: no heartbeat, no rounds
        epoch = route_owner(cli, app_dir)

        clock[0] += LAPSE + 1
        assert local.membership.beat() and runners[0].membership.beat()
        assert [n["name"] for n in api_app.store.live_nodes("runner", LAPSE)] == ["a-run", "local"]

        def replaced() -> bool:
            local.reconciler.round()
            return any(a["state"] == "ready" for a in _live(api_app.store, env["id"]))

        _until(replaced, "a replacement on a live node")
        live = _live(api_app.store, env["id"])
        assert [(a["node"], a["deployment_id"]) for a in live] == [("local", deployed["id"])]
        assert route_owner(cli, app_dir) == epoch == (deployed["id"], 1)  # the deployment did not change
        stale = api_app.store.allocation(placed["id"])
        assert (stale["state"], stale["end_state"]) == ("draining", "failed")
        assert processes.leader_alive(placed["pid"], placed["pid_start_time"])  # only b-run may signal it

        assert stalled.membership.beat()  # b-run comes back: its name is still its own

        def stopped() -> bool:
            stalled.reconciler.round()
            return api_app.store.allocation(placed["id"])["state"] == "failed"

        _until(stopped, "b-run stopping its stale allocation")
        assert not processes.allocation_processes(placed["id"], placed["pid"], placed["pid_start_time"])
        assert [a["node"] for a in _live(api_app.store, env["id"])] == ["local"]
    finally:
        for node in runners:
            node.close()


def test_a_live_name_refuses_a_second_control_plane_and_a_server_s_lock_takes_a_dead_one_over(tmp_path: Path, clock):
    """Joining with a name another live instance holds is refused and changes nothing. A server on SQLite holds the
    data directory's lock (one server per store), so `_join` takes a name still beating over: its holder is a crashed
    predecessor. (Across processes on PostgreSQL the name's advisory lock decides: tests/e2e/test_nodes_e2e.py.)"""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    first = open_control_plane(data_dir, node=NodeIdentity("busy", frozenset({"runner"})))
    second = open_control_plane(data_dir, node=NodeIdentity("busy"))
    try:
        first.join()
        before = first.store.all("SELECT * FROM nodes")
        with pytest.raises(NodeNameTaken):
            second.join()
        assert first.store.all("SELECT * FROM nodes") == before
        assert first.membership.beat()

        _join(second)
        (row,) = first.store.all("SELECT * FROM nodes")
        assert (row["instance_id"], row["roles"]) == (second.node.instance_id, "api,edge,runner,worker")
        assert not first.membership.beat() and first.membership.lost.is_set()  # it stops its processes and exits
    finally:
        first.close()
        second.close()


class _FlakyHeartbeatStore:
    """A store whose first heartbeats fail as a full disk does, and then as a bug would."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures, self.beats = list(failures), 0

    def heartbeat_node(self, name: str, instance_id: str) -> bool:
        self.beats += 1
        if self.failures:
            raise self.failures.pop(0)
        return True

    def leave_node(self, name: str, instance_id: str) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_heartbeat_the_store_cannot_record_is_a_warning_and_the_node_keeps_beating(caplog):
    """A full disk (CI saw it in the disk-full test) or a busy store is the store's condition, not a fault: a warning
    naming it, no traceback, and the next beat goes on. Anything else is still logged with its traceback."""
    import sqlite3

    from rhone_local.nodes import Membership

    store = _FlakyHeartbeatStore(
        [sqlite3.OperationalError("database or disk is full"), RuntimeError("a bug"), sqlite3.OperationalError("busy")]
    )
    membership = Membership(store, NodeIdentity(name="a"), heartbeat=0.01)  # type: ignore[arg-type]
    with caplog.at_level("WARNING", logger="rhone_local.nodes"):
        membership.start()
        deadline = time.monotonic() + 30
        while store.beats < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        membership.stop()
    assert store.beats >= 5  # it kept beating after each failure
    records = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert records == [
        ("WARNING", "node a: heartbeat not recorded (database or disk is full); retrying", False),
        ("ERROR", "node a: heartbeat failed; retrying", True),
        ("WARNING", "node a: heartbeat not recorded (busy); retrying", False),
    ]
