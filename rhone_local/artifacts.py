"""Server-side file trees: materialize a manifest from blobs, and record a built directory as an artifact.

Both directions verify digests: materializing re-hashes every blob as it is copied out; recording hashes every file
into the blob store and builds the canonical manifest whose digest is the artifact's identity.

A built tree may hold symlinks (a virtualenv's `bin/python` names the system interpreter, its `lib64` names `lib`).
They are recorded as links, never followed, in the manifest's `links` list (`{"path", "target"}`, sorted by path;
the key is absent when there are none, so trees without links keep their digests): the digest covers the link as it
runs. A link may point inside the tree or at an absolute path under the system's read-only directories, which every
allocation has (docs/security.md); any other target is refused.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
from pathlib import Path
from typing import Any

from rhone_local.blobs import BlobStore
from rhone_local.domain.canonical import canonical_bytes
from rhone_local.domain.errors import DomainError

SKIPPED_DIRS = frozenset({".rhone", "__pycache__", ".git"})
SYSTEM_PREFIXES = ("/usr/", "/bin/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/sbin/")
LINK_HINT = (
    "links may point inside the output or into the system's read-only directories (/usr, /bin, /lib, /lib64, "
    "/sbin). A virtualenv made by the build with `python3 -m venv .venv` qualifies: in the build sandbox python3 is "
    "/usr/bin/python3. Make the file a copy instead of a link, or build it from the system's interpreter"
)


def link_problem(path: str, target: str) -> str | None:
    """Why a link at `path` (tree-relative) to `target` may not be part of an artifact, or None."""
    if target.startswith("/"):
        normalized = posixpath.normpath(target)
        if any(normalized.startswith(prefix) or normalized + "/" == prefix for prefix in SYSTEM_PREFIXES):
            return None
        return f"links outside the output directory (to {target})"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../") or not target:
        return f"links outside the output directory (to {target})"
    return None


def store_manifest(blobs: BlobStore, document: dict[str, Any]) -> str:
    """Keep the manifest itself as a blob: its digest is the sha256 of its canonical bytes, i.e. a blob digest."""
    return blobs.put_bytes(canonical_bytes(document))


def load_manifest(blobs: BlobStore, digest: str) -> dict[str, Any]:
    import json

    with blobs.open(digest) as reader:  # verified: a manifest decides which files a deployment runs
        return json.loads(reader.read())


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
    for link in document.get("links", []):
        problem = link_problem(link["path"], link["target"])
        target = destination.joinpath(*link["path"].split("/"))
        if problem or not target.parent.resolve().is_relative_to(destination.resolve()):
            raise DomainError("invalid_manifest", f"{link['path']!r} {problem or 'escapes the tree'}", 422)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link["target"], target)  # an existing entry at its path is an error: links never overwrite
    return {"files": len(document["files"]), "bytes": total}


def record_tree(blobs: BlobStore, root: Path) -> dict[str, Any]:
    """Hash every regular file under `root` into the blob store and return the canonical manifest document."""
    files = []
    links = []
    seen: set[tuple[int, int]] = set()

    def walk(directory: Path, prefix: str) -> None:
        info = directory.stat()
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            relative = f"{prefix}{entry.name}"
            path = Path(entry.path)
            if entry.is_symlink():
                target = os.readlink(path)
                problem = link_problem(relative, target)
                if problem:
                    raise DomainError("unsafe_path", f"build output {relative!r} {problem}: {LINK_HINT}", 422)
                links.append({"path": relative, "target": target})
                continue
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
    document: dict[str, Any] = {"version": 1, "files": files}
    if links:
        document["links"] = sorted(links, key=lambda link: link["path"])
    return document
