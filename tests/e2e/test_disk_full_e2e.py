"""A full disk, for real: the data directory on a tiny tmpfs. An upload, a clone or a build that fills it ends with
`disk_full` naming the data directory — never `internal_error` — and the server keeps working once the failed
stage's files are gone. Mounting needs root; where it is impossible the test skips, and tests/local/test_bad_input.py
still covers the same paths by failing the write at the lowest layer."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import hello_app, linked

DISK = "8m"


@pytest.fixture
def tiny(local_env) -> Iterator:
    """A running Rhone Local whose data directory is an 8 MiB tmpfs (unmounted after the server stopped)."""
    local_env.data_dir.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", str(local_env.data_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        assert local_env.up().exit_code == 0
        yield local_env
    finally:
        local_env.rhone("local", "down")
        if subprocess.run(["umount", str(local_env.data_dir)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(local_env.data_dir)], check=False)


def _free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _assert_disk_full(result, data_dir: Path) -> dict:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    error = result.json()["error"]
    assert error["code"] == "disk_full", error
    assert f"no space left on the device holding {data_dir}" in error["message"]
    return error


def _still_works(server) -> None:
    """The failed stage's files are gone (space is back) and a control operation completes."""
    assert list((server.data_dir / "blobs" / "tmp").iterdir()) == []
    assert list((server.data_dir / "deployments").glob("*/source")) == []
    name = f"after{len(server.json('project', 'ls'))}"
    assert server.json("project", "create", name)["name"] == name
    assert "Traceback" not in (server.data_dir / "rhone-local.log").read_text()


def test_an_upload_larger_than_the_free_space_is_disk_full(tiny, tmp_path):
    app_dir = linked(tiny, hello_app(tmp_path, command=None))
    (app_dir / "data.bin").write_bytes(os.urandom(_free_bytes(tiny.data_dir) + 1024 * 1024))
    _assert_disk_full(tiny.rhone("deploy", "--json", cwd=app_dir), tiny.data_dir)
    assert tiny.json("deploy", "ls", cwd=app_dir) == []
    _still_works(tiny)


def test_a_clone_that_fills_the_disk_fails_the_deployment_with_disk_full(tiny, tmp_path):
    app_dir = linked(tiny, hello_app(tmp_path, command=None))
    # The blob fits; the clone's copy of it does not.
    (app_dir / "data.bin").write_bytes(os.urandom(_free_bytes(tiny.data_dir) * 6 // 10))
    error = _assert_disk_full(tiny.rhone("deploy", "--json", cwd=app_dir), tiny.data_dir)
    (deployment,) = tiny.json("deploy", "ls", cwd=app_dir)
    assert deployment["state"] == "failed"
    operation = tiny.json("op", "show", error["operation_id"])
    assert [s["state"] for s in operation["stages"]] == ["queued", "cloning", "failed"]
    assert operation["error"]["code"] == "disk_full"
    _still_works(tiny)


def test_a_build_that_fills_the_disk_fails_with_disk_full_and_its_log(tiny, tmp_path):
    app_dir = linked(tiny, hello_app(tmp_path, command="head -c 100000000 /dev/zero > filler"))
    error = _assert_disk_full(tiny.rhone("deploy", "--json", cwd=app_dir), tiny.data_dir)
    operation = tiny.json("op", "show", error["operation_id"])
    assert [s["state"] for s in operation["stages"]] == ["queued", "cloning", "building", "failed"]
    assert "No space left on device" in operation["stages"][-1]["evidence"]["log_tail"]
    _still_works(tiny)
