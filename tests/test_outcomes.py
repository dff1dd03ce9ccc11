"""The verdict of an operation comes from the outcome and exit category the server states, never from a copy of the
server's states or gate codes (docs/cli-contract.md, "Operations state their outcome").

A server that predates the two fields is judged by one fallback (`rhone_cli/outcomes.py`), exactly as before."""

from __future__ import annotations

import httpx
import pytest

from rhone_cli import outcomes
from rhone_cli.errors import ExitCode
from tests.conftest import RecordingTransport

OP = "op_1a21be1bc46141764b9aa98"
ENVIRON = {"RHONE_API_URL": "http://rhone.test", "RHONE_TOKEN": "rht_outcome_0a1b2c3d", "RHONE_PROFILE": "default"}


def operation(state: str, kind: str = "scale", *, terminal: bool = True, code: str | None = None, **extra) -> dict:
    error = {"code": code, "message": f"{code} happened"} if code else None
    return {"id": OP, "kind": kind, "state": state, "version": 3, "terminal": terminal, "error": error, "stages": []}


def stated(state: str, outcome: str, category: str | None = None, kind: str = "scale") -> dict:
    op = operation(state, kind, terminal=outcome != "running", code="some_code" if category else None)
    op["outcome"] = outcome
    if category:
        op["error"]["exit_category"] = category
    return op


@pytest.mark.parametrize(
    ("op", "outcome", "exit_code"),
    [
        # The server's word wins over anything the state would suggest.
        (stated("rolled_back", "failed", "failure", kind="promote"), "failed", ExitCode.FAILED),
        (stated("preview_ready", "failed", "conflict", kind="deploy"), "failed", ExitCode.CONFLICT),
        (stated("a_state_no_cli_knows", "succeeded", kind="a.new.kind"), "succeeded", None),
        (stated("queued", "blocked", "gate"), "blocked", ExitCode.BLOCKED),
        (stated("failed", "failed", "usage"), "failed", ExitCode.USAGE),
        (stated("failed", "failed", "auth"), "failed", ExitCode.AUTH),
        (stated("failed", "failed", "not_found"), "failed", ExitCode.NOT_FOUND),
        (stated("failed", "failed", "a_category_from_the_future"), "failed", ExitCode.FAILED),
        (stated("blocked", "running"), "running", None),
    ],
)
def test_outcome_and_exit_code_come_from_the_server(op, outcome, exit_code):
    assert outcomes.outcome(op) == outcome
    if exit_code is not None:
        assert outcomes.exit_code(op) == exit_code


@pytest.mark.parametrize(
    ("op", "outcome", "exit_code"),
    [
        (operation("succeeded", "project.create"), "succeeded", None),
        (operation("rolled_back", "rollback"), "succeeded", None),
        (operation("rolled_back", "promote"), "failed", ExitCode.FAILED),
        (operation("failed", "promote", code="route_epoch_conflict"), "failed", ExitCode.CONFLICT),
        (operation("failed", "promote", code="environment_frozen"), "failed", ExitCode.BLOCKED),
        (operation("disabled", "region.enable", code="residency_violation"), "failed", ExitCode.BLOCKED),
        (operation("failed", "deploy", code="build_failed"), "failed", ExitCode.FAILED),
        (operation("blocked", "deploy", terminal=False, code="migration_needs_approval"), "blocked", ExitCode.BLOCKED),
        (operation("building", "deploy", terminal=False), "running", None),
    ],
)
def test_documents_without_the_fields_are_judged_as_before(op, outcome, exit_code):
    assert outcomes.outcome(op) == outcome
    if exit_code is not None:
        assert outcomes.exit_code(op) == exit_code


def test_op_wait_waits_while_running_and_exits_with_the_stated_category(rhone):
    """The state says nothing the CLI could know; it waits through `running` and exits 5 because the server says
    `conflict` — one poll per answer, and no other request."""
    answers = iter(
        [
            stated("first_stage", "running"),
            stated("second_stage", "running"),
            {**stated("the_end", "failed", "conflict"), "version": 9},
        ]
    )
    transport = RecordingTransport(httpx.MockTransport(lambda request: httpx.Response(200, json=next(answers))))

    result = rhone("op", "wait", OP, "--json", environ=ENVIRON, transport=transport)

    assert result.exit_code == ExitCode.CONFLICT, result.stderr
    assert result.json()["error"]["code"] == "some_code"
    assert [r.url.path for r in transport.requests] == [f"/v1/operations/{OP}"] * 3
