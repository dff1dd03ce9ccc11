"""Content-addressed blob storage: the `BlobStorage` interface, and its filesystem implementation under
`<data dir>/blobs/sha256/ab/cdef…` (the default; `blobs_s3.py` has the S3 one, and `MirroredBlobStore` the local
cache that puts it behind the server's file-based callers — docs/multi-node.md, "Blobs").

A blob is written to a temporary file while its sha256 is computed, and renamed into place only when the digest
matches the one it was uploaded under — a tampered or truncated upload never becomes visible. Blobs are immutable;
writing one that exists is a no-op. Reading verifies the digest again on the way out: storage can rot, and a blob
store on another machine can be written by someone else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from rhone_local.domain.errors import DomainError, is_disk_full
from rhone_local.domain.manifest import DIGEST

MAX_BLOB_BYTES = 2 * 1024**3  # the same limit as a manifest entry (domain/manifest.py)
CHUNK = 1024 * 1024


def temporary_path(tmp_dir: Path, kind: str, digest: str) -> Path:
    """A temporary file name no other writer uses. Two requests storing the same content at once (concurrent
    deploys of one checkout store the same manifest) must not share one: the second rename would find the file gone."""
    return tmp_dir / f"{kind}.{digest[7:19]}.{os.getpid()}.{secrets.token_hex(8)}"


def blob_missing(digest: str) -> DomainError:
    return DomainError("blobs_missing", f"blob {digest} is not stored", 409, {"missing": [digest]})


class VerifiedReader:
    """A blob's bytes, read through: the read that reaches the end raises `blob_corrupt` instead of returning it
    when the bytes read do not hash to the digest (fail closed: a caller never sees a clean end of a wrong blob)."""

    def __init__(self, raw: BinaryIO, digest: str) -> None:
        self.raw, self.digest = raw, digest
        self._hasher = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read() if n is None or n < 0 else self.raw.read(n)
        self._hasher.update(data)
        self.size += len(data)
        if not data or n is None or n < 0:
            actual = "sha256:" + self._hasher.hexdigest()
            if actual != self.digest:
                raise DomainError(
                    "blob_corrupt", f"stored blob {self.digest} no longer matches its digest (read {actual})", 500
                )
        return data

    def chunks(self, size: int = 1024 * 1024) -> Iterator[bytes]:
        while chunk := self.read(size):
            yield chunk

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> VerifiedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobStorage(Protocol):
    """What any blob store offers (filesystem, S3): content addressed by `sha256:<hex>`, immutable, verified both
    on the way in and on the way out."""

    def has(self, digest: str) -> bool: ...

    def missing(self, digests: Iterable[str]) -> list[str]:
        """The digests not stored, in order, each once."""
        ...

    async def write(self, digest: str, chunks: AsyncIterator[bytes], *, declared_size: int | None = None) -> bool:
        """Store the streamed bytes under `digest` if they hash to it (else `digest_mismatch`, nothing stored);
        True if newly stored, False if it existed."""
        ...

    def put_file(self, source: Path) -> str:
        """Store a local file; its digest."""
        ...

    def put_bytes(self, data: bytes) -> str:
        """Store `data`; its digest."""
        ...

    def open(self, digest: str) -> VerifiedReader:
        """The blob's bytes, verified as they are read (`blobs_missing` when it is not stored)."""
        ...

    def size(self, digest: str) -> int | None:
        """Its size in bytes, or None when it is not stored."""
        ...

    def delete(self, digest: str) -> bool:
        """Remove it (retention); True if it was stored."""
        ...


def digest_of_file(source: Path) -> str:
    hasher = hashlib.sha256()
    with source.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


