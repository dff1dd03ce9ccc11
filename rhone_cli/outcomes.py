"""What an operation document says about its end: its outcome and, when it did not succeed, the exit category.

The server decides both (docs/cli-contract.md, "Operations state their outcome"): `outcome` is `running`,
`succeeded`, `failed` or `blocked`, and a failed or blocked operation's `error.exit_category` names the exit code. The
CLI keeps no copy of any operation kind's states or of which error codes are gates: a new kind or a new gate on the
server needs no change here.

Standard library only: the progress display reads outcomes too.
"""

from __future__ import annotations

from typing import Any

from rhone_cli.errors import CODE_EXIT_CODES, ExitCode

RUNNING, SUCCEEDED, FAILED, BLOCKED = "running", "succeeded", "failed", "blocked"
EXIT_CATEGORIES: dict[str, int] = {
    "failure": ExitCode.FAILED,
    "usage": ExitCode.USAGE,
    "auth": ExitCode.AUTH,
    "not_found": ExitCode.NOT_FOUND,
    "conflict": ExitCode.CONFLICT,
    "gate": ExitCode.BLOCKED,
}


def outcome(op: dict[str, Any]) -> str:
    """`running`, `succeeded`, `failed` or `blocked` (parked until a person acts: waiting on it would spin)."""
    if "outcome" in op:
        return op["outcome"]
    return _outcome_before_the_contract(op)[0]


def exit_code(op: dict[str, Any]) -> int:
    """The exit code of an operation that did not succeed, from its error's exit category (1 when none is given)."""
    if "outcome" not in op:
        return EXIT_CATEGORIES.get(_outcome_before_the_contract(op)[1] or "", ExitCode.FAILED)
    return EXIT_CATEGORIES.get((op.get("error") or {}).get("exit_category") or "", ExitCode.FAILED)


# REMOVE with the last server that predates the outcome contract (Rhone Local before `outcome` was added to
# operation documents): this derives outcome and exit category from the older fields, exactly as the CLI used to.
_SUCCESS_STATES = frozenset({"succeeded", "preview_ready", "healthy", "bound", "unbound", "scaled", "eligible"})
_CATEGORIES = {int(code): name for name, code in EXIT_CATEGORIES.items()}


def _outcome_before_the_contract(op: dict[str, Any]) -> tuple[str, str | None]:
    """(outcome, exit category) of an operation document without `outcome`."""
    state = op["state"]
    if state == "blocked":
        return BLOCKED, "gate"
    if state in _SUCCESS_STATES or (op["kind"] == "rollback" and state == "rolled_back"):
        return SUCCEEDED, None
    if not op.get("terminal"):
        return RUNNING, None
    code = (op.get("error") or {}).get("code") or ""
    return FAILED, _CATEGORIES[CODE_EXIT_CODES.get(code, ExitCode.FAILED)]
