"""Rhone Local's processes and files under attack: stale pid files naming other processes, a second server on the
same data directory, broken data directories. Real servers started by the real `rhone local up`."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import allocation_group, hello_app, linked, processes_under, wait_until


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen]:
    """A live process that is not Rhone Local (what a reused pid looks like), stopped after the test."""
    process = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL, restore_signals=True)
    yield process
    process.kill()
    process.wait()


def _write_stale_records(local_env, pid: int) -> None:
    local_env.data_dir.mkdir(parents=True, exist_ok=True)
    (local_env.data_dir / "rhone-local.pid").write_text(f"{pid}\n")
    (local_env.data_dir / "server.json").write_text(json.dumps({"pid": pid, "api_url": local_env.api_url}))


def test_a_pid_file_naming_an_unrelated_process_is_stale_and_that_process_is_never_signalled(local_env, unrelated):
    _write_stale_records(local_env, unrelated.pid)

    status = local_env.json("local", "status")
    assert (status["running"], status["pid"], status["stale_pid_file"]) == (False, None, True)

    down = local_env.rhone("local", "down", "--json")
    assert down.exit_code == 0, down.stderr
    assert down.json() == {
        "stopped": False,
        "was_running": False,
        "pid": None,
        "stale_pid_file": True,
        "data_dir": str(local_env.data_dir),
    }
    assert unrelated.poll() is None, "rhone local down signalled a process that is not Rhone Local"
    assert not (local_env.data_dir / "rhone-local.pid").exists()
    assert not (local_env.data_dir / "server.json").exists()
    human = local_env.rhone("local", "down")
    assert human.exit_code == 0 and human.stdout.startswith("Rhone Local was not running")

    # `up` with the same stale file: it is cleared, a real server starts, the unrelated process lives on.
    _write_stale_records(local_env, unrelated.pid)
    up = local_env.up()
    assert up.exit_code == 0, up.stderr
    assert f"removing stale pid file {local_env.data_dir / 'rhone-local.pid'} (process {unrelated.pid}" in up.stderr
    server_pid = up.json()["pid"]
    assert server_pid != unrelated.pid and local_env.pid() == server_pid
    stopped = local_env.json("local", "down")
    assert (stopped["stopped"], stopped["pid"]) == (True, server_pid)
    assert unrelated.poll() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_another_users_process_dressed_as_our_server_is_never_signalled(local_env):
    """Its command line names `rhone_local serve` with our data directory, but it is not ours to signal."""
    local_env.data_dir.mkdir(parents=True)
    impostor = subprocess.Popen(
        ["sh", "-c", "sleep 300; true", "rhone_local", "serve", "--data-dir", str(local_env.data_dir)],
        user=65534,
        restore_signals=True,
    )
    try:
        _write_stale_records(local_env, impostor.pid)
        down = local_env.rhone("local", "down", "--json")
        assert down.exit_code == 0, down.stderr
        assert (down.json()["was_running"], down.json()["stale_pid_file"]) == (False, True)
        assert impostor.poll() is None
    finally:
        impostor.kill()
        impostor.wait()


def blocking_build(release: Release) -> str:
    """A build command that waits, as one process of the system's Python (what a sandboxed build sees), until the file
    `release-builds` exists in its build cache — the one place outside its tree a build and the test both see."""
    flag = "os.environ['XDG_CACHE_HOME'] + '/release-builds'"
    wait = f"import os, time\nwhile not os.path.exists({flag}): time.sleep(0.05)"
    return f'exec python3 -c "{wait}"'


@dataclass
class Release:
    data_dir: Path

    def touch(self) -> None:
        for cache in (self.data_dir / "caches").glob("*"):
            (cache / "release-builds").touch()


@pytest.fixture
def release(local_env) -> Iterator[Release]:
    """What blocking builds wait for; given at teardown (before the server stops) if the test did not."""
    handle = Release(local_env.data_dir)
    yield handle
    handle.touch()


def blocked_builds(root: Path, count: int) -> set[int]:
    """The processes under `root` once `count` blocking builds have reached their waiting python (the sandbox's own
    processes come first; a snapshot taken before the leaf exists would see the build tree still growing)."""

    def settled() -> set[int] | None:
        found = processes_under(root)
        waiting = [c for c in found.values() if c.startswith("python3 -c") and "release-builds" in c]
        if len(waiting) < count:
            return None
        return set(found) if set(processes_under(root)) == set(found) else None

    snapshot = wait_until(settled, timeout=60)
    assert snapshot, f"{count} blocking build(s) never started: {processes_under(root)}"
    return snapshot


def _db_rows(local_env, table: str, columns: str) -> list[tuple]:
    with sqlite3.connect(f"file:{local_env.data_dir / 'rhone.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(f"SELECT {columns} FROM {table} ORDER BY id").fetchall()


def test_a_second_server_on_the_same_data_directory_leaves_at_once_and_changes_nothing(local, tmp_path, release):
    """The attack: `rhone local up --foreground` skips every pid-file check; the second server used to release the
    first one's leases and run a second copy of the build under way."""
    app_dir = linked(local, hello_app(tmp_path, command=blocking_build(release)))
    started = local.rhone("deploy", "--no-wait", "--json", cwd=app_dir)
    assert started.exit_code == 0, started.stderr
    op_id = started.json()["id"]
    builds = blocked_builds(local.data_dir, 1)  # the build's processes (its python, and its sandbox's)
    operations = _db_rows(local, "operations", "id, state, version, lease_owner")
    allocations = _db_rows(local, "allocations", "id, state, version, pid")
    server_json = (local.data_dir / "server.json").read_text()
    first_pid = local.pid()
    assert [row[:2] for row in operations if row[0] == op_id] == [(op_id, "building")]
    assert operations[-1][3].startswith(f"local/worker-{first_pid}-")  # node local's worker (docs/multi-node.md)

    # Refused before anything binds: `--foreground` by the data directory's lock (any free ports: 0), a background
    # start on other ports (1 and 2, never the ephemeral ports it got) by the running server's record.
    ports = ["0", "0", "1", "2"]
    # `--foreground` execs the server itself (no pid file check); then background starts, on other ports and on its.
    for argv in (
        ["local", "up", "--foreground", "--port", ports[0], "--edge-port", ports[1]],
        ["local", "up", "--port", ports[2], "--edge-port", ports[3], "--json"],
        ["local", "up", "--port", str(local.port), "--edge-port", str(local.edge_port), "--json"],
    ):
        second = local.rhone(*argv, timeout=30)
        if "--foreground" in argv:
            assert second.exit_code == 3, (second.stdout, second.stderr)
            assert f"error [data_dir_in_use]: another Rhone Local server (pid {first_pid}) is using" in second.stderr
            assert "Traceback" not in second.stderr
        elif ports[2] in argv:  # other ports: refused, naming where it runs (it used to answer 0 on the old ports)
            assert second.exit_code == 5, second.stdout
            assert second.json()["error"]["code"] == "local_running_elsewhere"
        else:  # the background start recognises the running server and starts nothing
            assert second.exit_code == 0, second.stderr
            assert (second.json()["started"], second.json()["pid"]) == (False, first_pid)
        assert _db_rows(local, "operations", "id, state, version, lease_owner") == operations
        assert _db_rows(local, "allocations", "id, state, version, pid") == allocations
        assert set(processes_under(local.data_dir)) == builds, "a second copy of the build started"
        assert (local.data_dir / "server.json").read_text() == server_json
        assert local.pid() == first_pid

    # The lock is the directory's, not the lock file's: deleting the file lets no second server in.
    (local.data_dir / "rhone-local.lock").unlink()
    second = local.rhone("local", "up", "--foreground", "--port", ports[0], "--edge-port", ports[1], timeout=30)
    assert second.exit_code == 3, (second.stdout, second.stderr)
    assert "error [data_dir_in_use]: another Rhone Local server is using" in second.stderr
    assert _db_rows(local, "operations", "id, state, version, lease_owner") == operations
    assert set(processes_under(local.data_dir)) == builds and local.pid() == first_pid

    release.touch()
    waited = local.rhone("op", "wait", op_id, "--wait-timeout", "60", "--json")
    assert waited.exit_code == 0 and waited.json()["state"] == "preview_ready", waited.stdout
    assert [s["state"] for s in waited.json()["stages"]] == [
        "queued",
        "cloning",
        "building",
        "validating",
        "preview_ready",
    ]


