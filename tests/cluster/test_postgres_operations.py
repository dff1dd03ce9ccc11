"""Real operations end to end on the PostgreSQL store, in process (docs/multi-node.md): the API, the workers, the
deploy pipeline, the promotion stages and the runner of tests/local's `stack`, over a fresh database: deploy,
promote, a second deploy, promote, roll back, and a refused rollback that changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_store_conformance import create_operations
from tests.local import (
    test_environment_policy,
    test_gate_bypass,
    test_idempotency,
    test_operations,
    test_rollback_policy,
    test_route_names,
    test_runtime_token_lifetime,
    test_scale_api,
)
from tests.local._stack import hello_config, hello_files
from tests.local.conftest import open_env, open_stack, serve_live

pytestmark = pytest.mark.slow  # PostgreSQL clusters and threads

# tests/local's `stack` tests (real deploys, promotions, rollbacks, gates, runtime tokens), run again on PostgreSQL.
STACK_CASES = [
    test_gate_bypass.test_dropping_or_moving_the_state_schema_is_cold,
    test_gate_bypass.test_migrations_are_tracked_by_what_artifacts_carry_and_production_applied,
    test_gate_bypass.test_production_moving_after_validation_is_decided_again_at_promotion,
    test_rollback_policy.test_a_developer_cannot_roll_production_onto_a_never_promoted_deployment,
    test_rollback_policy.test_without_an_approval_policy_a_developer_rolls_back_to_an_earlier_owner,
    test_route_names.test_two_same_named_apps_promoted_concurrently,
    test_runtime_token_lifetime.test_a_runtime_token_stops_working_when_its_allocation_leaves_ready,
]

# tests/local's `local` tests (the API, idempotency keys, leases, operations driven by the workers, scale), likewise.
LOCAL_CASES = [
    test_idempotency.test_same_key_twice_replays_one_operation,
    test_idempotency.test_replay_after_the_project_exists_returns_the_original_202,
    test_idempotency.test_reused_key_with_another_body_is_refused,
    test_idempotency.test_keys_belong_to_one_caller,
    test_idempotency.test_a_replayed_token_creation_creates_one_token,
    test_operations.test_a_live_lease_is_never_taken,
    test_operations.test_driven_operations_only_move_forward,
    test_operations.test_drive_resumes_a_crashed_operation_from_its_recorded_stage,
    test_operations.test_two_operations_for_one_name_one_after_the_other,
    test_operations.test_two_operations_for_one_name_interleaved,
    test_operations.test_stage_history_has_timestamps_and_evidence,
    test_scale_api.test_one_change_of_an_environments_allocations_at_a_time,
    test_scale_api.test_services_a_scaled_environment_needs_cannot_be_unbound,
    test_scale_api.test_a_provider_that_cannot_serve_a_service_is_refused_and_nothing_is_recorded,
    test_environment_policy.test_a_policy_added_to_rhone_toml_is_reported_until_the_server_is_aligned,
]


@pytest.fixture
def pg_local(pg_database: str, tmp_path: Path) -> Iterator[Any]:
    from rhone_local.store.postgres import PostgresStore

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = PostgresStore(pg_database, data_dir)
    try:
        env, client = open_env(data_dir, store=store)
        with client:
            yield env
    finally:
        store.shutdown()


@pytest.mark.parametrize("case", LOCAL_CASES, ids=[case.__name__ for case in LOCAL_CASES])
def test_local_cases_on_postgresql(pg_local: Any, case: Any) -> None:
    case(pg_local)


def test_ten_concurrent_copies_over_http_create_one_project_on_postgresql(pg_local: Any) -> None:
    with serve_live(pg_local) as url:
        test_idempotency.test_ten_concurrent_copies_create_one_project(pg_local, url)


@pytest.fixture
def pg_stack(pg_database: str, tmp_path: Path) -> Iterator[Any]:
    from rhone_local.store.postgres import PostgresStore

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = PostgresStore(pg_database, data_dir)
    try:
        with open_stack(store, data_dir) as opened:
            yield opened
    finally:
        store.shutdown()


@pytest.mark.parametrize("case", STACK_CASES, ids=[case.__name__ for case in STACK_CASES])
def test_stack_cases_on_postgresql(pg_stack: Any, case: Any) -> None:
    case(pg_stack)


def test_deploy_promote_and_roll_back_on_postgresql(pg_stack: Any) -> None:
    stack, store = pg_stack, pg_stack.local.store
    v1 = stack.preview_ready(hello_files("1.0.0"), hello_config())
    response, op = stack.promote(v1["id"])
    assert response.status_code == 202 and op is not None and op["state"] == "healthy", op
    assert stack.owner_of() == (v1["id"], 1)
    v2 = stack.preview_ready(hello_files("2.0.0"), hello_config())
    _, op = stack.promote(v2["id"])
    assert op is not None and op["state"] == "healthy", op
    assert stack.owner_of() == (v2["id"], 2)
    [live] = stack.live_allocations()
    assert (live["deployment_id"], live["state"]) == (v2["id"], "ready")

    _, op = stack.rollback(to_deployment=v1["id"])
    assert op is not None and op["state"] in ("rolled_back", "healthy"), op
    assert stack.owner_of() == (v1["id"], 3)
    events = store.route_events_after(0)
    assert [(e["seq"], e["epoch"], e["deployment_id"]) for e in events] == [
        (1, 1, v1["id"]),
        (2, 2, v2["id"]),
        (3, 3, v1["id"]),
    ]
    assert [e["kind"] for e in events] == ["promote", "promote", "rollback"]

    # A refused rollback (to a deployment that never owned the route) changes nothing.
    v3 = stack.preview_ready(hello_files("3.0.0"), hello_config())
    before = stack.world()
    response, _ = stack.rollback(to_deployment=v3["id"])
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "rollback_target_not_previous_owner"
    assert stack.world() == before
    assert store.last_route_seq() == 3


def test_a_store_the_server_cannot_reach_refuses_the_start(tmp_path: Path, pg_cluster: Any) -> None:
    import os
    import subprocess
    import sys

    from rhone_local.datadir import REFUSED_STATUS

    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    # A database that does not exist, with a password that must never be shown.
    url = pg_cluster.url.replace("/postgres?", "/no_such_database?").replace("admin-secret", "s3cret-pw")
    command = [sys.executable, "-m", "rhone_local", "serve", "--data-dir", str(data_dir), "--port", "0"]
    finished = subprocess.run(
        command,
        env={**os.environ, "RHONE_LOCAL_STORE": url},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert finished.returncode == REFUSED_STATUS, finished.stderr
    assert "error [store_unavailable]" in finished.stderr and "hint: " in finished.stderr, finished.stderr
    assert "Traceback" not in finished.stderr and "s3cret-pw" not in finished.stderr
    assert not (data_dir / "server.json").exists() and not (data_dir / "rhone.db").exists()


@dataclass
class TwoNodes:
    """Two stores on one database (node A commits, node B serves long-polls), an operation at version 1, and node B's
    notifier, which counts the long-poll's waits and the changes node B heard of (only PostgreSQL links the nodes)."""

    node_a: Any
    node_b: Any
    token: str
    op_id: str
    notifier: Any
    waits: list[str] = field(default_factory=list)
    waiting: threading.Event = field(default_factory=threading.Event)
    heard: list[str] = field(default_factory=list)
    heard_once: threading.Event = field(default_factory=threading.Event)

    def advance_through_a(self, state: str) -> None:
        """Node A records the operation's next stage (as its workers do); returns once node B heard of it."""
        from rhone_local.domain.operations import TERMINAL_STATES

        self.heard_once.clear()
        op = self.node_a.operation(self.op_id)
        if op["lease_owner"] is None:
            op = self.node_a.claim_operation("worker-a", 30.0, TERMINAL_STATES)
        assert op is not None and self.node_a.advance_operation(op, state, worker="worker-a") is not None

    def wait_until_b_heard(self) -> None:
        assert self.heard_once.wait(30), "node B never heard of node A's commit"

    def long_poll(self, **params: Any) -> Any:
        from fastapi.testclient import TestClient

        from rhone_local.server import standalone_api
        from tests.local.conftest import auth

        with TestClient(standalone_api(self.node_b, self.notifier)) as client:
            return client.get(f"/v1/operations/{self.op_id}", params=params, headers=auth(self.token))


