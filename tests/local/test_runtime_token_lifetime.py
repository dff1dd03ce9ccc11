"""An allocation's runtime token dies with the allocation (issue 12, item 6).

The attack: a stopped allocation's token still answered 200. Allocations here are real processes started by the real
runner; the token is read from the process's own environment, as the app receives it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from rhone_local.domain.access import hash_token
from rhone_local.store import Store
from tests.e2e.helpers import wait_until

from ._stack import Stack, hello_config, hello_files, runtime_token_of
from .conftest import auth, database_at_version

pytestmark = pytest.mark.slow


def answer(stack: Stack, token: str) -> tuple[int, str | None]:
    response = stack.local.client.get(stack.app_path, headers=auth(token))
    return response.status_code, None if response.status_code == 200 else response.json()["error"]["code"]


def test_a_runtime_token_stops_working_when_its_allocation_leaves_ready(stack: Stack) -> None:
    local = stack.local
    first = stack.preview_ready(hello_files("1.0.0"), hello_config())
    [alloc] = stack.live_allocations("preview")
    first_token = runtime_token_of(alloc)
    assert answer(stack, first_token) == (200, None)
    minted = local.mint_runtime_identity(stack.project, stack.app)  # an admin's, bound to no allocation

    # A newer deployment supersedes the preview: the first allocation drains and stops; its token is refused.
    second = stack.preview_ready(hello_files("2.0.0"), hello_config())
    assert local.store.one("SELECT state FROM allocations WHERE id = ?", alloc["id"])["state"] == "stopped"
    before = local.snapshot()
    assert answer(stack, first_token) == (401, "invalid_token")
    assert local.snapshot() == before  # refused by reading the allocation's state: nothing written
    [alloc2] = stack.live_allocations("preview")
    assert alloc2["deployment_id"] == second["id"] != first["id"]
    second_token = runtime_token_of(alloc2)
    assert answer(stack, second_token) == (200, None)

    # Draining already ends it: new requests stop arriving there, and so does its authority.
    with local.store.write() as c:
        c.execute("UPDATE allocations SET state = 'draining', version = version + 1 WHERE id = ?", (alloc2["id"],))
    assert answer(stack, second_token) == (401, "invalid_token")
    with local.store.write() as c:
        c.execute("UPDATE allocations SET state = 'ready', version = version + 1 WHERE id = ?", (alloc2["id"],))
    assert answer(stack, second_token) == (200, None)

    # A process that dies is recorded failed, and its token with it.
    os.killpg(alloc2["pid"], signal.SIGKILL)
    assert wait_until(local.workers.pipeline.runner.check_processes) == [alloc2["id"]]
    assert local.store.one("SELECT state FROM allocations WHERE id = ?", alloc2["id"])["state"] == "failed"
    assert answer(stack, second_token) == (401, "invalid_token")

    # A runtime identity token an admin minted is bound to no allocation: it keeps working.
    assert answer(stack, minted.token) == (200, None)


def test_allocation_tokens_from_before_version_5_are_bound_or_revoked(tmp_path: Path) -> None:
    """Pre-5 allocation tokens name only their deployment: bound to its newest live allocation, else revoked."""
    path = tmp_path / "rhone.db"
    db = database_at_version(path, 4)
    ts = "'2026-01-01T00:00:00.000Z'"
    db.executescript(
        f"INSERT INTO workspaces VALUES ('ws_a', 'a', {ts});"
        f"INSERT INTO projects VALUES ('prj_a', 'ws_a', 'p', {ts}, 'op_x');"
        f"INSERT INTO apps VALUES ('app_a', 'ws_a', 'prj_a', 'web', {ts}, 'op_x');"
        f"INSERT INTO environments (id, workspace_id, app_id, name, created_at, operation_id) "
        f"VALUES ('env_a', 'ws_a', 'app_a', 'preview', {ts}, 'op_x');"
        f"INSERT INTO regions (id, name, created_at, is_primary) VALUES ('reg_a', 'local-1', {ts}, 1);"
        f"INSERT INTO cells VALUES ('cell_a', 'reg_a', 'local-1a', {ts});"
        f"INSERT INTO runtime_identities VALUES ('rid_a', 'ws_a', 'app_a', {ts});"
        + "".join(
            f"INSERT INTO deployments VALUES ('{d}', 'ws_a', 'app_a', 'env_a', 'op_x', 'preview_ready', 0, 'sha256:s', "
            f"'sha256:a', '{{}}', '{{}}', '{{}}', NULL, {ts}, {ts});"
            f"INSERT INTO allocations VALUES ('{a}', '{d}', 'env_a', 'sha256:a', 'reg_a', 'cell_a', '{state}', 1, "
            f"NULL, NULL, NULL, {ts}, {ts}, NULL);"
            f"INSERT INTO tokens VALUES ('tok_{d}', '{hash_token(d)}', 'runtime', 'rid_a', 'allocation of {d}', {ts}, "
            "NULL, NULL);"
            for d, a, state in (("dep_live", "alc_live", "ready"), ("dep_gone", "alc_gone", "stopped"))
        )
    )
    db.close()
    store = Store(path)
    try:
        rows = store.all("SELECT id, allocation_id, revoked_at IS NOT NULL AS revoked FROM tokens ORDER BY id")
        assert rows == [
            {"id": "tok_dep_gone", "allocation_id": None, "revoked": 1},
            {"id": "tok_dep_live", "allocation_id": "alc_live", "revoked": 0},
        ]
        assert store.principal_for_token(hash_token("dep_live")) is not None
        assert store.principal_for_token(hash_token("dep_gone")) is None
        with store.write() as c:
            c.execute("UPDATE allocations SET state = 'stopped' WHERE id = 'alc_live'")
        assert store.principal_for_token(hash_token("dep_live")) is None
    finally:
        store.close()
