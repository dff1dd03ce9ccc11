"""The shape of every operation kind: its state machine (domain/operations.py) and an explicit registry
`{state: handler}`. A handler performs one stage and says what to record next; the one generic driver (workers.py)
leases the operation, runs the handler, and records the result with a compare-and-swap — the stage's writes
(`Advance.effect`) commit in the same transaction as the next state, so a crash leaves both or neither.

A handler raises `StageFailed` to fail the operation: the driver records the kind's failure state, runs the kind's
`on_failure` in that same transaction (what the failure means for its object), then `after_failure`.
docs/state-machines.md lists every kind's states and transitions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rhone_local.domain.errors import conflict
from rhone_local.domain.operations import MACHINES, Machine
from rhone_local.store import Store, Tx

Effect = Callable[[Tx], dict[str, Any] | None]
# Operations that change an environment's allocations: one at a time per environment.
ENVIRONMENT_CHANGES = ("scale", "promote", "rollback", "config.update")


@dataclass(frozen=True)
class Advance:
    """What a stage did: the state to record next, its evidence (and error, for a failure the kind records as an
    ordinary outcome), and the writes to commit with it (`effect` may return more evidence)."""

    state: str
    evidence: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    effect: Effect | None = None


Handler = Callable[[dict[str, Any]], Advance]


@dataclass(frozen=True)
class Kind:
    name: str
    handlers: Mapping[str, Handler]
    on_failure: Callable[[dict[str, Any], Any, Tx], None] | None = None  # in the failure's transaction
    after_failure: Callable[[dict[str, Any]], None] | None = None  # once the failure is recorded

    @property
    def machine(self) -> Machine:
        return MACHINES[self.name]


def onward(kind: str) -> Handler:
    """A stage with no effect of its own: it records the next state of the kind's happy path."""
    machine = MACHINES[kind]

    def handler(op: dict[str, Any]) -> Advance:
        return Advance(machine.next_state(op["state"]))  # type: ignore[arg-type]

    return handler


def staged(kind: str, stage: Callable[[dict[str, Any]], tuple[dict[str, Any], Callable[[Tx], None] | None]]) -> Handler:
    """A stage that returns its evidence and the writes to commit with the next state of the happy path."""
    machine = MACHINES[kind]

    def handler(op: dict[str, Any]) -> Advance:
        evidence, effect = stage(op)
        return Advance(machine.next_state(op["state"]), evidence, effect=effect)  # type: ignore[arg-type]

    return handler


def refuse_while_changing(
    store: Store, c: Tx, environment_id: str, kinds: tuple[str, ...], *, subject: str, retry: str, exclude: str = ""
) -> None:
    """Refuse (409 `environment_busy`) while an operation of `kinds` other than `exclude` is live on the environment:
    read in the request's write transaction, so two racing requests cannot both pass."""
    busy = store.live_operations(c, environment_id, kinds, exclude=exclude)
    if busy:
        raise conflict(
            "environment_busy",
            f"{busy[0]['kind']} {busy[0]['id']} is changing {subject}; wait for it (`rhone op wait {busy[0]['id']}`) "
            f"and {retry} again",
            operation_id=busy[0]["id"],
        )