class BlobStore:
    """The filesystem blob store (`BlobStorage`), which also hands out the path of a stored blob to the server's
    callers that read files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def local_path(self, digest: str) -> Path:
        """Where the blob is (or would be) in this directory; `invalid_digest` for anything but a sha256 digest."""
        if not DIGEST.match(digest):
            raise DomainError("invalid_digest", f"{digest!r} is not a sha256:<64 hex> digest", 422)
        hexdigest = digest.removeprefix("sha256:")
        return self.root / "sha256" / hexdigest[:2] / hexdigest[2:]

    def path(self, digest: str) -> Path:
        """The file of a stored blob, for callers that read files."""
        return self.local_path(digest)

    def has(self, digest: str) -> bool:
        return self.local_path(digest).is_file()

    def missing(self, digests: Iterable[str]) -> list[str]:
        return [d for d in dict.fromkeys(digests) if not self.has(d)]

    def wrong_sizes(self, files: Iterable[dict]) -> list[dict]:
        """Manifest entries whose declared `size` is not the size of the stored blob of their sha256."""
        wrong = []
        for entry in files:
            actual = self.path("sha256:" + entry["sha256"]).stat().st_size
            if actual != entry["size"]:
                wrong.append({"path": entry["path"], "declared": entry["size"], "actual": actual})
        return wrong

    def refresh(self, digests: Iterable[str]) -> None:
        """Mark present blobs as just used: a client told they exist will reference them in a deployment it is about
        to create, and retention spares blobs younger than its grace period (rhone_local/retention.py)."""
        for digest in dict.fromkeys(digests):
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.local_path(digest))

    async def write(self, digest: str, chunks: AsyncIterator[bytes], *, declared_size: int | None = None) -> bool:
        """Store the streamed bytes under `digest`; True if newly stored, False if it already existed."""
        target = self.local_path(digest)
        if target.is_file():
            async for _ in chunks:  # drain the body so the connection stays usable
                pass
            return False
        hasher = hashlib.sha256()
        size = 0
        temporary = temporary_path(self.root / "tmp", "upload", digest)
        try:
            try:
                with temporary.open("wb") as handle:
                    async for chunk in chunks:
                        size += len(chunk)
                        if size > MAX_BLOB_BYTES:
                            raise DomainError("blob_too_large", f"blobs are limited to {MAX_BLOB_BYTES} bytes", 413)
                        hasher.update(chunk)
                        handle.write(chunk)
            except OSError as error:
                if is_disk_full(error):
                    # The rest is read and dropped, so the client hears "disk full", not a reset connection.
                    async for _ in chunks:
                        pass
                raise
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise DomainError(
                    "digest_mismatch",
                    f"the uploaded content has digest {actual}, not {digest}",
                    409,
                    {"expected": digest, "actual": actual, "size": size},
                )
            if declared_size is not None and size != declared_size:
                raise DomainError("size_mismatch", f"received {size} bytes, expected {declared_size}", 409)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(temporary, 0o444)
            os.replace(temporary, target)
            return True
        finally:
            temporary.unlink(missing_ok=True)

    def put_file(self, source: Path) -> str:
        """Store a local file (built artifacts); returns its digest."""
        digest = digest_of_file(source)
        target = self.local_path(digest)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = temporary_path(self.root / "tmp", "put", digest)
            try:
                shutil.copyfile(source, temporary)
                os.chmod(temporary, 0o444)
                os.replace(temporary, target)
            finally:
                temporary.unlink(missing_ok=True)
        return digest

    def put_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self.local_path(digest)
        if not target.is_file():
            temporary = temporary_path(self.root / "tmp", "bytes", digest)
            try:
                temporary.write_bytes(data)
                os.chmod(temporary, 0o444)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temporary, target)
            finally:
                temporary.unlink(missing_ok=True)
        return digest

    def open(self, digest: str) -> VerifiedReader:
        try:
            return VerifiedReader(self.local_path(digest).open("rb"), digest)
        except FileNotFoundError:
            raise blob_missing(digest) from None

    def size(self, digest: str) -> int | None:
        try:
            return self.local_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, digest: str) -> bool:
        try:
            self.local_path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def copy_out(self, digest: str, destination: Path, *, executable: bool) -> None:
        """Materialize a blob at `destination`, re-verifying its digest on the way (storage can rot)."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.open(digest) as source, destination.open("wb") as target:
                for chunk in source.chunks(CHUNK):
                    target.write(chunk)
        except DomainError:
            destination.unlink(missing_ok=True)
            raise
        os.chmod(destination, 0o755 if executable else 0o644)


class MirroredBlobStore(BlobStore):
    """A blob store on another machine (`remote`, e.g. S3) behind a filesystem cache in this node's data directory:
    the server's file-based callers keep reading paths, while every blob written here is in `remote` before the
    write returns, and a blob another node wrote is fetched (verified) the first time its path is asked for — so any
    node can materialize any deployment's source or artifact."""

    def __init__(self, root: Path, remote: BlobStorage) -> None:
        super().__init__(root)
        self.remote = remote

    def path(self, digest: str) -> Path:
        local = self.local_path(digest)
        if not local.is_file():
            self._fetch(digest, local)
        return local

    def open(self, digest: str) -> VerifiedReader:
        self.path(digest)
        return super().open(digest)

    def size(self, digest: str) -> int | None:
        local = super().size(digest)
        return local if local is not None else self.remote.size(digest)

    def _fetch(self, digest: str, local: Path) -> None:
        temporary = temporary_path(self.root / "tmp", "fetch", digest)
        try:
            with self.remote.open(digest) as source, temporary.open("wb") as target:
                for chunk in source.chunks(CHUNK):
                    target.write(chunk)
            local.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(temporary, 0o444)
            os.replace(temporary, local)  # only once verified to the end: a corrupt copy is never cached
        except DomainError as error:
            if error.code != "blobs_missing":
                raise
            # stored nowhere: the caller sees a missing file, as with the filesystem store
        finally:
            temporary.unlink(missing_ok=True)

    def has(self, digest: str) -> bool:
        return self.local_path(digest).is_file() or self.remote.has(digest)

    def missing(self, digests: Iterable[str]) -> list[str]:
        locally = [d for d in dict.fromkeys(digests) if not self.local_path(d).is_file()]
        return self.remote.missing(locally) if locally else []

    def _publish(self, digest: str) -> None:
        if not self.remote.has(digest):
            self.remote.put_file(self.local_path(digest))

    async def write(self, digest: str, chunks: AsyncIterator[bytes], *, declared_size: int | None = None) -> bool:
        if self.remote.has(digest):
            async for _ in chunks:  # drain the body so the connection stays usable
                pass
            return False
        stored = await super().write(digest, chunks, declared_size=declared_size)
        self._publish(digest)
        return stored

    def put_file(self, source: Path) -> str:
        digest = super().put_file(source)
        self._publish(digest)
        return digest

    def put_bytes(self, data: bytes) -> str:
        digest = super().put_bytes(data)
        self._publish(digest)
        return digest

    def delete(self, digest: str) -> bool:
        local = super().delete(digest)
        return self.remote.delete(digest) or local


def open_blob_store(url: str | None, data_dir: Path, *, endpoint: str | None = None) -> BlobStore | None:
    """The blob store `rhone local up --blobs URL` names: None for the default (the filesystem store the pipeline
    builds), or `s3://bucket[/prefix]` — the S3 API at `endpoint` (else AWS's), credentials from the standard AWS
    environment variables — behind this node's cache. Raises ValueError saying what is wrong with `url`."""
    if not url:
        return None
    from rhone_local.blobs_s3 import S3BlobStore

    return MirroredBlobStore(data_dir / "blobs", S3BlobStore.from_url(url, endpoint=endpoint))