@pytest.fixture
def two_nodes(pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TwoNodes]:
    import rhone_local.notify
    from rhone_local.notify import ChangeNotifier, ChangeWatch
    from rhone_local.server import bootstrap
    from rhone_local.store.postgres import PostgresStore

    # No periodic re-read: only a notification can answer a long-poll before its `wait` runs out.
    monkeypatch.setattr(rhone_local.notify, "RECHECK_SECONDS", 600.0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    node_a = PostgresStore(pg_database, tmp_path / "a")
    node_b = PostgresStore(pg_database, tmp_path / "b")
    try:
        bootstrap(node_a, tmp_path / "a")
        (op_id,) = create_operations(node_a, 1)
        nodes = TwoNodes(node_a, node_b, (tmp_path / "a" / "owner.token").read_text().strip(), op_id, ChangeNotifier())
        original_wait, original_changed = nodes.notifier.wait_for_change, nodes.notifier.changed

        async def counted_wait(watch: ChangeWatch, timeout: float) -> None:
            nodes.waits.append(watch.op_id)
            nodes.waiting.set()
            await original_wait(watch, timeout)

        def counted_changed(changed_id: str) -> None:
            original_changed(changed_id)
            nodes.heard.append(changed_id)
            if changed_id == op_id:
                nodes.heard_once.set()

        monkeypatch.setattr(nodes.notifier, "wait_for_change", counted_wait)
        monkeypatch.setattr(nodes.notifier, "changed", counted_changed)
        node_b.listen_for_changes(nodes.notifier)
        yield nodes
    finally:
        node_a.shutdown()
        node_b.shutdown()


def test_a_long_poll_on_one_node_is_answered_by_a_change_committed_through_another(two_nodes: TwoNodes) -> None:
    answers: list[Any] = []
    poll = threading.Thread(target=lambda: answers.append(two_nodes.long_poll(wait=30)))
    poll.start()
    assert two_nodes.waiting.wait(30)
    two_nodes.advance_through_a("validating")
    poll.join(60)
    [answer] = answers
    assert answer.status_code == 200, answer.text
    assert (answer.json()["state"], answer.json()["version"]) == ("validating", 2)
    # One wait, and node B's notifier was told of node A's commit (by PostgreSQL: nothing else links them).
    assert two_nodes.waits == [two_nodes.op_id]
    assert two_nodes.heard.count(two_nodes.op_id) >= 1


def test_a_change_committed_between_a_long_polls_read_and_its_wait_answers_it(
    two_nodes: TwoNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each of the long-poll's first two reads is followed, before it waits, by a commit through node A that node B
    # hears of: the notification comes while the long-poll is between its read and its wait. A long-poll that
    # registered only when it began to wait missed it, ran its whole `wait` out and answered version 2 (not newer
    # than after_version) — the fallback re-read is all that answered it.
    reads: list[int] = []
    read = two_nodes.node_b.operation

    def read_then_commit_through_a(op_id: str) -> dict[str, Any] | None:
        row = read(op_id)
        reads.append(row["version"])
        if len(reads) <= 2:
            two_nodes.advance_through_a(("validating", "applying")[len(reads) - 1])
            two_nodes.wait_until_b_heard()
        return row

    monkeypatch.setattr(two_nodes.node_b, "operation", read_then_commit_through_a)
    answer = two_nodes.long_poll(wait=5, after_version=2)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["state"], answer.json()["version"]) == ("applying", 3)
    assert reads == [1, 2, 3]  # the first read, the read once watching, the read after the wake-up
    assert two_nodes.waits == [two_nodes.op_id]
    assert two_nodes.heard.count(two_nodes.op_id) == 2


def test_a_long_poll_waiting_while_the_listener_reconnects_reads_again(
    two_nodes: TwoNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from rhone_local.store.postgres import CHANNEL

    committed = threading.Event()

    class ReconnectOnceCommitted(threading.Event):
        """The listener's pause before it connects again lasts until node A committed (no race with the commit)."""

        def wait(self, timeout: float | None = None) -> bool:
            committed.wait(30)
            return super().wait(timeout)

    monkeypatch.setattr(two_nodes.node_b, "_stopping", ReconnectOnceCommitted())
    answers: list[Any] = []
    # Waiting 60 s, longer than this test waits for its answer (30 s): only a wake-up answers it in time.
    poll = threading.Thread(target=lambda: answers.append(two_nodes.long_poll(wait=60)), daemon=True)
    poll.start()
    try:
        assert two_nodes.waiting.wait(30)
        with psycopg.connect(two_nodes.node_a.url, autocommit=True) as admin:
            # Node B's listening connection ends (a database restart, a network cut) and node A commits before node
            # B listens again: the notification reaches nobody.
            (ended,) = admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query = %s",
                (f"LISTEN {CHANNEL}",),
            ).fetchone()
        assert ended == 1
        two_nodes.advance_through_a("validating")
    finally:
        committed.set()
    poll.join(30)
    assert answers, "the long-poll was not woken when node B listened again"
    [answer] = answers
    assert answer.status_code == 200, answer.text
    assert (answer.json()["state"], answer.json()["version"]) == ("validating", 2)
    assert two_nodes.heard == []  # no notification of it ever reached node B: the reconnection made it read again
    assert two_nodes.waits == [two_nodes.op_id]  # one wait, ended by the reconnection
