"""Prefixed, opaque, time-ordered identifiers (`ws_…`, `prj_…`, `op_…`).

The time prefix makes ids sort by creation, which gives list endpoints a stable cursor without another column.
"""

from __future__ import annotations

import secrets
import threading
import time

PREFIXES = {
    "workspace": "ws",
    "user": "usr",
    "project": "prj",
    "app": "app",
    "environment": "env",
    "operation": "op",
    "token": "tok",
    "runtime_identity": "rid",
    "region": "reg",
    "cell": "cell",
    "audit": "aud",
    "request": "req",
    "deployment": "dep",
    "allocation": "alloc",
    "provider_binding": "pb",
    "runtime_service_binding": "rsb",
}


_lock = threading.Lock()
_last = [0, 0]  # (milliseconds, sequence) of the previous id


def new_id(kind: str) -> str:
    """`<prefix>_` + milliseconds + a sequence number + randomness: strictly increasing within a process, so
    two ids made in the same millisecond (an app and its environments) still sort in creation order."""
    with _lock:
        millis = time.time_ns() // 1_000_000
        if millis <= _last[0]:
            millis, sequence = _last[0], _last[1] + 1
        else:
            sequence = 0
        _last[0], _last[1] = millis, sequence
    return f"{PREFIXES[kind]}_{millis:011x}{sequence:04x}{secrets.token_hex(4)}"
