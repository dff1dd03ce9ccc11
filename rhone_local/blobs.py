"""Content-addressed blob storage under `<data dir>/blobs/sha256/ab/cdef…`.

A blob is written to a temporary file while its sha256 is computed, and renamed into place only when the digest
matches the one it was uploaded under — a tampered or truncated upload never becomes visible. Blobs are immutable;
writing one that exists is a no-op.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from rhone_local.domain.errors import DomainError, is_disk_full
from rhone_local.domain.manifest import DIGEST

MAX_BLOB_BYTES = 2 * 1024**3  # the same limit as a manifest entry (domain/manifest.py)
CHUNK = 1024 * 1024


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not DIGEST.match(digest):
            raise DomainError("invalid_digest", f"{digest!r} is not a sha256:<64 hex> digest", 422)
        hexdigest = digest.removeprefix("sha256:")
        return self.root / "sha256" / hexdigest[:2] / hexdigest[2:]

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

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

    async def write(self, digest: str, chunks: AsyncIterator[bytes], *, declared_size: int | None = None) -> bool:
        """Store the streamed bytes under `digest`; True if newly stored, False if it already existed."""
        target = self.path(digest)
        if target.is_file():
            async for _ in chunks:  # drain the body so the connection stays usable
                pass
            return False
        hasher = hashlib.sha256()
        size = 0
        temporary = self.root / "tmp" / f"{digest[7:19]}.{os.getpid()}.{id(chunks)}"
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
            os.replace(temporary, target)
            os.chmod(target, 0o444)
            return True
        finally:
            temporary.unlink(missing_ok=True)

    def put_file(self, source: Path) -> str:
        """Store a local file (built artifacts); returns its digest."""
        hasher = hashlib.sha256()
        with source.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
        digest = "sha256:" + hasher.hexdigest()
        target = self.path(digest)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.root / "tmp" / f"put.{os.getpid()}.{digest[7:19]}"
            shutil.copyfile(source, temporary)
            os.replace(temporary, target)
            os.chmod(target, 0o444)
        return digest

    def copy_out(self, digest: str, destination: Path, *, executable: bool) -> None:
        """Materialize a blob at `destination`, re-verifying its digest on the way (storage can rot)."""
        hasher = hashlib.sha256()
        destination.parent.mkdir(parents=True, exist_ok=True)
        with self.path(digest).open("rb") as source, destination.open("wb") as target:
            while chunk := source.read(CHUNK):
                hasher.update(chunk)
                target.write(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            destination.unlink(missing_ok=True)
            raise DomainError("blob_corrupt", f"stored blob {digest} no longer matches its digest", 500)
        os.chmod(destination, 0o755 if executable else 0o644)
