"""Real operations end to end on the PostgreSQL store, in process (docs/multi-node.md): the API, the workers, the
deploy pipeline, the promotion stages and the runner of tests/local's `stack`, over a fresh database: deploy,
promote, a second deploy, promote, roll back, and a refused rollback that changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.local._stack import hello_config, hello_files
from tests.local.conftest import open_stack


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


def test_a_long_poll_on_one_node_is_answered_by_a_change_committed_through_another(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from fastapi.testclient import TestClient

    import rhone_local.notify
    from rhone_local.domain.access import Principal
    from rhone_local.domain.operations import TERMINAL_STATES
    from rhone_local.notify import ChangeNotifier
    from rhone_local.server import bootstrap, standalone_api
    from rhone_local.store.postgres import PostgresStore
    from tests.local.conftest import auth

    # No periodic re-read: only a notification can answer the long-poll before its `wait` runs out.
    monkeypatch.setattr(rhone_local.notify, "RECHECK_SECONDS", 600.0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    node_a = PostgresStore(pg_database, tmp_path / "a")
    node_b = PostgresStore(pg_database, tmp_path / "b")
    try:
        bootstrap(node_a, tmp_path / "a")
        token = (tmp_path / "a" / "owner.token").read_text().strip()
        workspace, owner = node_a.bootstrap_workspace(), node_a.one("SELECT id FROM users LIMIT 1")
        assert workspace is not None and owner is not None
        with node_a.write() as c:
            op = node_a.create_operation(
                c,
                workspace_id=workspace["id"],
                kind="project.create",
                target_kind="project",
                target_id="prj_1",
                params={"name": "shop"},
                principal=Principal("user", owner["id"], "owner", "tok_x"),
                request_id="req_1",
                idempotency_key=None,
            )
        notifier = ChangeNotifier()
        node_b.listen_for_changes(notifier)
        waiting, waits = threading.Event(), []
        original_wait = notifier.wait_for_change

        async def counted_wait(op_id: str, timeout: float) -> None:
            waits.append(op_id)
            waiting.set()
            await original_wait(op_id, timeout)

        notifier.wait_for_change = counted_wait  # type: ignore[method-assign]
        woken: list[str] = []
        original_changed = notifier.changed

        def counted_changed(op_id: str) -> None:
            woken.append(op_id)
            original_changed(op_id)

        notifier.changed = counted_changed  # type: ignore[method-assign]
        answers: list[Any] = []
        with TestClient(standalone_api(node_b, notifier)) as client:
            poll = threading.Thread(
                target=lambda: answers.append(
                    client.get(f"/v1/operations/{op['id']}", params={"wait": 30}, headers=auth(token))
                )
            )
            poll.start()
            assert waiting.wait(30)
            claimed = node_a.claim_operation("worker-a", 30.0, TERMINAL_STATES)
            assert claimed is not None
            assert node_a.advance_operation(claimed, "validating", worker="worker-a") is not None
            poll.join(60)
        [answer] = answers
        assert answer.status_code == 200, answer.text
        assert (answer.json()["state"], answer.json()["version"]) == ("validating", 2)
        # One wait, and node B's notifier was told of node A's commit (by PostgreSQL: nothing else links them).
        assert waits == [op["id"]]
        assert woken.count(op["id"]) >= 1
    finally:
        node_a.shutdown()
        node_b.shutdown()
