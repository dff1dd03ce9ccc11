"""Files that change between the manifest and their upload (issue: `rhone deploy --json > result.json 2>> ci.log`
ended in `internal_error`, "Too much data for declared Content-Length").

`rhone deploy` runs in process against the real API app (uvicorn on a loopback port). The file is changed at the
worst moment — after it was hashed, before it is uploaded — by a transport that acts when the CLI asks which blobs
the server lacks. The upload sends exactly the bytes that were hashed, or stops with `source_changed` (exit 5)
naming the file, and nothing is stored or created.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from rhone_cli.errors import ExitCode
from tests.conftest import RecordingTransport

from .conftest import BASE, SHOP_WEB_TOML, LocalEnv

DATA = b"0123456789" * 100_000  # 1 MB: more than one upload chunk is not needed, but a real-sized file


class ChangeBeforeUpload(RecordingTransport):
    """Runs `change` once, when the CLI asks which blobs are missing: after hashing, before any upload."""

    def __init__(self, change: Callable[[], None]) -> None:
        super().__init__()
        self.change = change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/blobs/missing" and self.change is not None:
            self.change()
            self.change = None
        return super().handle_request(request)


@pytest.fixture
def project_dir(local: LocalEnv, tmp_path: Path) -> Path:
    local.create_app(local.create_project("shop"), "web")
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "rhone.toml").write_text(SHOP_WEB_TOML)
    (directory / "app.py").write_text("print('hello')\n")
    (directory / "data.bin").write_bytes(DATA)
    return directory


def _deploy(rhone, local: LocalEnv, live_url: str, project_dir: Path, transport) -> object:
    environ = {"RHONE_API_URL": live_url, "RHONE_TOKEN": local.owner.token}
    return rhone("deploy", "--no-wait", "--json", cwd=project_dir, environ=environ, transport=transport)


def _stored(local: LocalEnv, content: bytes) -> bool:
    return local.data_dir.joinpath("blobs").exists() and any(
        path.read_bytes() == content for path in (local.data_dir / "blobs" / "sha256").rglob("*") if path.is_file()
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda path: path.write_bytes(b"X" + DATA[1:]), "its content changed after it was hashed"),
        (lambda path: path.write_bytes(DATA[:1000]), "it is shorter than when it was hashed"),
        (lambda path: path.unlink(), "it can no longer be read (No such file or directory)"),
    ],
    ids=["rewritten", "truncated", "deleted"],
)
def test_a_file_changed_after_hashing_is_source_changed_and_nothing_is_created(
    rhone, local: LocalEnv, live_url: str, project_dir: Path, change, why
):
    data = project_dir / "data.bin"
    snapshot = local.snapshot()
    transport = ChangeBeforeUpload(lambda: change(data))

    result = _deploy(rhone, local, live_url, project_dir, transport)

    assert result.exit_code == ExitCode.CONFLICT, result.stdout + result.stderr
    error = result.json()["error"]
    assert error["code"] == "source_changed"
    assert error["message"] == f"data.bin changed during the deploy: {why}; nothing was deployed"
    assert ".rhoneignore" in error["hint"] and "result.json" in error["hint"]
    assert error["details"] == {"path": "data.bin"}
    assert "internal_error" not in result.stdout + result.stderr
    assert local.snapshot() == snapshot  # no deployment, no operation
    assert local.store.count("deployments") == 0
    # The upload was cut short: the server stored neither the hashed content nor the new one.
    assert not _stored(local, DATA)
    assert data.exists() is False or not _stored(local, data.read_bytes())
    assert [r.url.path for r in transport.requests if r.method == "POST" and "deployments" in r.url.path] == []


def test_a_file_that_grew_uploads_exactly_the_bytes_that_were_hashed(rhone, local: LocalEnv, live_url, project_dir):
    data = project_dir / "data.bin"
    transport = ChangeBeforeUpload(lambda: data.write_bytes(DATA + b"appended while deploying\n"))

    result = _deploy(rhone, local, live_url, project_dir, transport)

    assert result.exit_code == 0, result.stdout + result.stderr
    digest = "sha256:" + hashlib.sha256(DATA).hexdigest()
    assert local.client.post("/v1/blobs/missing", json={"digests": [digest]}, headers=local.owner.headers).json() == {
        "missing": []
    }
    assert _stored(local, DATA)
    assert local.store.count("deployments") == 1


def test_the_server_refuses_a_manifest_whose_sizes_are_not_its_blobs(local: LocalEnv, project_dir):
    content = b"print('hello')\n"
    digest = hashlib.sha256(content).hexdigest()
    stored = local.client.put(f"/v1/blobs/sha256:{digest}", content=content, headers=local.owner.headers)
    assert stored.status_code == 201
    from rhone_cli.artifacts.manifest import digest_of

    manifest = {"version": 1, "files": [{"path": "app.py", "size": len(content) + 7, "mode": "644", "sha256": digest}]}
    snapshot = local.snapshot()
    response = local.client.post(
        f"{BASE}/projects/shop/apps/web/deployments",
        json={
            "environment": "preview",
            "manifest": manifest,
            "manifest_digest": digest_of(manifest),
            "config": {"build": {}, "process": {"start": "python app.py"}},
        },
        headers=local.owner.headers,
    )

    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "size_mismatch"
    assert error["details"]["entries"] == [{"path": "app.py", "declared": len(content) + 7, "actual": len(content)}]
    assert local.snapshot() == snapshot
