"""The operation outcome contract: every operation document says `outcome`, and a failed or blocked one says its
error's `exit_category`, from one table on the server (rhone_local/domain/outcomes.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rhone_local.domain.operations import MACHINES, PARKED_STATES
from rhone_local.domain.outcomes import EXIT_CATEGORIES, EXIT_CODES, exit_category, outcome

from .conftest import BASE, LocalEnv, queued_deployments

ROOT = Path(__file__).resolve().parents[2] / "rhone_local"
# Calls whose argument at this position is an error code.
CODE_CALLS = {"StageFailed": 0, "DomainError": 0, "conflict": 0, "forbidden": 0, "deny": 5, "GateFailure": 0}


def raised_codes() -> dict[str, str]:
    """Every error code written as a literal where rhone_local raises one (code -> first place)."""
    codes: dict[str, str] = {}
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in CODE_CALLS:
                continue
            index = CODE_CALLS[name]
            argument = node.args[index] if len(node.args) > index else None
            argument = argument or next((k.value for k in node.keywords if k.arg == "code"), None)
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                codes.setdefault(argument.value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return codes


def test_every_error_code_rhone_local_raises_has_an_exit_category() -> None:
    codes = raised_codes()
    assert len(codes) > 60  # the scan finds them (a scan that finds nothing proves nothing)
    unmapped = {code: where for code, where in codes.items() if code not in EXIT_CATEGORIES}
    assert unmapped == {}
    assert set(EXIT_CATEGORIES.values()) == set(EXIT_CODES)


@pytest.mark.parametrize("kind", sorted(MACHINES))
def test_each_kind_succeeds_only_in_its_own_success_state(kind: str) -> None:
    machine = MACHINES[kind]
    assert outcome(kind, machine.success) == "succeeded"
    for state in machine.terminal - {machine.success}:
        assert outcome(kind, state) == "failed"
    for state in set(machine.states) - machine.terminal:
        assert outcome(kind, state) == ("blocked" if state in PARKED_STATES else "running")


def test_rolled_back_is_a_rollbacks_success_and_a_failure_of_nothing_else() -> None:
    assert outcome("rollback", "rolled_back") == "succeeded"
    assert outcome("promote", "rolled_back") == "failed"
    assert outcome("deploy", "blocked") == "blocked"
    assert exit_category("migration_needs_approval", parked=True) == "gate"
    assert exit_category("route_epoch_conflict") == "conflict"
    assert exit_category("never-heard-of-it") == "failure"


def _advance(local: LocalEnv, op_id: str, *states: str, error: dict | None = None) -> None:
    """Move an operation through `states` as a worker would record them (the last one with `error`)."""
    for index, state in enumerate(states):
        op = local.store.operation(op_id)
        last = index == len(states) - 1
        assert local.store.advance_operation(op, state, error=error if last else None) is not None


def _document(local: LocalEnv, op_id: str) -> dict:
    response = local.client.get(f"/v1/operations/{op_id}", headers=local.owner.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_operation_documents_carry_outcome_and_exit_category(local: LocalEnv) -> None:
    project = local.create_project("shop")
    local.create_app(project, "web")
    accepted = local.client.post(f"{BASE}/projects", json={"name": "twice"}, headers=local.owner.headers)
    racing = local.client.post(f"{BASE}/projects", json={"name": "twice"}, headers=local.owner.headers)
    assert accepted.status_code == racing.status_code == 202
    assert accepted.json()["outcome"] == "running" and accepted.json()["error"] is None
    local.run_operations()

    won, lost = _document(local, accepted.json()["id"]), _document(local, racing.json()["id"])
    assert (won["state"], won["outcome"], won["error"]) == ("succeeded", "succeeded", None)
    assert (lost["state"], lost["outcome"]) == ("failed", "failed")
    assert lost["error"]["code"] == "name_taken" and lost["error"]["exit_category"] == "conflict"

    blocked, failed, resumed = queued_deployments(local, f"{BASE}/projects/shop/apps/web", 3)
    ops = {d: local.store.deployment(d)["operation_id"] for d in (blocked, failed, resumed)}
    gate = {"code": "migration_needs_approval", "message": "approve it"}
    _advance(local, ops[blocked], "cloning", "building", "validating", "blocked", error=gate)
    _advance(local, ops[failed], "cloning", "failed", error={"code": "build_failed", "message": "exit 1"})
    _advance(local, ops[resumed], "cloning", "building", "validating", "blocked", error=gate)
    _advance(local, ops[resumed], "validating")  # an approval resumes it: running again, its old error kept

    doc = _document(local, ops[blocked])
    assert (doc["outcome"], doc["terminal"]) == ("blocked", False)
    assert doc["error"] == {**gate, "exit_category": "gate"}
    doc = _document(local, ops[failed])
    assert doc["outcome"] == "failed" and doc["error"]["exit_category"] == "failure"
    doc = _document(local, ops[resumed])
    assert doc["outcome"] == "running" and doc["error"] == {**gate, "exit_category": None}  # none while it runs
    # Lists carry the same documents.
    listed = local.client.get(f"{BASE}/operations", params={"kind": "deploy"}, headers=local.owner.headers).json()
    assert {op["id"]: op["outcome"] for op in listed["items"]} == {
        ops[blocked]: "blocked",
        ops[failed]: "failed",
        ops[resumed]: "running",
    }
