"""`--blobs s3://…` wired through the control plane (rhone_local/server.py): two control planes on two data
directories share one bucket, as two nodes would, and what one node stores the other materializes — verified; a
`--blobs` the server cannot use refuses the start with exit status 3 and says what to fix."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rhone_local.blobs import MirroredBlobStore, open_blob_store
from rhone_local.datadir import REFUSED_STATUS
from rhone_local.domain.errors import DomainError
from rhone_local.server import open_control_plane

pytestmark = pytest.mark.slow


def _plane(tmp_path: Path, name: str, url: str, endpoint: str):
    data_dir = tmp_path / name
    data_dir.mkdir(mode=0o700)
    return open_control_plane(data_dir, blobs=open_blob_store(url, data_dir, endpoint=endpoint))


def test_a_blob_uploaded_to_one_node_is_materialized_verified_by_another(tmp_path, s3_server, s3_client):
    client, bucket = s3_client
    url = f"s3://{bucket}/cluster"
    first, second = _plane(tmp_path, "node-a", url, s3_server), _plane(tmp_path, "node-b", url, s3_server)
    try:
        for plane in (first, second):
            assert isinstance(plane.pipeline.blobs, MirroredBlobStore)
            assert plane.pipeline.runner.blobs is plane.pipeline.blobs
            assert plane.app.state.blobs is plane.pipeline.blobs
        data = os.urandom(50_000)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        token = (tmp_path / "node-a" / "owner.token").read_text().strip()
        with TestClient(first.app) as api:
            stored = api.put(f"/v1/blobs/{digest}", content=data, headers={"Authorization": f"Bearer {token}"})
        assert stored.status_code == 201, stored.text
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == [f"cluster/sha256/{digest[7:9]}/{digest[9:]}"]

        other = second.pipeline.blobs
        assert other.local_path(digest).exists() is False  # nothing on node B's disk yet
        assert other.missing([digest]) == []
        other.copy_out(digest, tmp_path / "out" / "file", executable=False)
        assert (tmp_path / "out" / "file").read_bytes() == data
        assert other.local_path(digest).read_bytes() == data  # cached for the next reader

        # Someone changes the object in the bucket: a node that has no copy yet refuses it.
        client.put_object(Bucket=bucket, Key=keys[0], Body=b"x" * len(data))
        third = MirroredBlobStore(tmp_path / "node-c-cache", other.remote)
        with pytest.raises(DomainError) as raised:
            third.copy_out(digest, tmp_path / "out" / "tampered", executable=False)
        assert raised.value.code == "blob_corrupt"
        assert not (tmp_path / "out" / "tampered").exists()
        assert not third.local_path(digest).exists()  # a corrupt copy is never cached
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("blobs", "endpoint", "said"),
    [
        ("s3://Not_A_Bucket", None, "is not an S3 bucket name"),
        ("file:///tmp/blobs", None, "expected s3://BUCKET[/PREFIX]"),
        ("s3://rhone-no-such-bucket", "from-s3-server", "is not reachable"),
        ("s3://rhone-blobs-x", "ftp://127.0.0.1:1", "expected an http:// or https:// URL"),
    ],
)
def test_a_blob_store_the_server_cannot_use_refuses_the_start(tmp_path, s3_server, s3_client, blobs, endpoint, said):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    environ = {**os.environ, "RHONE_LOCAL_BLOBS": blobs}
    if endpoint:
        environ["RHONE_LOCAL_BLOBS_ENDPOINT"] = s3_server if endpoint == "from-s3-server" else endpoint
    command = [sys.executable, "-m", "rhone_local", "serve", "--data-dir", str(data_dir), "--port", "0"]
    finished = subprocess.run(
        command, env=environ, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert finished.returncode == REFUSED_STATUS, finished.stderr
    assert "error [blobs_unavailable]" in finished.stderr and said in finished.stderr, finished.stderr
    assert "hint: " in finished.stderr and "Traceback" not in finished.stderr
    assert not (data_dir / "server.json").exists()
