"""Operations: follow one a request started, wait for it by long-polling its durable state, and turn its end into a
verdict.

Waiting never sleeps in a loop: each request asks the server to hold the answer until the operation's version
moves past the one we saw (`wait`, `after_version`), so a state change reaches us within milliseconds and an idle
wait costs one request per `LONG_POLL_SECONDS`. The verdict — the exit code — comes only from the outcome and exit
category the server states (rhone_cli/outcomes.py).
"""

from __future__ import annotations

import time
from typing import Any

from rhone_cli import outcomes
from rhone_cli.errors import ExitCode, Interrupted, RhoneError
from rhone_cli.invocation import Invocation

LONG_POLL_SECONDS = 25.0


def resume_hint(op_id: str) -> str:
    return f"rhone op wait {op_id}"


def announce(inv: Invocation, op: dict[str, Any]) -> None:
    """The operation id goes out first, before any waiting, so CI logs always hold the resume handle."""
    inv.operations.append(op["id"])
    inv.out.progress_event(
        "op_state",
        message=f"operation {op['id']} ({op['kind']}) {op['state']}; resume with `{resume_hint(op['id'])}`",
        op_id=op["id"],
        kind=op["kind"],
        state=op["state"],
        version=op["version"],
    )


def wait(inv: Invocation, op: dict[str, Any], *, timeout: float | None) -> dict[str, Any]:
    """Long-poll until `op` is terminal; WAIT_TIMEOUT (7) when `timeout` seconds pass, INTERRUPTED (130) on Ctrl-C
    or SIGTERM (a CI runner cancelling the job) — the operation continues and the error names its resume command.
    Any other failure while waiting (the API went away: exit 8) names the operation too, so a script can resume.
    Each stage the operation records is shown as it happens (rhone_cli/progress.py)."""
    from rhone_cli import progress

    display = progress.for_operation(inv.out, op)
    try:
        return _wait(inv, op, timeout, display)
    except (Interrupted, KeyboardInterrupt):
        raise RhoneError(
            f"interrupted; operation {op['id']} continues on the server",
            code="interrupted",
            exit_code=ExitCode.INTERRUPTED,
            operation_id=op["id"],
            hint=f"resume with `{resume_hint(op['id'])}`",
        ) from None
    finally:
        display.close()


def _wait(inv: Invocation, op: dict[str, Any], timeout: float | None, display: Any) -> dict[str, Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    # A blocked operation is parked, not finished: nothing moves until a person approves, so waiting on it would spin.
    # It is a verdict like an end.
    while outcomes.outcome(op) == outcomes.RUNNING:
        remaining = LONG_POLL_SECONDS if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            raise RhoneError(
                f"stopped waiting after {timeout:g}s; operation {op['id']} is still {op['state']} on the server",
                code="wait_timeout",
                exit_code=ExitCode.WAIT_TIMEOUT,
                operation_id=op["id"],
                retryable=True,
                hint=f"resume with `{resume_hint(op['id'])}` (the --wait-timeout budget fired, not a server deadline)",
            )
        previous, op = op, _next_version(inv, op, min(LONG_POLL_SECONDS, max(remaining, 0.05)))
        if op["version"] != previous["version"]:
            inv.out.progress_event(
                "op_state", op_id=op["id"], kind=op["kind"], state=op["state"], version=op["version"]
            )
            display.update(op)
    return op


def _next_version(inv: Invocation, op: dict[str, Any], poll: float) -> dict[str, Any]:
    """The operation once its version moves past `op`'s (or as it is after `poll` seconds)."""
    try:
        return inv.api().operation_after(
            op["id"], op["version"], wait=poll, timeout=poll + inv.env.options.request_timeout
        )
    except RhoneError as error:
        if error.operation_id is None:
            error.operation_id = op["id"]
            error.hint = f"{error.hint + '; ' if error.hint else ''}then resume with `{resume_hint(op['id'])}`"
        raise


def verdict(op: dict[str, Any]) -> RhoneError | None:
    """None for success; otherwise the error that carries the exit code of the operation's exit category."""
    result = outcomes.outcome(op)
    if result == outcomes.SUCCEEDED:
        return None
    error = op.get("error") or {}
    if result == outcomes.BLOCKED:
        return RhoneError(
            error.get("message") or f"operation {op['id']} is blocked",
            code=error.get("code", "blocked"),
            exit_code=outcomes.exit_code(op),
            operation_id=op["id"],
            request_id=op.get("request_id"),
        )
    return RhoneError(
        f"operation {op['id']} ({op['kind']}) {op['state']}: {error.get('message') or 'no reason recorded'}",
        code=error.get("code") or "operation_failed",
        exit_code=outcomes.exit_code(op),
        operation_id=op["id"],
        request_id=op.get("request_id"),
        hint=f"details: `rhone op show {op['id']}`",
    )


def follow(inv: Invocation, op: dict[str, Any], *, no_wait: bool, timeout: float | None) -> dict[str, Any]:
    """An operation a request just started: announce it; unless `no_wait`, wait for it and raise on a verdict other
    than success."""
    announce(inv, op)
    if no_wait:
        return op
    op = wait(inv, op, timeout=timeout)
    failure = verdict(op)
    if failure is not None:
        raise failure
    return op
