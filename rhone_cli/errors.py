"""Typed errors and the exit-code contract.

Every failure a command can report is a `RhoneError` carrying a stable machine `code`, a human message and the
process exit code. The output module renders them (stderr text, or a JSON error document with `--json`); nothing
else decides exit codes. This module is imported on every start-up path, so it uses the standard library only.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    CONFLICT = 5
    BLOCKED = 6
    WAIT_TIMEOUT = 7
    UNREACHABLE = 8
    INTERRUPTED = 130


# The published table (README and `rhone help exit-codes` render this; a test keeps them in step).
EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success: the command, or the operation it drove, reached its success state",
    ExitCode.FAILED: "the operation failed (its outcome is failed), or an unexpected error",
    ExitCode.USAGE: "usage or configuration error: bad flags, invalid rhone.toml, input needed but prompting is off",
    ExitCode.AUTH: "not authenticated or not allowed: no token, 401, 403",
    ExitCode.NOT_FOUND: "not found",
    ExitCode.CONFLICT: "conflict: route epoch moved, digest mismatch, idempotency key reused with another request, "
    "state conflict",
    ExitCode.BLOCKED: "blocked at a gate: approval needed, binding missing, scale gate, environment frozen",
    ExitCode.WAIT_TIMEOUT: "stopped waiting (timeout): the operation is still running; the resume command was printed",
    ExitCode.UNREACHABLE: "API unreachable, or transient server errors persisted after retries",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C): the server-side operation continues; the resume command was printed",
}


class RhoneError(Exception):
    """A failure with everything a user or a script needs to act on it."""

    # A plain class, not a dataclass: this module is on every start-up path, and `dataclasses` imports `inspect` (with
    # ast, dis and tokenize), a good part of the start-up of the commands answered without the command tree.
    def __init__(
        self,
        message: str,
        code: str = "error",
        exit_code: int = ExitCode.FAILED,
        request_id: str | None = None,
        operation_id: str | None = None,
        retryable: bool = False,
        hint: str | None = None,
        details: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = exit_code
        self.request_id = request_id
        self.operation_id = operation_id
        self.retryable = retryable
        self.hint = hint
        self.details = details

    def __repr__(self) -> str:
        return f"RhoneError({self.message!r}, code={self.code!r}, exit_code={int(self.exit_code)})"

    def __str__(self) -> str:
        return self.message

    def to_document(self) -> dict:
        """The `--json` error document: one stable shape for every failure."""
        doc = {
            "code": self.code,
            "message": self.message,
            "request_id": self.request_id,
            "operation_id": self.operation_id,
            "retryable": self.retryable,
            "hint": self.hint,
            "exit_code": int(self.exit_code),
        }
        if self.details:
            doc["details"] = self.details
        return {"error": doc}


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM, raised in the main thread for the whole run (rhone_cli/main.py installs the handlers).

    Not a KeyboardInterrupt on purpose: typer turns those into a silent exit 130, and rhone says what an
    interruption left behind (an operation that continues, with its resume command, or none)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def usage_error(message: str, *, hint: str | None = None, code: str = "usage_error") -> RhoneError:
    return RhoneError(message, code=code, exit_code=ExitCode.USAGE, hint=hint)


def input_required(flag: str, what: str) -> RhoneError:
    """Raised instead of prompting when prompting is off (CI, no TTY, --no-input)."""
    return RhoneError(
        f"{what} is required and prompting is disabled; pass {flag}",
        code="input_required",
        exit_code=ExitCode.USAGE,
        hint=f"pass {flag}, or run in an interactive terminal without --no-input",
    )


# HTTP status -> (exit code, fallback error code) for errors whose body we could not interpret.
STATUS_EXIT_CODES: dict[int, tuple[int, str]] = {
    400: (ExitCode.USAGE, "bad_request"),
    401: (ExitCode.AUTH, "unauthenticated"),
    403: (ExitCode.AUTH, "forbidden"),
    404: (ExitCode.NOT_FOUND, "not_found"),
    409: (ExitCode.CONFLICT, "conflict"),
    412: (ExitCode.CONFLICT, "precondition_failed"),
    413: (ExitCode.USAGE, "too_large"),
    422: (ExitCode.USAGE, "invalid_request"),
    423: (ExitCode.BLOCKED, "blocked"),
    429: (ExitCode.UNREACHABLE, "rate_limited"),
    507: (ExitCode.FAILED, "disk_full"),  # not transient: someone must free space first
}


# Error codes whose exit code does not depend on the HTTP status (or on the fact that an operation failed):
# a gate that needs a person or a binding is 6, a lost compare-and-swap or a digest that does not match is 5.
CODE_EXIT_CODES: dict[str, int] = {
    **dict.fromkeys(
        (
            "approval_required",
            "environment_frozen",
            "binding_missing",
            "setting_missing",
            "scale_gate_failed",
            "gate_blocked",
            "cold_deploy_needs_approval",
            "migration_needs_approval",
            "rollback_unsafe_db",
            "ack_cold_required",
            "runtime_services_missing",
            "runtime_service_down",
            "residency_violation",
            "data_topology_not_ready",
            "secret_missing",
            "artifact_absent",
        ),
        ExitCode.BLOCKED,
    ),
    **dict.fromkeys(
        (
            "route_epoch_conflict",
            "digest_mismatch",
            "idempotency_key_reused",
            "shared_mutable_resource",
            "binding_exists",
            "rollback_target_not_previous_owner",
            "last_owner_token",
            "route_key_taken",
            "app_name_taken",
        ),
        ExitCode.CONFLICT,
    ),
}


def exit_code_for_status(status: int) -> tuple[int, str]:
    if status in STATUS_EXIT_CODES:
        return STATUS_EXIT_CODES[status]
    if status >= 500:
        return ExitCode.UNREACHABLE, "server_error"
    return ExitCode.FAILED, "http_error"
