"""Bad input never crashes a worker or the API: over-long names are refused at upload, a full disk is `disk_full`
naming where, an upload the client abandons is one warning. The full disk is simulated here by failing the write at
the lowest layer Rhone Local calls (a real full file system: tests/e2e/test_disk_full_e2e.py)."""

from __future__ import annotations

import errno
import hashlib
import logging
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rhone_local.domain import manifest as manifests
from rhone_local.domain.errors import DomainError
from rhone_local.workers import Workers

from ._cases import EMPTY_CONFIG
from .conftest import BASE, LocalEnv

HEX = "a" * 64


def _entry(path: str) -> dict[str, Any]:
    return {"path": path, "size": 1, "mode": "644", "sha256": HEX}


def _deploy_manifest(local: LocalEnv, project: dict, app: dict, files: list[dict]) -> Any:
    manifest = {"version": 1, "files": files}
    body = {"manifest": manifest, "manifest_digest": manifests.digest_of(manifest), "config": EMPTY_CONFIG}
    return local.client.post(
        f"{BASE}/projects/{project['name']}/apps/{app['name']}/deployments", json=body, headers=local.owner.headers
    )


@pytest.mark.parametrize(
    "path, limit, says",
    [
        (f"src/{'a' * 300}.py", 255, "is 303 bytes long; each name in a path is limited to 255 bytes"),
        (f"{'é' * 128}/x", 255, "is 256 bytes long; each name in a path is limited to 255 bytes"),
        ("/".join(["é" * 100] * 6), 1024, "is 1205 bytes long; paths are limited to 1024 bytes"),
    ],
)
def test_a_path_the_file_system_cannot_hold_is_refused_at_upload(local: LocalEnv, path: str, limit: int, says) -> None:
    project = local.create_project()
    app = local.create_app(project)
    content = b"x"  # the blob is there: only the name is wrong
    stored = local.client.put(
        f"/v1/blobs/sha256:{hashlib.sha256(content).hexdigest()}", content=content, headers=local.owner.headers
    )
    assert stored.status_code == 201
    before = local.snapshot()
    entry = {**_entry(path), "sha256": hashlib.sha256(content).hexdigest()}
    response = _deploy_manifest(local, project, app, [entry])
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_manifest"
    assert says in error["message"]
    assert error["details"] == {"index": 0, "path": path, "limit": limit}
    assert local.snapshot() == before


def test_names_of_exactly_255_bytes_are_fine() -> None:
    path = f"{'a' * 255}/{'é' * 127}x"
    assert manifests.validate({"version": 1, "files": [_entry(path)]})["files"][0]["path"] == path


def test_a_path_that_is_not_utf8_is_refused_not_a_crash() -> None:
    with pytest.raises(DomainError) as refused:
        manifests.validate({"version": 1, "files": [_entry("a\udcffb")]})
    assert refused.value.code == "invalid_manifest" and "not valid UTF-8" in refused.value.message


# -- a full disk --------------------------------------------------------------------------------------------------
@pytest.fixture
def full_blob_disk(monkeypatch: pytest.MonkeyPatch, local: LocalEnv) -> Path:
    """Writing a file under blobs/tmp fails with ENOSPC, as the kernel reports a full file system."""
    tmp = local.data_dir / "blobs" / "tmp"
    real_open = Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, mode, *args, **kwargs)
        if "w" in mode and self.parent == tmp:
            handle.write = _no_space  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(Path, "open", open_)
    return tmp


def _no_space(data: bytes) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_an_upload_to_a_full_disk_is_disk_full_naming_the_data_directory(
    local: LocalEnv, full_blob_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = b"x" * 4096
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    with caplog.at_level(logging.WARNING):
        response = local.client.put(f"/v1/blobs/{digest}", content=content, headers=local.owner.headers)
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert error["code"] == "disk_full"
    assert error["message"] == (
        f"the disk is full: no space left on the device holding {local.data_dir}; free space there, then retry"
    )
    assert list(full_blob_disk.iterdir()) == [], "the partial upload was left behind"
    assert not (local.data_dir / "blobs" / "sha256").exists()
    assert [r.levelname for r in caplog.records if r.name.startswith("rhone_local")] == ["WARNING"]


def test_a_worker_that_hits_a_full_disk_records_disk_full(local: LocalEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from rhone_local.operations import tenancy

    def full(store: Any, op: dict, c: Any) -> dict:
        raise OSError(errno.ENOSPC, "No space left on device", str(local.data_dir / "rhone.db-wal"))

    monkeypatch.setattr(tenancy, "apply", full)
    started = local.client.post(f"{BASE}/projects", json={"name": "full"}, headers=local.owner.headers)
    local.run_operations()
    op = local.operation(started.json()["id"])
    assert op["state"] == "failed"
    assert op["error"]["code"] == "disk_full" and str(local.data_dir) in op["error"]["message"]
    assert local.store.count("projects") == 0


# -- an upload the client abandons ------------------------------------------------------------------------------------
@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Records of Rhone Local and of uvicorn (which does not propagate to the root logger)."""
    server_log = logging.getLogger("uvicorn.error")
    server_log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    server_log.removeHandler(caplog.handler)


def test_an_aborted_upload_is_one_warning_and_leaves_no_file(local: LocalEnv, live_url: str, every_log) -> None:
    digest = "sha256:" + "b" * 64
    host, port = live_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(
            f"PUT /v1/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {local.owner.token}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n".encode()
            + b"x" * 1000
        )
    # The server notices the disconnect and finishes the request: its temporary file is gone then.
    tmp = local.data_dir / "blobs" / "tmp"
    for _ in range(1000):
        if any(r.levelno >= logging.WARNING for r in every_log.records) and not list(tmp.iterdir()):
            break
        time.sleep(0.01)  # the server's thread notices the disconnect on its own
    time.sleep(0.2)  # and anything it would log after the first line has been logged too
    problems = [(r.name, r.levelname, r.getMessage()) for r in every_log.records if r.levelno >= logging.WARNING]
    assert problems == [
        ("rhone_local.api", "WARNING", f"PUT /v1/blobs/{digest}: the client went away before its request body ended")
    ]
    assert not any(r.exc_info for r in every_log.records)
    assert list(tmp.iterdir()) == []


def test_a_worker_survives_a_full_disk_between_operations(local: LocalEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim itself fails (SQLite cannot write): the worker thread logs it, stays alive and carries on."""
    real_claim = local.store.claim_operation
    failures = []

    def claim(*args: Any, **kwargs: Any) -> Any:
        if len(failures) < 3:
            failures.append(1)
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorcode = 13  # type: ignore[attr-defined]
            raise error
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(local.store, "claim_operation", claim)
    workers = Workers(local.store, local.notifier, count=1, build_count=0, stage_delay=0)
    started = local.client.post(f"{BASE}/projects", json={"name": "later"}, headers=local.owner.headers)
    workers.start()
    try:
        for _ in range(1000):
            if local.operation(started.json()["id"])["state"] == "succeeded":
                break
            time.sleep(0.01)
    finally:
        workers.stop()
    assert len(failures) == 3
    assert local.operation(started.json()["id"])["state"] == "succeeded"
