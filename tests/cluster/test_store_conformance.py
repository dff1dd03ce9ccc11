"""One conformance suite over both store backends (docs/architecture.md, "The store"; docs/multi-node.md): each test
tries to break a promise the store's docstrings make, on SQLite (a file in a temporary directory) and on PostgreSQL
(a fresh database of the session's cluster), through real connections and real threads."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rhone_local.domain.access import Principal
from rhone_local.domain.ids import new_id
from rhone_local.domain.operations import TERMINAL_STATES
from rhone_local.server import bootstrap
from rhone_local.store import SCHEMA_VERSION, NodeNameTaken, Store

pytestmark = pytest.mark.slow  # PostgreSQL clusters and threads

OpenStore = Callable[[], Store]


def _close(store: Store) -> None:
    shutdown = getattr(store, "shutdown", None)
    (shutdown or store.close)()


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens another store (another process's view: its own connections) on the test's one database."""
    opened: list[Store] = []

    def opener() -> Store:
        if request.param == "sqlite":
            store = Store(tmp_path / "rhone.db")
        else:
            from rhone_local.store.postgres import PostgresStore

            store = PostgresStore(request.getfixturevalue("pg_database"), tmp_path)
        opened.append(store)
        return store

    if request.param == "postgresql":
        request.getfixturevalue("pg_database")  # created before the test's threads ask for it
    yield opener
    for store in opened:
        _close(store)


@pytest.fixture
def store(open_store: OpenStore, tmp_path: Path) -> Store:
    opened = open_store()
    bootstrap(opened, tmp_path)
    return opened


def _principal(store: Store) -> Principal:
    owner = store.one("SELECT id FROM users LIMIT 1")
    assert owner is not None
    return Principal("user", owner["id"], "owner", "tok_test")


def create_operations(store: Store, count: int) -> list[str]:
    """`count` new project.create operations by the bootstrap owner, in one write transaction; their ids."""
    workspace = store.bootstrap_workspace()
    assert workspace is not None
    principal = _principal(store)
    ids = []
    with store.write() as c:
        for index in range(count):
            op = store.create_operation(
                c,
                workspace_id=workspace["id"],
                kind="project.create",
                target_kind="project",
                target_id=f"prj_{index}",
                params={"name": f"p{index}"},
                principal=principal,
                request_id=f"req_{index}",
                idempotency_key=None,
            )
            ids.append(op["id"])
    return ids


def _in_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run `target(i)` in `count` threads released together; their results (an exception is re-raised here)."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            start.wait(30)
            results[index] = target(index)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    return results


def test_concurrent_claims_lease_each_operation_once(store: Store, open_store: OpenStore) -> None:
    created = create_operations(store, 40)
    stores = [open_store() for _ in range(4)]

    def claim_all(index: int) -> list[str]:
        claimed = []
        while (op := stores[index].claim_operation(f"worker-{index}", 60.0, TERMINAL_STATES)) is not None:
            claimed.append(op["id"])
        stores[index].close()
        return claimed

    per_worker = _in_threads(4, claim_all)
    everything = [op_id for claimed in per_worker for op_id in claimed]
    assert Counter(everything).most_common(1)[0][1] == 1  # never one operation leased twice
    assert sorted(everything) == sorted(created)
    owners = {row["id"]: row["lease_owner"] for row in store.all("SELECT id, lease_owner FROM operations")}
    for index, claimed in enumerate(per_worker):
        assert all(owners[op_id] == f"worker-{index}" for op_id in claimed)


def test_an_expired_lease_is_neither_renewed_nor_written_through(store: Store) -> None:
    (op_id,) = create_operations(store, 1)
    expired = store.claim_operation("worker-a", -1.0, TERMINAL_STATES)  # expired on the database's clock at once
    assert expired is not None and expired["id"] == op_id
    assert store.renew_lease(op_id, "worker-a", 30.0) is False
    assert store.advance_operation(expired, "validating", worker="worker-a") is None
    unchanged = store.operation(op_id)
    assert unchanged is not None
    assert (unchanged["version"], unchanged["state"], unchanged["lease_owner"]) == (1, "queued", "worker-a")
    taken = store.claim_operation("worker-b", 30.0, TERMINAL_STATES)
    assert taken is not None and taken["id"] == op_id and taken["lease_owner"] == "worker-b"
    assert store.renew_lease(op_id, "worker-b", 30.0) is True
    assert store.renew_lease(op_id, "worker-a", 30.0) is False


