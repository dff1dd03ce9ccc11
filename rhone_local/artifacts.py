"""Server-side file trees: materialize a manifest from blobs, and record a built directory as an artifact.

Both directions verify digests: materializing re-hashes every blob as it is copied out; recording hashes every file
into the blob store and builds the canonical manifest whose digest is the artifact's identity.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from rhone_local.blobs import BlobStore
from rhone_local.domain.errors import DomainError
from rhone_local.domain.manifest import canonical_bytes, digest_of

SKIPPED_DIRS = frozenset({".rhone", "__pycache__", ".git"})


def store_manifest(blobs: BlobStore, document: dict[str, Any]) -> str:
    """Keep the manifest itself as a blob: its digest is the sha256 of its canonical bytes, i.e. a blob digest."""
    digest = digest_of(document)
    path = blobs.path(digest)
    if not path.is_file():
        temporary = blobs.root / "tmp" / f"manifest.{os.getpid()}.{digest[7:19]}"
        temporary.write_bytes(canonical_bytes(document))
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, path)
    return digest


def load_manifest(blobs: BlobStore, digest: str) -> dict[str, Any]:
    import json

    return json.loads(blobs.path(digest).read_bytes())


def materialize(blobs: BlobStore, document: dict[str, Any], destination: Path) -> dict[str, int]:
    """Write every file of `document` under `destination` (emptied first), verifying each blob's digest."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    total = 0
    for entry in document["files"]:
        target = destination.joinpath(*entry["path"].split("/"))
        if not target.resolve().is_relative_to(destination.resolve()):
            raise DomainError("invalid_manifest", f"{entry['path']!r} escapes the tree", 422)
        blobs.copy_out("sha256:" + entry["sha256"], target, executable=entry["mode"] == "755")
        total += entry["size"]
    return {"files": len(document["files"]), "bytes": total}


def record_tree(blobs: BlobStore, root: Path) -> dict[str, Any]:
    """Hash every regular file under `root` into the blob store and return the canonical manifest document."""
    root_resolved = root.resolve()
    files = []
    seen: set[tuple[int, int]] = set()

    def walk(directory: Path, prefix: str) -> None:
        info = directory.stat()
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            relative = f"{prefix}{entry.name}"
            path = Path(entry.path)
            if entry.is_symlink() and not path.resolve().is_relative_to(root_resolved):
                raise DomainError("unsafe_path", f"build output {relative!r} links outside the output directory", 422)
            if entry.is_dir():
                if entry.name not in SKIPPED_DIRS:
                    walk(path, relative + "/")
                continue
            mode = path.stat().st_mode
            if not stat.S_ISREG(mode):
                raise DomainError("unsafe_path", f"build output {relative!r} is not a regular file", 422)
            digest = blobs.put_file(path)
            files.append(
                {
                    "path": relative,
                    "size": path.stat().st_size,
                    "mode": "755" if mode & 0o111 else "644",
                    "sha256": digest.removeprefix("sha256:"),
                }
            )

    walk(root, "")
    files.sort(key=lambda f: f["path"])
    return {"version": 1, "files": files}
