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
