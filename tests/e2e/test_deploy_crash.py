"""The deploy crash matrix: `kill -9` Rhone Local while a deployment is in each pipeline stage, `rhone local up`
again, and check that the deployment finishes exactly once, with exactly one ready allocation and no orphan
processes.

Rows (stage × moment of the crash):
- cloning / building / validating, caught between stages (`RHONE_LOCAL_STAGE_DELAY` holds each stage open);
- building while the build command runs (a first build that sleeps), validating while the preview allocation's
  process is up but not yet ready (a start command that takes a while to listen);
- preview_ready with the allocation ready: after the restart the same URL answers, adopted or replaced.

Orphans are looked for twice: every allocation pid in the data directory's `rhone.db` that is not the ready one must
be dead, and no live process may have its working directory under the data directory unless it belongs to the ready
allocation's process group. Run with `-s` to see the matrix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from rhone_cli.services.local import process_alive
from tests.conftest import REPO
from tests.e2e.helpers import allocation_group, db_rows, operation_state, processes_under, restart, wait_until

HELLO = REPO / "examples" / "hello"
STAGE_DELAY = "1.5"
MATRIX: dict[str, dict[str, str]] = {}
COLUMNS = ("terminal state", "deployments", "ready allocations", "orphans", "edge")


@pytest.fixture(scope="module", autouse=True)
def crash_matrix():
    yield MATRIX
    if MATRIX:
        width = max(len(row) for row in MATRIX)
        print("\n\ncrash matrix (kill -9 of Rhone Local, then `rhone local up`, then `rhone op wait`):")
        print(f"  {'crashed in':<{width}}  " + "  ".join(f"{c:<18}" for c in COLUMNS))
        for row, cells in MATRIX.items():
            print(f"  {row:<{width}}  " + "  ".join(f"{cells.get(c, '-'):<18}" for c in COLUMNS))


# -- helpers ---------------------------------------------------------------------------------------------------------
def hello_app(root: Path, *, command: str = "python3 -m py_compile app.py", start: str = "python3 app.py") -> Path:
    app_dir = root / "hello"
    shutil.copytree(HELLO, app_dir)
    (app_dir / "rhone.toml").write_text(
        '[project]\nname = "hello"\n\n[app]\nname = "hello"\n\n'
        f'[build]\ncommand = {json.dumps(command)}\noutput = "."\ntimeout = 120\n\n'
        f'[process]\nstart = {json.dumps(start)}\nhealth_path = "/healthz"\nreadiness_timeout = 30\n'
    )
    return app_dir


def link(server, app_dir: Path) -> None:
    result = server.rhone("init", "--link", "--json", cwd=app_dir)
    assert result.exit_code == 0, result.stderr


def allocation_rows(server, deployment_id: str | None = None) -> list[dict]:
    if deployment_id is None:
        return db_rows(server, "SELECT * FROM allocations ORDER BY id")
    return db_rows(server, "SELECT * FROM allocations WHERE deployment_id = ? ORDER BY id", deployment_id)


def edge_get(server, url: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.edge_port}/", headers={"Host": urlsplit(url).netloc}, timeout=10)


def kill_server(server) -> int:
    pid = server.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not process_alive(pid), 60), f"Rhone Local pid {pid} survived kill -9"
    return pid


def verify_recovered(server, app_dir: Path, op_id: str, row: str, *, before: dict[int, str]) -> dict:
    """After the restart: the operation finishes exactly once; one deployment, one ready allocation, no orphans."""
    cells = MATRIX.setdefault(row, {})
    waited = server.rhone("op", "wait", op_id, "--wait-timeout", "45", "--json", cwd=app_dir)
    assert waited.exit_code == 0, (waited.stdout, waited.stderr)
    op = waited.json()
    cells["terminal state"] = op["state"]
    assert op["state"] == "preview_ready"
    # Each stage recorded once: the restarted worker resumed from the last recorded stage, it did not start over.
    assert [s["state"] for s in op["stages"]] == ["queued", "cloning", "building", "validating", "preview_ready"]

    deployments = server.json("deploy", "ls", cwd=app_dir)
    cells["deployments"] = str(len(deployments))
    assert [d["id"] for d in deployments] == [op["target_id"]]
    deployment = deployments[0]
    assert deployment["state"] == "preview_ready"

    rows = allocation_rows(server, deployment["id"])
    ready = [a for a in rows if a["state"] == "ready"]
    cells["ready allocations"] = f"{len(ready)} of {len(rows)}"
    assert len(ready) == 1, rows
    assert allocation_rows(server) == rows  # no allocation of anything else
    ready_pid = ready[0]["pid"]
    assert process_alive(ready_pid)
    assert all(not process_alive(a["pid"]) for a in rows if a is not ready[0] and a["pid"]), rows

    def orphans() -> dict[int, str]:
        live = processes_under(server.data_dir)
        return {pid: cmd for pid, cmd in live.items() if allocation_group(pid) != ready_pid}

    # Give the killed allocations' process groups a moment to finish dying before calling them orphans.
    wait_until(lambda: not orphans(), 60)
    left = orphans()
    survivors = {pid: cmd for pid, cmd in before.items() if process_alive(pid) and allocation_group(pid) != ready_pid}
    cells["orphans"] = str(len(left) + len(set(survivors) - set(left)))
    assert not left, f"orphan processes under the data directory: {left}"
    assert not survivors, f"processes from before the crash still running: {survivors}"
    assert processes_under(server.data_dir), "the ready allocation's process should be found under the data dir"

    answer = edge_get(server, deployment["url"])
    cells["edge"] = str(answer.status_code)
    assert answer.status_code == 200 and answer.json()["deployment"] == deployment["id"]
    return deployment


def start_deploy(server, app_dir: Path) -> dict:
    result = server.rhone("deploy", "--no-wait", "--json", cwd=app_dir)
    assert result.exit_code == 0, result.stderr
    op = result.json()
    assert op["kind"] == "deploy" and op["target_id"].startswith("dep_")
    return op


# -- the matrix ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["cloning", "building", "validating"])
def test_kill_9_between_stages(local_env, tmp_path, stage):
    row = f"{stage} (between stages)"
    assert local_env.up().exit_code == 0
    app_dir = hello_app(tmp_path)
    link(local_env, app_dir)
    assert local_env.rhone("local", "down").exit_code == 0
    assert local_env.up(environ={"RHONE_LOCAL_STAGE_DELAY": STAGE_DELAY}).exit_code == 0

    op = start_deploy(local_env, app_dir)
    seen = wait_until(lambda: operation_state(local_env, op["id"]) == stage, 60)
    assert seen, f"never saw the operation in {stage}"
    kill_server(local_env)
    before = processes_under(local_env.data_dir)
    restart(local_env)
    verify_recovered(local_env, app_dir, op["id"], row, before=before)


def test_kill_9_while_the_build_command_runs(local_env, tmp_path):
    row = "building (build command running)"
    # The first build sleeps (and is where the server dies); the build the restarted server runs is quick. The marker
    # lives in the app's build cache, the one place outside its tree a build can write.
    command = (
        'test -e "$XDG_CACHE_HOME/first-build-started" || { touch "$XDG_CACHE_HOME/first-build-started"; '
        "echo slow first build; sleep 20; }; python3 -m py_compile app.py"
    )
    assert local_env.up().exit_code == 0
    app_dir = hello_app(tmp_path, command=command)
    link(local_env, app_dir)

    op = start_deploy(local_env, app_dir)
    marker = lambda: list((local_env.data_dir / "caches").glob("*/first-build-started"))  # noqa: E731
    assert wait_until(lambda: marker() and operation_state(local_env, op["id"]) == "building", 60)
    build = wait_until(lambda: [p for p, cmd in processes_under(local_env.data_dir).items() if "sleep 20" in cmd], 60)
    assert build, "the build command is not running"
    kill_server(local_env)
    # A sandboxed build dies with the server that ran it; an unsealed one outlives it until the restarted server
    # stops it (its pid file).
    wait_until(lambda: not any(p in processes_under(local_env.data_dir) for p in build), 60)
    before = processes_under(local_env.data_dir)
    restart(local_env)
    verify_recovered(local_env, app_dir, op["id"], row, before=before)


def test_kill_9_while_the_preview_allocation_is_starting(local_env, tmp_path):
    row = "validating (allocation starting)"
    assert local_env.up().exit_code == 0
    app_dir = hello_app(tmp_path, start="sleep 3; exec python3 app.py")
    link(local_env, app_dir)

    op = start_deploy(local_env, app_dir)

    def starting() -> list[dict]:
        return [a for a in allocation_rows(local_env, op["target_id"]) if a["state"] == "starting" and a["pid"]]

    caught = wait_until(starting, 60)
    assert caught, "never saw the allocation starting"
    kill_server(local_env)
    assert process_alive(caught[0]["pid"])  # the allocation outlived the server: the restart must deal with it
    before = processes_under(local_env.data_dir)
    restart(local_env)
    deployment = verify_recovered(local_env, app_dir, op["id"], row, before=before)
    assert caught[0]["id"] not in [a["id"] for a in deployment["allocations"] if a["state"] == "ready"]
    assert not process_alive(caught[0]["pid"])


def test_kill_9_while_the_preview_is_ready(local_env, tmp_path):
    row = "preview_ready (allocation ready)"
    assert local_env.up().exit_code == 0
    app_dir = hello_app(tmp_path)
    link(local_env, app_dir)
    result = local_env.rhone("deploy", "--json", cwd=app_dir)
    assert result.exit_code == 0, result.stderr
    deployment = result.json()
    [alloc] = allocation_rows(local_env, deployment["id"])
    assert alloc["state"] == "ready"
    assert edge_get(local_env, deployment["url"]).json()["deployment"] == deployment["id"]

    kill_server(local_env)
    before = processes_under(local_env.data_dir)
    restart(local_env)
    after = verify_recovered(local_env, app_dir, deployment["operation_id"], row, before=before)
    ready = [a for a in allocation_rows(local_env, deployment["id"]) if a["state"] == "ready"]
    live = [a for a in allocation_rows(local_env) if a["state"] in ("planned", "pulling", "starting", "ready")]
    assert len(ready) == 1 and live == ready
    MATRIX[row]["edge"] += " (adopted)" if ready[0]["id"] == alloc["id"] else " (replaced)"
    assert after["url"] == deployment["url"]
