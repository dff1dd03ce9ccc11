"""Rhone Local's processes and files under attack: stale pid files naming other processes, a second server on the
same data directory, broken data directories. Real servers started by the real `rhone local up`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.slow


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
