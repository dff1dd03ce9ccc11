"""The verdict of an operation comes from the outcome and exit category the server states, never from a copy of the
server's states or gate codes (docs/cli-contract.md, "Operations state their outcome")."""

from __future__ import annotations

import httpx
import pytest

from rhone_cli import outcomes
from rhone_cli.errors import ExitCode, RhoneError
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


WITHOUT_AN_OUTCOME = [operation("succeeded", "project.create"), {**stated("failed", "failed"), "outcome": "done"}]


@pytest.mark.parametrize("op", WITHOUT_AN_OUTCOME)
def test_a_document_that_states_no_outcome_is_a_bad_response_not_a_guess(op):
    with pytest.raises(RhoneError) as raised:
        outcomes.outcome(op)
    assert (raised.value.code, raised.value.exit_code) == ("bad_response", ExitCode.FAILED)


def test_op_wait_on_a_server_that_states_no_outcome_exits_1_after_one_request(rhone):
    transport = RecordingTransport(
        httpx.MockTransport(lambda request: httpx.Response(200, json=operation("building", "deploy", terminal=False)))
    )
    result = rhone("op", "wait", OP, "--json", environ=ENVIRON, transport=transport)
    assert result.exit_code == ExitCode.FAILED, result.stderr
    assert result.json()["error"]["code"] == "bad_response"
    assert [r.url.path for r in transport.requests] == [f"/v1/operations/{OP}"]


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
