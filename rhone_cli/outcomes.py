"""What an operation document says about its end: its outcome and, when it did not succeed, the exit category.

The server decides both (docs/cli-contract.md, "Operations state their outcome"): `outcome` is `running`,
`succeeded`, `failed` or `blocked`, and a failed or blocked operation's `error.exit_category` names the exit code. The
CLI keeps no copy of any operation kind's states or of which error codes are gates: a new kind or a new gate on the
server needs no change here.

Standard library only: the progress display reads outcomes too.
"""

from __future__ import annotations

from typing import Any

from rhone_cli.errors import ExitCode, RhoneError

RUNNING, SUCCEEDED, FAILED, BLOCKED = "running", "succeeded", "failed", "blocked"
EXIT_CATEGORIES: dict[str, int] = {
    "failure": ExitCode.FAILED,
    "usage": ExitCode.USAGE,
    "auth": ExitCode.AUTH,
    "not_found": ExitCode.NOT_FOUND,
    "conflict": ExitCode.CONFLICT,
    "gate": ExitCode.BLOCKED,
}


OUTCOMES = frozenset({RUNNING, SUCCEEDED, FAILED, BLOCKED})


def outcome(op: dict[str, Any]) -> str:
    """`running`, `succeeded`, `failed` or `blocked` (parked until a person acts: waiting on it would spin)."""
    stated = op.get("outcome")
    if stated not in OUTCOMES:
        # Guessing from the state would be a copy of the server's rules, the very thing the contract removes.
        raise RhoneError(
            f"operation {op.get('id')}: the server did not state its outcome ({stated!r})",
            code="bad_response",
            exit_code=ExitCode.FAILED,
            hint="the server predates this rhone: upgrade it (for Rhone Local: `rhone local down`, then `up`)",
        )
    return stated


def exit_code(op: dict[str, Any]) -> int:
    """The exit code of an operation that did not succeed, from its error's exit category (1 when none is given)."""
    return EXIT_CATEGORIES.get((op.get("error") or {}).get("exit_category") or "", ExitCode.FAILED)
