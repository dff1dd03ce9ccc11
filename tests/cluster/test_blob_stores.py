"""One conformance suite for every blob store (rhone_local/blobs.py): the filesystem store, the S3 store against a
real S3-API server on loopback (moto's server, bound to port 0), and the S3 store behind a node's cache
(`MirroredBlobStore`, what `--blobs s3://…` runs). Each test tries to break a promise of `BlobStorage` — a
tampered object, a truncated or interrupted upload, a wrong digest — and checks that nothing else changed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rhone_local.blobs import BlobStore, MirroredBlobStore
from rhone_local.domain.errors import DomainError


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def write(store, key: str, *chunks: bytes, declared_size: int | None = None) -> bool:
    return asyncio.run(store.write(key, stream(*chunks), declared_size=declared_size))


def _objects(client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


class Backend:
    """A blob store under test, with a way around it to its raw storage (to tamper) and a count of what it holds."""

    def __init__(self, store, tamper, stored, uploads=lambda: 0) -> None:
        self.store, self.tamper, self.stored, self.uploads = store, tamper, stored, uploads


def _filesystem(tmp_path: Path) -> Backend:
    store = BlobStore(tmp_path / "blobs")

    def tamper(key: str, data: bytes) -> None:
        path = store.path(key)
        path.chmod(0o644)
        path.write_bytes(data)

    def stored() -> list[str]:
        return sorted(str(p.relative_to(store.root)) for p in (store.root / "sha256").rglob("*") if p.is_file())

    return Backend(store, tamper, stored)


def _s3(s3_server: str, s3_client) -> Backend:
    from rhone_local.blobs_s3 import S3BlobStore

    client, bucket = s3_client
    store = S3BlobStore.from_url(f"s3://{bucket}/node-blobs", endpoint=s3_server)
    store.check()

    def uploads() -> int:
        return len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    return Backend(
        store,
        lambda key, data: client.put_object(Bucket=bucket, Key=store.key(key), Body=data),
        lambda: _objects(client, bucket),
        uploads,
    )


def _mirrored(tmp_path: Path, s3_server: str, s3_client) -> Backend:
    remote = _s3(s3_server, s3_client)
    store = MirroredBlobStore(tmp_path / "cache", remote.store)

    def tamper(key: str, data: bytes) -> None:
        remote.tamper(key, data)
        store.local_path(key).unlink(missing_ok=True)  # the cache is this node's: another node reads what S3 has

    return Backend(store, tamper, remote.stored, remote.uploads)


@pytest.fixture(
    params=[
        "filesystem",
        pytest.param("s3", marks=pytest.mark.slow),
        pytest.param("s3-behind-cache", marks=pytest.mark.slow),
    ]
)
def backend(request, tmp_path: Path) -> Backend:
    if request.param == "filesystem":
        return _filesystem(tmp_path)
    server, client = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_client")
    return _s3(server, client) if request.param == "s3" else _mirrored(tmp_path, server, client)


def test_a_written_blob_reads_back_verified_with_its_size(backend: Backend) -> None:
    data = b"hello, blob\n" * 1000
    key = digest(data)
    assert backend.store.has(key) is False
    assert write(backend.store, key, data[:5000], data[5000:], declared_size=len(data)) is True
    assert backend.store.has(key) is True
    assert backend.store.size(key) == len(data)
    with backend.store.open(key) as reader:
        assert b"".join(reader.chunks(4096)) == data
    assert write(backend.store, key, data) is False  # immutable: a second write stores nothing new
    assert len(backend.stored()) == 1


def test_missing_lists_each_absent_digest_once_in_order(backend: Backend) -> None:
    present, absent_a, absent_b = b"present", b"absent a", b"absent b"
    backend.store.put_bytes(present)
    asked = [digest(absent_b), digest(present), digest(absent_a), digest(absent_b)]
    assert backend.store.missing(asked) == [digest(absent_b), digest(absent_a)]
    assert backend.store.size(digest(absent_a)) is None


def test_put_file_and_put_bytes_store_under_their_digest(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "artifact.bin"
    source.write_bytes(os.urandom(3000))
    assert backend.store.put_file(source) == digest(source.read_bytes())
    assert backend.store.put_bytes(b"{}") == digest(b"{}")
    with backend.store.open(digest(source.read_bytes())) as reader:
        assert reader.read() == source.read_bytes()
    assert len(backend.stored()) == 2


def test_writers_storing_the_same_content_at_once_all_succeed(backend: Backend, tmp_path: Path) -> None:
    """Concurrent deploys of one checkout store the same manifest at the same moment, in threads of one server: each
    writer gets the digest, one blob is stored and no temporary file is left (CI once saw a FileNotFoundError when two
    writers shared a temporary name)."""
    rounds, writers = 20, 6
    contents = [f"manifest {n}".encode() * 50 for n in range(rounds)]
    source = tmp_path / "shared.bin"
    source.write_bytes(b"built once, stored by many" * 100)
    for data in contents:
        gate = threading.Barrier(writers)
        results: list[object] = []

        def store(index: int, data: bytes = data, gate: threading.Barrier = gate, results: list = results) -> None:
            gate.wait()
            try:
                if index % 3 == 0:
                    results.append(write(backend.store, digest(data), data, declared_size=len(data)) in (True, False))
                elif index % 3 == 1:
                    results.append(backend.store.put_bytes(data) == digest(data))
                else:
                    results.append(backend.store.put_file(source) == digest(source.read_bytes()))
            except Exception as error:  # noqa: BLE001 - the assertion below names it
                results.append(error)

        threads = [threading.Thread(target=store, args=(i,)) for i in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert results == [True] * writers
        with backend.store.open(digest(data)) as reader:  # whole, and verified against its digest on the way out
            assert reader.read() == data
    assert len(backend.stored()) == rounds + 1
    root = getattr(backend.store, "root", None)
    if root is not None:
        assert list((root / "tmp").iterdir()) == []


def test_a_tampered_blob_fails_closed_on_read(backend: Backend) -> None:
    data = b"the real content" * 100
    key = digest(data)
    backend.store.put_bytes(data)
    backend.tamper(key, b"the fake content" * 100)
    with pytest.raises(DomainError) as raised, backend.store.open(key) as reader:
        for _ in reader.chunks(256):  # every chunk but the end is handed out; the end is refused
            pass
    assert raised.value.code == "blob_corrupt"
    with pytest.raises(DomainError) as whole, backend.store.open(key) as reader:
        reader.read()
    assert whole.value.code == "blob_corrupt"


def test_a_truncated_blob_fails_closed_on_read(backend: Backend) -> None:
    data = b"0123456789" * 50
    backend.store.put_bytes(data)
    backend.tamper(digest(data), data[:-1])
    with pytest.raises(DomainError) as raised, backend.store.open(digest(data)) as reader:
        reader.read()
    assert raised.value.code == "blob_corrupt"


def test_an_upload_that_does_not_hash_to_its_digest_stores_nothing(backend: Backend) -> None:
    claimed = digest(b"what the client said")
    with pytest.raises(DomainError) as raised:
        write(backend.store, claimed, b"what the client sent")
    assert raised.value.code == "digest_mismatch"
    assert backend.store.has(claimed) is False
    assert backend.stored() == []
    assert backend.uploads() == 0


def test_a_short_upload_is_refused_by_its_declared_size(backend: Backend) -> None:
    data = b"short"
    with pytest.raises(DomainError) as raised:
        write(backend.store, digest(data), data, declared_size=10)
    assert raised.value.code == "size_mismatch"
    assert backend.stored() == []


def test_an_interrupted_multipart_upload_leaves_no_object_and_no_pending_upload(backend: Backend) -> None:
    """A large blob whose client goes away after the first parts were sent: nothing becomes visible."""
    part = os.urandom(1024 * 1024)
    whole = part * 10  # more than one S3 part

    async def interrupted() -> AsyncIterator[bytes]:
        for _ in range(9):
            yield part
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        asyncio.run(backend.store.write(digest(whole), interrupted()))
    assert backend.store.has(digest(whole)) is False
    assert backend.stored() == []
    assert backend.uploads() == 0
    assert write(backend.store, digest(whole), *([part] * 10)) is True  # the retry goes through
    assert backend.store.size(digest(whole)) == len(whole)


def test_delete_removes_only_that_blob(backend: Backend) -> None:
    kept, removed = b"kept", b"removed"
    backend.store.put_bytes(kept)
    backend.store.put_bytes(removed)
    assert backend.store.delete(digest(removed)) is True
    assert backend.store.delete(digest(removed)) is False
    assert backend.store.missing([digest(kept), digest(removed)]) == [digest(removed)]
    with pytest.raises(DomainError) as raised:
        backend.store.open(digest(removed))
    assert raised.value.code == "blobs_missing"
    assert len(backend.stored()) == 1


def test_a_malformed_digest_never_reaches_the_storage(backend: Backend) -> None:
    for bad in ("sha256:../../etc/passwd", "md5:abc", "sha256:" + "A" * 64):
        with pytest.raises(DomainError) as raised:
            backend.store.has(bad)
        assert raised.value.code == "invalid_digest"
    assert backend.stored() == []