def test_start_up_frees_only_what_the_backend_knows_is_dead(store: Store) -> None:
    (op_id,) = create_operations(store, 1)
    assert store.claim_operation("worker-999-control-0", 60.0, TERMINAL_STATES) is not None
    released = store.release_leases_except("worker-1-")
    row = store.operation(op_id)
    assert row is not None
    if store.SINGLE_OWNER:  # SQLite: one server per data directory, so another process's lease is a dead one's
        assert (released, row["lease_owner"]) == (1, None)
    else:  # a shared store: another node's lease is live until it expires on the database's clock
        assert (released, row["lease_owner"]) == (0, "worker-999-control-0")


def _seed_route(store: Store, deployments: int) -> tuple[str, str, list[str]]:
    """An app with an environment and `deployments` deployments (the route moves between them)."""
    workspace = store.bootstrap_workspace()
    assert workspace is not None
    ws, ts = workspace["id"], "2026-01-01T00:00:00.000Z"
    project_id, app_id, env_id = new_id("project"), new_id("app"), new_id("environment")
    deployment_ids = [new_id("deployment") for _ in range(deployments)]
    with store.write() as c:
        store.insert_project(c, project_id=project_id, workspace_id=ws, name="shop", operation_id="op_x")
        store.insert_app(c, app_id=app_id, workspace_id=ws, project_id=project_id, name="web", operation_id="op_x")
        store.insert_environment(
            c,
            environment_id=env_id,
            workspace_id=ws,
            app_id=app_id,
            name="production",
            approval_required=False,
            frozen=False,
            operation_id="op_x",
        )
        for deployment_id in deployment_ids:
            c.execute(
                "INSERT INTO deployments VALUES (?, ?, ?, ?, 'op_x', 'ready', 0, 'sha256:s', NULL, '{}', '{}', '{}', "
                "NULL, ?, ?)",
                (deployment_id, ws, app_id, env_id, ts, ts),
            )
    return app_id, env_id, deployment_ids


def test_route_moves_from_two_connections_are_gap_free_and_in_order(store: Store, open_store: OpenStore) -> None:
    app_id, env_id, deployment_ids = _seed_route(store, 2)
    movers = [open_store(), open_store()]
    watcher = open_store()
    attempts = 15
    done = threading.Event()
    seen: list[int] = []
    watch_errors: list[str] = []

    def watch() -> None:
        while True:
            finished = done.is_set()
            events = watcher.route_events_after(seen[-1] if seen else 0)
            for event in events:
                expected = (seen[-1] if seen else 0) + 1
                if event["seq"] != expected:
                    watch_errors.append(f"saw seq {event['seq']} while {expected} was next")
                seen.append(event["seq"])
            if finished:
                break
        watcher.close()

    def move(index: int) -> int:
        mover, won = movers[index], 0
        for _ in range(attempts):
            owner = mover.route_owner(app_id, env_id)
            epoch = owner["epoch"] if owner else 0
            with mover.write() as c:
                event = mover.move_route(
                    c,
                    app_id=app_id,
                    environment_id=env_id,
                    route_key="web--production",
                    expect_epoch=epoch,
                    deployment_id=deployment_ids[index],
                    artifact_digest="sha256:a",
                    operation_id=f"op_{index}",
                    kind="promote",
                )
            won += event is not None
        mover.close()
        return won

    watcher_thread = threading.Thread(target=watch)
    watcher_thread.start()
    try:
        wins = _in_threads(2, move)
    finally:
        done.set()
        watcher_thread.join(60)
    moved = sum(wins)
    owner = store.route_owner(app_id, env_id)
    assert owner is not None and owner["epoch"] == moved
    assert watch_errors == []
    assert seen == list(range(1, moved + 1))
    events = store.route_events_after(0)
    assert [e["seq"] for e in events] == list(range(1, moved + 1))
    assert [e["epoch"] for e in events] == list(range(1, moved + 1))  # one event per epoch: no move lost or doubled
    assert store.last_route_seq() == moved


def test_twenty_concurrent_copies_of_one_idempotent_request_create_one_operation(
    store: Store, open_store: OpenStore
) -> None:
    workspace = store.bootstrap_workspace()
    assert workspace is not None
    principal = _principal(store)
    stores = [open_store() for _ in range(20)]

    def request(index: int) -> str:
        copy = stores[index]
        with copy.write() as c:
            first = copy.idempotent_response(c, principal.id, "key-1")
            if first is not None:
                outcome = "replay"
            else:
                op = copy.create_operation(
                    c,
                    workspace_id=workspace["id"],
                    kind="project.create",
                    target_kind="project",
                    target_id="prj_1",
                    params={"name": "shop"},
                    principal=principal,
                    request_id=f"req_{index}",
                    idempotency_key="key-1",
                )
                copy.remember_response(
                    c,
                    principal_id=principal.id,
                    key="key-1",
                    method="POST",
                    path="/v1/projects",
                    body_hash="h",
                    status=202,
                    response={"operation_id": op["id"]},
                )
                outcome = "created"
        copy.close()
        return outcome

    outcomes = Counter(_in_threads(20, request))
    assert outcomes == {"created": 1, "replay": 19}
    assert store.count("operations") == 1
    assert store.count("idempotency") == 1


