"""Domain errors: a stable code, an HTTP status, a message. The API turns them into uniform error bodies."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any


class NodeStopping(Exception):
    """This node is stopping: the stage that met it ends without a verdict and resumes after the next start (a
    shutdown is not a reason to fail a deployment or a promotion)."""


@dataclass
class DomainError(Exception):
    code: str
    message: str
    status: int = 400
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)


class StageFailed(Exception):
    """A stage of an operation failed for a stated reason: the operation records `code`, `message` and `evidence`
    and ends (or parks) by its kind's machine (docs/state-machines.md). Raised by stage handlers and by the
    request-time checks they share with the API, which turns it into a refusal."""

    def __init__(self, code: str, message: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.evidence = code, message, evidence or {}


def not_found(kind: str, ref: str) -> DomainError:
    return DomainError("not_found", f"{kind} {ref!r} not found", 404, {"kind": kind, "ref": ref})


def conflict(code: str, message: str, *, hint: str | None = None, **details: Any) -> DomainError:
    """A 409. `hint`, when given, is what to do next: it travels in `details.hint` (clients show it as their hint)."""
    return DomainError(code, message, 409, {**details, **({"hint": hint} if hint else {})})


def forbidden(code: str, message: str, **details: Any) -> DomainError:
    return DomainError(code, message, 403, details)


# ENOSPC: the file system is full; EDQUOT: the user's quota on it is. SQLite says SQLITE_FULL (13) for either.
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
        return True
    return getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL


def disk_full(where: Any) -> DomainError:
    """What a full disk means to the caller: which directory could not be written, and that space must be freed."""
    return DomainError(
        "disk_full",
        f"the disk is full: no space left on the device holding {where}; free space there, then retry",
        507,
        {"path": str(where)},
    )
