"""The operation kinds' registries (rhone_local/operations/) against their state machines (domain/operations.py):
every state a worker may find an operation in has exactly one handler, and no handler exists for a state nothing
may leave (terminal) or that waits for a person (parked)."""

from __future__ import annotations

from typing import Any

from rhone_local.domain.operations import MACHINES, PARKED_STATES
from rhone_local.operations.kinds import Advance
from rhone_local.operations.registry import registry


class Anything:
    """A stand-in for every injected stage implementation: each method it is asked for exists."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: ({}, None)


def test_every_runnable_state_of_every_kind_has_a_handler_and_no_other_state_has_one() -> None:
    kinds = registry(None, pipeline=Anything(), promotions=Anything(), topology=Anything())  # type: ignore[arg-type]
    assert set(kinds) == set(MACHINES)
    for name, kind in kinds.items():
        machine = MACHINES[name]
        runnable = {s for s in machine.states if s not in machine.terminal and s not in PARKED_STATES}
        assert set(kind.handlers) == runnable, name
        assert kind.machine is machine


def test_a_kind_without_its_implementation_is_absent() -> None:
    """Tests that wire no pipeline get the tenancy kinds only: a deploy then fails (no handler), never half-runs."""
    assert set(registry(None)) == {"project.create", "app.create", "environment.create"}  # type: ignore[arg-type]


def test_a_pass_through_stage_records_the_next_state_of_the_happy_path() -> None:
    kinds = registry(None, topology=Anything())  # type: ignore[arg-type]
    assert kinds["scale"].handlers["requested"]({"kind": "scale", "state": "requested"}) == Advance("gate_check")
    advance = kinds["scale"].handlers["gate_check"]({"kind": "scale", "state": "gate_check"})
    assert (advance.state, advance.evidence, advance.effect) == ("scaling", {}, None)