def test_migrations_are_applied_once_by_concurrent_openers(open_store: OpenStore) -> None:
    stores = _in_threads(3, lambda _: open_store())
    assert {store.migrated_from for store in stores} <= {0, max(s.migrated_from for s in stores)}
    assert sorted(store.migrated_from for store in stores)[0] == 0  # exactly one of them found a new database
    assert [store.migrated_from for store in stores].count(0) == 1
    for store in stores:
        assert store.count("workspaces") == 0
    if not stores[0].SINGLE_OWNER:
        rows = stores[0].all("SELECT version FROM schema_migrations ORDER BY version")
        versions = [row["version"] for row in rows]
        assert versions == sorted(set(versions)) and versions[-1] == SCHEMA_VERSION


class RecordingNotifier:
    def __init__(self) -> None:
        self.changes: Counter[str] = Counter()
        self.wakeups = 0
        self.connections = 0  # `everything_changed`: the listener (re)connected, every waiter reads again
        self.event = threading.Event()
        self.woke = threading.Event()
        self.lock = threading.Lock()

    def changed(self, op_id: str) -> None:
        with self.lock:
            self.changes[op_id] += 1
        self.event.set()

    def everything_changed(self) -> None:
        with self.lock:
            self.connections += 1

    def work_available(self) -> None:
        with self.lock:
            self.wakeups += 1
        self.woke.set()


# PostgreSQL only: an SQLite store has one owning process, whose writers wake its listeners in process.
@pytest.mark.parametrize("open_store", ["postgresql"], indirect=True)
def test_a_commit_through_one_store_wakes_the_listeners_of_another(store: Store, open_store: OpenStore) -> None:
    other = open_store()
    notifier = RecordingNotifier()
    other.listen_for_changes(notifier)
    version = other.data_version()
    (op_id,) = create_operations(store, 1)
    assert notifier.event.wait(30)
    assert notifier.changes == {op_id: 1}
    assert notifier.wakeups >= 1
    assert notifier.connections == 1  # connected once, before the commit: nothing to read again since
    assert other.data_version() > version
    # A lease renewal is no change of the operation: it wakes nobody.
    notifier.event.clear()
    claimed = store.claim_operation("worker-a", 30.0, TERMINAL_STATES)
    assert claimed is not None
    assert store.advance_operation(claimed, "validating", worker="worker-a") is not None
    assert notifier.event.wait(30)
    assert notifier.changes == {op_id: 2}
    # What decides whether an allocation may serve (a region made eligible) moves the edge feed's data version too.
    _, env_id, _ = _seed_route(store, 1)
    notifier.event.clear()
    (sentinel,) = create_operations(store, 1)  # notifications arrive in commit order: the seed's are in once it is
    assert notifier.event.wait(30) and notifier.changes[sentinel] == 1
    seen = other.data_version()
    notifier.woke.clear()
    with store.write() as c:
        store.set_environment_region(
            c,
            environment_id=env_id,
            region_id=store.primary_region()["id"],
            state="eligible",
            operation_id="op_r",
            reason=None,
        )
    assert notifier.woke.wait(30)
    assert other.data_version() > seen


def test_one_session_lock_holder_across_stores(store: Store, open_store: OpenStore) -> None:
    if store.SINGLE_OWNER:
        assert store.session_lock("routes") is None  # route_stream's in-process lock serves
        return
    first, second = store.session_lock("routes"), open_store().session_lock("routes")
    assert first.acquire() is True
    assert second.acquire() is False
    first.release()
    assert second.acquire() is True
    second.release()


