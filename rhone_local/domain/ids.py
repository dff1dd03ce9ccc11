"""Prefixed, opaque, time-ordered identifiers (`ws_…`, `prj_…`, `op_…`).

The time prefix makes ids sort by creation, which gives list endpoints a stable cursor without another column.
"""

from __future__ import annotations

import re
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
    "device_code": "dc",
    "refresh_token": "rtk",
}


# Names (workspaces, projects, apps, environments, regions, bindings) as the API's models define them.
NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
NAME_MAX = 40
# Path parameters that name something: the kind of id they may hold, and whether a name is accepted too.
PATH_REFERENCES: dict[str, tuple[str | None, bool]] = {
    "ws": ("workspace", True),
    "prj": ("project", True),
    "app": ("app", True),
    "env": ("environment", True),
    "region": ("region", True),
    "name": (None, True),
    "deployment_id": ("deployment", False),
    "op_id": ("operation", False),
    "token_id": ("token", False),
}
_ID_BODY = re.compile(r"[0-9a-z]{1,64}")

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


def well_formed_reference(kind: str | None, value: str, *, names: bool) -> bool:
    """Whether `value` can name something: an id of `kind` (`op_…`), or, when `names`, a name. Anything else (a
    `/`, `..`, `?` smuggled into a path parameter) names nothing."""
    if names and len(value) <= NAME_MAX and NAME.fullmatch(value):
        return True
    if kind is None:
        return False
    prefix, _, body = value.partition("_")
    return prefix == PREFIXES[kind] and _ID_BODY.fullmatch(body) is not None
