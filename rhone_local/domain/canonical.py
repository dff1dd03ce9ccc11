"""Canonical JSON: the one byte form every digest of a document is taken over (a manifest's digest, an idempotency
key's request fingerprint, a route snapshot's checksum): keys sorted, no whitespace, UTF-8 (not \\u-escaped). The
CLI computes manifest digests with the same rules (`rhone_cli/artifacts/manifest.py`: it imports nothing of Rhone
Local)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_bytes(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def canonical_sha256(document: Any) -> str:
    """The hex sha256 of the document's canonical bytes."""
    return hashlib.sha256(canonical_bytes(document)).hexdigest()
