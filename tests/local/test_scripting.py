"""Scripting: `--jq EXPR` and `rhone api [METHOD] PATH`, in process against the real API app on a loopback port.

`--jq` implies `--json`, prints each result on its own line (strings raw, like `jq -r`), is compiled before the
command runs (a syntax error is exit 2 and nothing happens), and sends failures to stderr. `rhone api` is authenticated
like every command, accepts only `/v1/…` paths and known methods (exit 2 otherwise, nothing sent).
"""

from __future__ import annotations

import json

import httpx
import pytest

from rhone_cli.errors import ExitCode
from tests.conftest import RecordingTransport

from .conftest import LocalEnv


@pytest.fixture
def environ(local: LocalEnv, live_url: str) -> dict[str, str]:
    return {"RHONE_API_URL": live_url, "RHONE_TOKEN": local.owner.token}


# -- --jq --------------------------------------------------------------------------------------------------------------
def test_jq_filters_the_json_result_strings_raw_one_per_line(rhone, local: LocalEnv, environ):
    for name in ("alpha", "beta"):
        local.create_project(name)
    names = rhone("project", "ls", "-w", "local", "--jq", ".[].name", environ=environ)
    assert names.exit_code == 0, names.stderr
    assert names.stdout == "beta\nalpha\n"  # newest first
    counted = rhone("project", "ls", "-w", "local", "--jq", "{count: length}", environ=environ)
    assert json.loads(counted.stdout) == {"count": 2}


def test_jq_syntax_error_is_exit_2_before_anything_happens(rhone, local: LocalEnv, environ):
    transport = RecordingTransport()
    snapshot = local.snapshot()
    result = rhone("project", "create", "shop", "-w", "local", "--jq", ".[", environ=environ, transport=transport)

    assert result.exit_code == ExitCode.USAGE
    assert result.stdout == ""
    assert "error: --jq '.[' is not a valid jq program" in result.stderr
    assert transport.requests == []
    assert local.snapshot() == snapshot


def test_jq_runtime_error_is_exit_2_on_stderr(rhone, local: LocalEnv, environ):
    result = rhone("project", "ls", "-w", "local", "--jq", ".name", environ=environ)
    assert result.exit_code == ExitCode.USAGE
    assert result.stdout == ""
    assert "failed on the result: Cannot index array with" in result.stderr


def test_with_jq_a_failure_goes_to_stderr_and_keeps_its_exit_code(rhone, environ):
    result = rhone("op", "show", "op_1a21be1bc46141764b9aa98", "--jq", ".id", environ=environ)
    assert result.exit_code == ExitCode.NOT_FOUND
    assert result.stdout == ""
    assert "error: operation 'op_1a21be1bc46141764b9aa98' not found" in result.stderr


# -- rhone api ---------------------------------------------------------------------------------------------------------
def test_api_get_prints_the_json_answer(rhone, environ):
    result = rhone("api", "/v1/workspaces", environ=environ)
    assert result.exit_code == 0, result.stderr
    assert [w["name"] for w in json.loads(result.stdout)["items"]] == ["local"]
    assert rhone("api", "GET", "/v1/workspaces", "--jq", ".items[0].name", environ=environ).stdout == "local\n"


def test_api_post_with_fields_is_an_idempotent_post(rhone, local: LocalEnv, environ):
    transport = RecordingTransport()
    result = rhone("api", "/v1/workspaces/local/projects", "-f", "name=shop", environ=environ, transport=transport)

    assert result.exit_code == 0, result.stderr
    op = json.loads(result.stdout)
    assert (op["kind"], op["state"]) == ("project.create", "queued")
    [request] = transport.requests
    assert request.method == "POST" and json.loads(request.content) == {"name": "shop"}
    assert request.headers["Idempotency-Key"]
    local.run_operations()
    assert local.store.project(local.workspace_id, "shop") is not None


def test_api_query_in_the_path_and_paginate(rhone, local: LocalEnv, environ):
    for name in ("p1", "p2", "p3"):
        local.create_project(name)
    one = rhone("api", "/v1/workspaces/local/projects?limit=1", environ=environ)
    assert len(json.loads(one.stdout)["items"]) == 1 and json.loads(one.stdout)["next_cursor"]
    transport = RecordingTransport()
    every = rhone(
        "api", "/v1/workspaces/local/projects", "-F", "limit=1", "--paginate", environ=environ, transport=transport
    )
    assert every.exit_code == 0, every.stderr
    document = json.loads(every.stdout)
    assert sorted(p["name"] for p in document["items"]) == ["p1", "p2", "p3"]
    assert document["next_cursor"] is None
    assert len(transport.requests) == 3


def test_api_errors_keep_the_exit_code_contract(rhone, environ):
    missing = rhone("api", "/v1/operations/op_1a21be1bc46141764b9aa98", environ=environ)
    assert missing.exit_code == ExitCode.NOT_FOUND
    anonymous = rhone("api", "/v1/workspaces", environ={**environ, "RHONE_TOKEN": "rht_not_a_real_token_0000"})
    assert anonymous.exit_code == ExitCode.AUTH


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("FETCH", "/v1/workspaces"), "'FETCH' is not an HTTP method"),
        (("TRACE", "/v1/workspaces"), "'TRACE' is not an HTTP method"),
        (("/health",), "'/health' is not an API path: rhone api sends requests to /v1/… only"),
        (("/v1/../health",), "no '.' or '..' segments"),
        (("/v1/workspaces/%2e%2e/x",), "no '.' or '..' segments"),
        (("https://elsewhere.example/v1/workspaces",), "is not an API path"),
        (("//elsewhere.example/v1/workspaces",), "is not an API path"),
        (("v1/workspaces",), "is not an API path"),
        (("/v1/workspaces", "-f", "novalue"), "expected key=value"),
        (("/v1/workspaces", "--paginate", "-X"), "No such option"),
        (("GET", "/v1/workspaces", "--input", "-"), "not JSON"),
        (("POST", "/v1/workspaces", "--paginate"), "--paginate follows next_cursor of GET lists only"),
    ],
)
def test_api_refuses_bad_methods_and_paths_without_sending(rhone, environ, argv, expected):
    transport = RecordingTransport()
    result = rhone("api", *argv, environ=environ, transport=transport, stdin="not json")
    assert result.exit_code == ExitCode.USAGE, result.stdout + result.stderr
    assert expected in result.stderr
    assert transport.requests == []


def test_api_escapes_what_it_sends(rhone, environ):
    transport = RecordingTransport(httpx.MockTransport(lambda request: httpx.Response(200, json={})))
    result = rhone("api", "/v1/workspaces/a b?x=1&y=2", environ=environ, transport=transport)
    assert result.exit_code == 0
    [request] = transport.requests
    assert request.url.raw_path == b"/v1/workspaces/a%20b?x=1&y=2"