def test_up_reports_a_server_that_lost_the_lock_with_its_reason(local_env):
    """A foreground server holds the data directory; a background `up` that cannot see it (no pid file, no
    server.json yet) starts a child, which is refused: `up` says why, exit 5, and nothing is left behind."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(local_env.data_dir)], stdout=subprocess.PIPE, restore_signals=True
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        result = local_env.up()
        assert result.exit_code == 5, (result.stdout, result.stderr)
        error = result.json()["error"]
        assert error["code"] == "local_data_dir_in_use"
        assert error["message"] == f"another Rhone Local server (pid {holder.pid}) is using {local_env.data_dir}"
        assert error["hint"].startswith("stop it with `rhone local down")
        assert local_env.pid() is None and not (local_env.data_dir / "server.json").exists()
        assert not (local_env.data_dir / "rhone.db").exists(), "the refused server opened the database"
    finally:
        holder.kill()
        holder.wait()


# What a running server holds, without the server: the lock of the data directory, with this pid written in it.
HOLD_LOCK = """
import sys
from pathlib import Path
from rhone_local.datadir import lock_data_dir
Path(sys.argv[1]).mkdir(parents=True)
lock_data_dir(Path(sys.argv[1]))
print("locked", flush=True)
__import__("time").sleep(300)
"""


def _files(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under `root` but the log and the lock file: its mode and, for a file, its bytes."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.name in ("rhone-local.log", "rhone-local.lock"):
            continue
        found[str(path.relative_to(root))] = (path.stat().st_mode, path.read_bytes() if path.is_file() else None)
    return found


DAMAGE = {
    "empty": (lambda db: db.write_bytes(b""), "local_data_dir_broken", "rhone.db is empty (0 bytes), but"),
    "missing": (lambda db: db.unlink(), "local_data_dir_broken", "rhone.db is missing, but"),
    "garbage": (
        lambda db: db.write_bytes(b"this is not a database\n" * 300),
        "local_database_unreadable",
        "rhone.db is not a usable Rhone Local database (file is not a database)",
    ),
    "a directory": (
        lambda db: (db.unlink(), db.mkdir(), (db / "x").write_text("x")),
        "local_database_unreadable",
        "rhone.db is not a regular file",
    ),
    # Someone else's SQLite file: opening it as ours would write our tables into it.
    "another program's database": (
        lambda db: _sqlite(db, "PRAGMA journal_mode=DELETE", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"),
        "local_database_unreadable",
        "rhone.db holds tables that are not Rhone Local's (notes)",
    ),
    # A valid, empty SQLite database (not 0 bytes) beside the old state: a new workspace would replace the token.
    "an empty sqlite database": (
        lambda db: _sqlite(db, "PRAGMA journal_mode=WAL"),
        "local_database_unreadable",
        "rhone.db holds no Rhone Local tables",
    ),
}


def _sqlite(path: Path, *statements: str) -> None:
    path.unlink()
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        conn.execute(statement)
    conn.close()


def test_a_broken_data_directory_is_refused_with_a_recovery_hint_and_left_as_it_was(local_env, tmp_path):
    assert local_env.up().exit_code == 0
    assert local_env.json("local", "down")["stopped"]
    pristine = tmp_path / "pristine"
    shutil.copytree(local_env.data_dir, pristine)
    for name, (damage, code, message) in DAMAGE.items():
        shutil.rmtree(local_env.data_dir)
        shutil.copytree(pristine, local_env.data_dir)
        for leftover in local_env.data_dir.glob("rhone.db-*"):
            leftover.unlink()
        damage(local_env.data_dir / "rhone.db")
        before = _files(local_env.data_dir)

        result = local_env.up()
        assert result.exit_code == 1, (name, result.stdout, result.stderr)
        error = result.json()["error"]
        assert error["code"] == code, name
        assert error["message"].startswith(str(local_env.data_dir / message.split(" ", 1)[0])), error
        assert message.split(" ", 1)[1] in error["message"], error
        assert "restore rhone.db from a backup" in error["hint"] and f"mv {local_env.data_dir} " in error["hint"]
        # Nothing bootstrapped, no token replaced, no server left: the directory is exactly as it was.
        assert _files(local_env.data_dir) == before, name
        assert local_env.json("local", "status")["running"] is False
        assert "Traceback" not in (local_env.data_dir / "rhone-local.log").read_text()


def test_the_data_directory_and_its_secrets_are_private(local_env):
    local_env.data_dir.mkdir(mode=0o755)
    os.chmod(local_env.data_dir, 0o755)
    assert local_env.up().exit_code == 0
    assert local_env.json("local", "down")["stopped"]
    # An older version's modes: world-readable token and database.
    os.chmod(local_env.data_dir, 0o755)
    for name in ("rhone.db", "owner.token", "rhone-local.log"):
        os.chmod(local_env.data_dir / name, 0o644)
    assert local_env.up().exit_code == 0
    modes = {
        path.name: stat.S_IMODE(path.stat().st_mode)
        for path in (local_env.data_dir, *local_env.data_dir.glob("rhone.db*"), local_env.data_dir / "owner.token")
    }
    assert modes.pop(local_env.data_dir.name) == 0o700
    assert set(modes) >= {"rhone.db", "rhone.db-wal", "rhone.db-shm", "owner.token"}
    assert set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE((local_env.data_dir / "rhone-local.log").stat().st_mode) == 0o600


def test_a_shared_directory_is_refused_as_a_data_directory(local_env, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    ports = ("--port", str(local_env.port), "--edge-port", str(local_env.edge_port))
    try:
        result = local_env.rhone("local", "up", "--data-dir", str(shared), *ports, "--json")
    finally:
        local_env.rhone("local", "down", "--data-dir", str(shared))
    assert result.exit_code == 1, result.stderr
    assert result.json()["error"]["code"] == "local_data_dir_shared"
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert sorted(p.name for p in shared.iterdir()) == ["rhone-local.log"]


def _named_app(root: Path, name: str, **kwargs) -> Path:
    """examples/hello as the app `name` of project hello."""
    app_dir = hello_app(root, name, **kwargs)
    toml = app_dir / "rhone.toml"
    toml.write_text(toml.read_text().replace('[app]\nname = "hello"', f'[app]\nname = "{name}"'))
    return app_dir


def test_control_operations_complete_while_builds_occupy_the_build_workers(local, tmp_path, release):
    hello = linked(local, _named_app(tmp_path, "web"))
    first = local.json("deploy", "--promote", cwd=hello)["deployment"]
    (hello / "app.py").write_text((hello / "app.py").read_text().replace('VERSION = "', 'VERSION = "2.'))
    second = local.json("deploy", cwd=hello)
    assert first["artifact_digest"] != second["artifact_digest"]

    builds = []
    for name in ("slow-one", "slow-two"):  # as many blocked builds as there are build workers
        app_dir = linked(local, _named_app(tmp_path, name, command=blocking_build(release)))
        started = local.rhone("deploy", "--no-wait", "--json", cwd=app_dir)
        assert started.exit_code == 0, started.stderr
        builds.append(started.json()["id"])
    states = lambda: [local.json("op", "show", op_id)["state"] for op_id in builds]  # noqa: E731
    assert wait_until(lambda: states() == ["building", "building"], timeout=60), states()
    running = blocked_builds(local.data_dir / "deployments", 2)
    assert len({allocation_group(pid) for pid in running}) == 2  # the two builds (one process group each)

    bounded = ("--wait-timeout", "60")  # without separate pools these waited behind the builds (exit 7)
    project = local.json("project", "create", "other", *bounded)
    assert project["name"] == "other"
    promoted = local.json("promote", second["id"], *bounded, cwd=hello)
    assert (promoted["state"], promoted["epoch"], promoted["deployment_id"]) == ("healthy", 2, second["id"])
    rolled = local.json("rollback", "--to", first["id"], *bounded, cwd=hello)
    assert (rolled["state"], rolled["epoch"], rolled["deployment_id"]) == ("rolled_back", 3, first["id"])

    assert states() == ["building", "building"], "the builds should still be running"
    assert set(processes_under(local.data_dir / "deployments")) == running
    release.touch()
    for op_id in builds:
        waited = local.rhone("op", "wait", op_id, "--wait-timeout", "90", "--json")
        assert waited.exit_code == 0 and waited.json()["state"] == "preview_ready", waited.stdout