def test_a_stage_whose_lease_is_lost_is_not_recorded_and_renewing_stops(store: Store, open_store: OpenStore) -> None:
    from rhone_local.notify import ChangeNotifier
    from rhone_local.operations.kinds import Advance, Kind
    from rhone_local.workers import Workers

    (op_id,) = create_operations(store, 1)
    thief_store = open_store()
    refused = threading.Event()
    renewals: list[bool] = []
    renew = store.renew_lease

    def counted_renew(op: str, worker: str, seconds: float) -> bool:
        renewed = renew(op, worker, seconds)
        renewals.append(renewed)
        if not renewed:
            refused.set()
        return renewed

    store.renew_lease = counted_renew  # type: ignore[method-assign]

    def stage(op: dict[str, Any]) -> Advance:
        # Another worker takes the operation over while this stage runs (its lease handed on, as after an expiry).
        thief_store.release_operation(op["id"], "worker-1")
        assert thief_store.claim_operation("thief", 60.0, TERMINAL_STATES) is not None
        assert refused.wait(30)  # the heartbeat learnt it
        refused.clear()
        # Ten more beats' time: a heartbeat that kept renewing would be refused again (this one stopped).
        assert not refused.wait(10 * 0.6 / 3)
        effect = lambda c: store.audit(  # noqa: E731
            workspace_id=None,
            principal=_principal(store),
            action="stage.effect",
            target=op["id"],
            request_id="req_stage",
            result="allowed",
            tx=c,
        )
        return Advance("validating", effect=effect)

    workers = Workers(
        store, ChangeNotifier(), lease_seconds=0.6, kinds={"project.create": Kind("project.create", {"queued": stage})}
    )
    claimed = store.claim_operation("worker-1", 0.6, TERMINAL_STATES)
    assert claimed is not None and claimed["id"] == op_id
    audits = store.count("audit")
    workers.drive(claimed, "worker-1")
    row = store.operation(op_id)
    assert row is not None
    assert (row["version"], row["state"], row["lease_owner"]) == (1, "queued", "thief")
    assert store.count("audit") == audits  # the stage's effect rolled back with its refused record
    assert renewals.count(False) == 1  # the heartbeat stopped at the first refusal


def test_a_plain_portable_migration_translates_unchanged_in_meaning() -> None:
    from rhone_local.store.postgres import pg_schema

    nodes = (
        "-- Version 10: nodes (json_extract in a comment is no statement).\n"
        "CREATE TABLE nodes (\n    name TEXT PRIMARY KEY,\n    roles TEXT NOT NULL,\n    heartbeat_at REAL,\n"
        "    generation INTEGER NOT NULL DEFAULT 0\n) STRICT;\n"
        "ALTER TABLE allocations ADD COLUMN node TEXT;\n"
        "CREATE INDEX allocations_node ON allocations (node, state);\n"
    )
    translated = pg_schema(nodes, "010_nodes.sql")
    assert "STRICT" not in translated and "json_extract" not in translated
    assert 'name TEXT COLLATE "C" PRIMARY KEY' in translated
    assert "heartbeat_at DOUBLE PRECISION" in translated and "generation BIGINT NOT NULL DEFAULT 0" in translated
    assert 'ALTER TABLE allocations ADD COLUMN node TEXT COLLATE "C";' in translated


@pytest.mark.parametrize(
    ("statement", "named"),
    [
        ("INSERT OR REPLACE INTO nodes VALUES ('a');", "INSERT OR"),
        ("UPDATE nodes SET at = strftime('%s', 'now');", "strftime"),
        ("UPDATE nodes SET roles = json_set(roles, '$.a', 1);", "json_set"),
        ("PRAGMA foreign_keys = OFF;", "PRAGMA"),
        ("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, x AUTOINCREMENT);", "AUTOINCREMENT"),
    ],
)
def test_a_migration_outside_the_portable_subset_is_refused_by_name(statement: str, named: str) -> None:
    from rhone_local.store.postgres import pg_schema

    with pytest.raises(ValueError, match=f"011_x.sql is not in the portable subset of SQL: '{named}'"):
        pg_schema(statement, "011_x.sql")


def test_of_concurrent_changes_to_one_environment_exactly_one_is_accepted(store: Store, open_store: OpenStore) -> None:
    workspace = store.bootstrap_workspace()
    assert workspace is not None
    principal = _principal(store)
    stores = [open_store() for _ in range(6)]

    def change(index: int) -> str:
        node, kind = stores[index], ("scale", "promote")[index % 2]
        with node.write() as c:
            if node.live_operations(c, "env_1", ("scale", "promote"), exclude=""):
                outcome = "environment_busy"
            else:
                node.create_operation(
                    c,
                    workspace_id=workspace["id"],
                    kind=kind,
                    target_kind="environment",
                    target_id="env_1",
                    params={"environment_id": "env_1"},
                    principal=principal,
                    request_id=f"req_{index}",
                    idempotency_key=None,
                )
                outcome = "accepted"
        node.close()
        return outcome

    assert Counter(_in_threads(6, change)) == {"accepted": 1, "environment_busy": 5}
    assert store.count("operations") == 1


