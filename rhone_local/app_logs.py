"""Allocation logs: what an app wrote, read by byte offsets, with a cursor a follower hands back.

An app writes its stdout and stderr straight into `allocations/<id>/alloc.log` (no pipe through Rhone Local, so an
app never blocks on, or dies with, the control plane). Lines carry no time of their own; instead the reconciler notes
`(time, size)` checkpoints in `alloc.log.idx` about once a second while the file grows, which is how `--since` finds
where a time window starts (to within a second).

A cursor is the offset reached in each allocation's log, encoded as URL-safe base64 of compact JSON; it is checked
like any other input before it is used.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from rhone_local.domain.errors import DomainError

MAX_RESPONSE_BYTES = 256 * 1024
DEFAULT_TAIL_BYTES = 64 * 1024
ALLOCATION_ID = re.compile(r"^alloc_[0-9a-z]{1,40}$")


def index_path(log: Path) -> Path:
    return log.with_name(log.name + ".idx")


def note_checkpoint(log: Path, now: float | None = None) -> None:
    """Append `(now, size)` to the log's index when the log grew since the last checkpoint."""
    try:
        size = log.stat().st_size
    except FileNotFoundError:
        return
    index = index_path(log)
    last = _checkpoints(index)[-1:] or [(0.0, -1)]
    if size != last[0][1]:
        with index.open("a") as handle:
            handle.write(f"{now if now is not None else time.time():.3f} {size}\n")


def _checkpoints(index: Path) -> list[tuple[float, int]]:
    try:
        text = index.read_text()
    except FileNotFoundError:
        return []
    points = []
    for line in text.splitlines():
        stamp, _, size = line.partition(" ")
        try:
            points.append((float(stamp), int(size)))
        except ValueError:
            continue  # a line torn by a crash
    return points


def offset_since(log: Path, cutoff: float) -> int:
    """Where output written at or after `cutoff` (unix seconds) starts: the size at the last checkpoint before it."""
    offset = 0
    for stamp, size in _checkpoints(index_path(log)):
        if stamp >= cutoff:
            break
        offset = size
    return offset


def tail_offset(log: Path, tail_bytes: int = DEFAULT_TAIL_BYTES) -> int:
    """The start of the last `tail_bytes` of the log, moved to a line start."""
    try:
        size = log.stat().st_size
    except FileNotFoundError:
        return 0
    if size <= tail_bytes:
        return 0
    with log.open("rb") as handle:
        handle.seek(size - tail_bytes)
        chunk = handle.read(tail_bytes)
    newline = chunk.find(b"\n")
    return size - tail_bytes + (newline + 1 if newline >= 0 else 0)


def read_lines(log: Path, offset: int, budget: int) -> tuple[list[str], int, bool]:
    """Complete lines from `offset`, at most `budget` bytes of them: (lines, the offset after the last one, whether
    the budget cut the read short). A partial last line waits for its newline (unless it alone exceeds the budget,
    then it is handed over in pieces)."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read(budget)
            limited = len(chunk) == budget and bool(handle.read(1))
    except FileNotFoundError:
        return [], offset, False
    end = chunk.rfind(b"\n")
    if end < 0:
        if not limited or not chunk:
            return [], offset, limited
        end = len(chunk) - 1
    data = chunk[: end + 1]
    return data.decode("utf-8", errors="replace").splitlines(), offset + len(data), limited


def size_of(log: Path) -> int:
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


def encode_cursor(offsets: dict[str, int]) -> str:
    raw = json.dumps(offsets, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, int]:
    # 409 like the other refusals beyond the schema: a cursor is opaque, its checks cannot be published in it.
    invalid = DomainError("invalid_cursor", "the logs cursor is not one this server issued; start without it", 409)
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise invalid from None
    if not isinstance(data, dict) or len(data) > 1000:
        raise invalid
    for key, value in data.items():
        if not ALLOCATION_ID.match(key) or type(value) is not int or value < 0:
            raise invalid
    return data


def iso_at(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
