"""Artifact and source manifests: canonical form, digest, and validation of a received manifest.

The same rules as the CLI's manifest builder (`rhone_cli/artifacts/manifest.py`), kept separately because the
server must never trust a client's check: a manifest is `{"version": 1, "files": [{path, size, mode, sha256}]}`
with files sorted by path; its digest is `sha256:` + the sha256 of its canonical JSON (sorted keys, no
whitespace, UTF-8).
"""

from __future__ import annotations

import re
from typing import Any

from rhone_local.domain.canonical import canonical_sha256
from rhone_local.domain.errors import DomainError

MAX_FILES = 100_000
MAX_PATH = 1024
# Bytes, as the file system counts them: a longer name cannot be created (NAME_MAX is 255 on Linux and macOS), and
# the whole path stays far below PATH_MAX (4096) even under a deep data directory.
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 1024
MAX_FILE_SIZE = 2 * 1024**3
_HEX = re.compile(r"^[0-9a-f]{64}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def digest_of(document: dict[str, Any]) -> str:
    return "sha256:" + canonical_sha256(document)


def _bad(message: str, **details: Any) -> DomainError:
    return DomainError("invalid_manifest", message, 422, details)


def _check_length(index: int, path: str) -> None:
    """The path's UTF-8 size, whole and per component (a path the server cannot create on disk is refused here,
    at upload, rather than in the clone stage)."""
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(f"files[{index}].path {path!r} is not valid UTF-8", index=index) from None
    if len(encoded) > MAX_PATH_BYTES:
        raise _bad(
            f"files[{index}].path is {len(encoded)} bytes long; paths are limited to {MAX_PATH_BYTES} bytes (UTF-8)",
            index=index,
            path=path,
            limit=MAX_PATH_BYTES,
        )
    for component in encoded.split(b"/"):
        if len(component) > MAX_COMPONENT_BYTES:
            name = component.decode("utf-8")
            raise _bad(
                f"files[{index}].path {path!r}: the name {name[:40]!r}… is {len(component)} bytes long; each name in "
                f"a path is limited to {MAX_COMPONENT_BYTES} bytes (UTF-8)",
                index=index,
                path=path,
                limit=MAX_COMPONENT_BYTES,
            )


def validate(document: Any) -> dict[str, Any]:
    """Check a received manifest; return it unchanged or raise `invalid_manifest` naming the first problem."""
    if not isinstance(document, dict) or set(document) != {"version", "files"}:
        raise _bad("a manifest is an object with exactly the keys version and files")
    if document["version"] != 1:
        raise _bad(f"unsupported manifest version {document['version']!r}")
    files = document["files"]
    if not isinstance(files, list):
        raise _bad("files must be a list")
    if len(files) > MAX_FILES:
        raise _bad(f"too many files ({len(files)} > {MAX_FILES})")
    previous = None
    for index, entry in enumerate(files):
        if not isinstance(entry, dict) or set(entry) != {"path", "size", "mode", "sha256"}:
            raise _bad(f"files[{index}] must have exactly path, size, mode, sha256", index=index)
        path = entry["path"]
        if not isinstance(path, str) or not path or len(path) > MAX_PATH:
            raise _bad(f"files[{index}].path must be a non-empty string of at most {MAX_PATH} characters", index=index)
        _check_length(index, path)
        parts = path.split("/")
        if (
            path.startswith("/")
            or "\\" in path
            or any(p in ("", ".", "..") for p in parts)
            or any(ord(c) < 32 for c in path)
            or re.match(r"^[A-Za-z]:", path)
        ):
            raise _bad(f"files[{index}].path {path!r} is not a normalized relative path", index=index, path=path)
        if previous is not None and path <= previous:
            problem = "duplicate" if path == previous else "not sorted"
            raise _bad(f"files[{index}].path {path!r} is {problem}", index=index, path=path)
        previous = path
        size = entry["size"]
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_SIZE:
            raise _bad(f"files[{index}].size must be an integer between 0 and {MAX_FILE_SIZE}", index=index)
        if entry["mode"] not in ("644", "755"):
            raise _bad(f"files[{index}].mode must be '644' or '755'", index=index)
        if not isinstance(entry["sha256"], str) or not _HEX.match(entry["sha256"]):
            raise _bad(f"files[{index}].sha256 must be 64 lowercase hex digits", index=index)
    # A file cannot also be a directory of another entry ("a" and "a/b").
    paths = {e["path"] for e in files}
    for path in paths:
        head = path.rsplit("/", 1)[0] if "/" in path else None
        while head:
            if head in paths:
                raise _bad(f"{head!r} is both a file and a directory", path=head)
            head = head.rsplit("/", 1)[0] if "/" in head else None
    return document