def test_nodes_bootstrapping_one_store_at_once_create_one_workspace(open_store: OpenStore, tmp_path: Path) -> None:
    stores = [open_store() for _ in range(4)]
    for index in range(4):
        (tmp_path / f"node-{index}").mkdir()
    _in_threads(4, lambda index: bootstrap(stores[index], tmp_path / f"node-{index}"))
    assert [stores[0].count(table) for table in ("workspaces", "users", "members", "tokens", "regions")] == [1] * 5
    # Only the node whose bootstrap committed keeps an owner token file: the one the store knows.
    token_files = [
        tmp_path / f"node-{i}" / "owner.token" for i in range(4) if (tmp_path / f"node-{i}" / "owner.token").exists()
    ]
    assert len(token_files) == 1


def test_a_node_name_is_held_by_one_live_instance_across_stores(store: Store, open_store: OpenStore) -> None:
    """Eight processes race for one node name: one wins, the others are refused and change nothing; a lapsed name is
    taken over and its old holder's heartbeat is refused (docs/multi-node.md, "Nodes"). Times are the store's."""
    stores = [open_store() for _ in range(8)]

    def register(index: int) -> str:
        try:
            return stores[index].register_node("a", ["runner"], "127.0.0.1", f"instance-{index}", 3600)["instance_id"]
        except NodeNameTaken:
            return "refused"
        finally:
            stores[index].close()

    outcomes = _in_threads(8, register)
    (winner,) = [o for o in outcomes if o != "refused"]
    assert outcomes.count("refused") == 7
    assert [(n["name"], n["instance_id"], n["live"]) for n in store.nodes(3600)] == [("a", winner, True)]
    assert store.heartbeat_node("a", winner) and not store.heartbeat_node("a", "instance-x")

    # A window of -1 s: every heartbeat is older than it, as after a lapse.
    taken = store.register_node("a", ["api", "worker"], "127.0.0.1", "successor", -1)
    assert (taken["instance_id"], taken["roles"]) == ("successor", "api,worker")
    assert not stores[0].heartbeat_node("a", winner)
    assert [n["name"] for n in stores[1].live_nodes("worker", 3600)] == ["a"]
    assert stores[1].live_nodes("runner", 3600) == []


def test_edge_reports_are_read_across_stores(store: Store, open_store: OpenStore) -> None:
    other = open_store()
    other.register_edge("edge-0.1@b", "b", "ab" * 32)
    assert store.edge_by_token_digest("ab" * 32)["node"] == "b"
    assert store.reporting_edges(3600) == {}  # registered, never heard from
    store.record_edge_report("edge-0.1@b", 5)
    assert other.reporting_edges(3600) == {"edge-0.1@b": 5}
    assert other.reporting_edges(-1) == {}  # heard before a window that ends in the future
    other.forget_edge("edge-0.1@b")
    assert store.edge_by_token_digest("ab" * 32) is None


def test_a_stopping_node_s_hand_over_is_placed_once_across_stores(store: Store, open_store: OpenStore) -> None:
    """Node `b` stops with one instance of a 1-instance environment: the replacements two stores try to insert at
    once for it (the stopping node and a racing placement) become one row; with one already elsewhere, none."""
    from rhone_local.server import ensure_topology

    ensure_topology(store)
    _, env_id, (deployment_id,) = _seed_route(store, 1)
    region = store.primary_region()
    cell = store.cells_of(region["id"])[0]

    def allocation(node: str, state: str = "planned") -> dict[str, Any]:
        ts = "2026-01-01T00:00:00.000Z"
        return {
            "id": new_id("allocation"), "deployment_id": deployment_id, "environment_id": env_id,
            "artifact_digest": "sha256:s", "region_id": region["id"], "cell_id": cell["id"], "state": state,
            "version": 1, "pid": None, "port": None, "health": None, "created_at": ts, "updated_at": ts,
            "bindings_digest": None, "node": node, "address": "127.0.0.1",
        }  # fmt: skip

    store.insert_allocation(allocation("b", "ready"))
    stores = [open_store(), open_store()]

    def hand_over(index: int) -> bool:
        try:
            return stores[index].insert_hand_over(allocation("a"), leaving_node="b", wanted=1)
        finally:
            stores[index].close()

    assert sorted(_in_threads(2, hand_over)) == [False, True]
    rows = store.all("SELECT node, state FROM allocations ORDER BY node")
    assert rows == [{"node": "a", "state": "planned"}, {"node": "b", "state": "ready"}]
    assert not store.insert_hand_over(allocation("c"), leaving_node="b", wanted=1)  # already replaced on a
    assert store.count("allocations") == 2
