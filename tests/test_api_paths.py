"""Ids and names never reach a URL unchecked: every one is validated against its format before any request, and
every path segment is percent-escaped where paths are built (`rhone_cli/api.py`, with the formats of
`rhone_cli/api_paths.py`).

The attacks are the ones an outside pass used: a "deployment id" that walks up to another endpoint and ends the path
with `?`, and an "operation id" that walks over to the members list. The transport records requests: none is sent.
"""

from __future__ import annotations

import httpx
import pytest
import respx

from rhone_cli import api_paths
from rhone_cli.errors import ExitCode, RhoneError
from tests.conftest import RecordingTransport

API = "http://rhone.test"
ENVIRON = {"RHONE_API_URL": API, "RHONE_TOKEN": "rht_paths_secret_0a1b2c3d", "RHONE_PROFILE": "default"}
UNFREEZE = "../workspaces/local/projects/shop/apps/web/environments/production/unfreeze?"
MEMBERS = "../workspaces/local/members"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("promote", UNFREEZE), "deployment id: expected dep_"),
        (("op", "show", MEMBERS), "operation id: expected op_"),
        (("op", "wait", MEMBERS), "operation id: expected op_"),
        (("deploy", "show", "dep_1/../../workspaces"), "deployment id: expected dep_"),
        (("deploy", "logs", "dep_1?x=1"), "deployment id: expected dep_"),
        (("deploy", "approve", ".."), "deployment id: expected dep_"),
        (("rollback", "--to", UNFREEZE, "-w", "local", "-p", "shop", "-a", "web"), "deployment id: expected dep_"),
        (("env", "unfreeze", "production/../../x", "-w", "local", "-p", "shop", "-a", "web"), "environment name or id"),
        (("env", "show", "..", "-w", "local", "-p", "shop", "-a", "web"), "environment name or id"),
        (("route", "history", "production?", "-w", "local", "-p", "shop", "-a", "web"), "environment name or id"),
        (("app", "show", "web/../../x", "-w", "local", "-p", "shop"), "app name or id"),
        (("project", "show", "%2e%2e", "-w", "local"), "project name or id"),
        (("env", "ls", "-w", "local/..", "-p", "shop", "-a", "web"), "workspace name or id"),
        (("region", "show", "local-1/../../workspaces"), "region name or id"),
        (("env", "unbind", "production", "db/../x", "-w", "local", "-p", "shop", "-a", "web"), "provider binding name"),
        (
            ("region", "enable", "../x", "--env", "production", "-w", "local", "-p", "shop", "-a", "web"),
            "region name or id",
        ),
    ],
)
def test_malformed_ids_exit_2_naming_the_format_and_send_nothing(rhone, argv, expected):
    transport = RecordingTransport.refusing()
    result = rhone(*argv, environ=ENVIRON, transport=transport)

    assert result.exit_code == ExitCode.USAGE, (result.stdout, result.stderr)
    assert expected in result.stderr
    assert "hint: copy it from `rhone" in result.stderr
    assert transport.requests == []


def test_json_error_document_names_the_kind_and_the_value(rhone):
    transport = RecordingTransport.refusing()
    result = rhone("promote", UNFREEZE, "--json", environ=ENVIRON, transport=transport)

    assert result.exit_code == ExitCode.USAGE
    error = result.json()["error"]
    assert error["code"] == "invalid_id"
    assert error["details"] == {"kind": "deployment", "value": UNFREEZE}
    assert transport.requests == []


def test_well_formed_ids_and_names_do_reach_the_api(rhone):
    transport = RecordingTransport(httpx.MockTransport(lambda request: httpx.Response(404)))
    result = rhone("op", "show", "op_1a21be1bc46141764b9aa98", environ=ENVIRON, transport=transport)

    assert result.exit_code == ExitCode.NOT_FOUND
    assert [str(r.url) for r in transport.requests] == [f"{API}/v1/operations/op_1a21be1bc46141764b9aa98"]


def test_an_operation_id_from_the_server_is_checked_too():
    """A server (or a proxy) answering with a path instead of an id cannot steer the client's next request."""
    from rhone_cli.environment import Environment
    from rhone_cli.invocation import Invocation
    from rhone_cli.services import operations

    env = Environment(environ=dict(ENVIRON))
    inv = Invocation(env)
    with respx.mock(base_url=API, assert_all_called=False) as mock:
        members = mock.get("/v1/workspaces/local/members").mock(return_value=httpx.Response(200, json={"items": []}))
        op = {"id": MEMBERS, "kind": "deploy", "state": "queued", "version": 1, "terminal": False, "outcome": "running"}
        with pytest.raises(RhoneError) as raised:
            operations.wait(inv, op, timeout=5)
    assert raised.value.code == "invalid_id"
    assert members.call_count == 0
    assert len(mock.calls) == 0


def test_segments_are_escaped_whole():
    from rhone_cli import api

    assert api.below("/v1/x", "a/b?c#d e", "%2F") == "/v1/x/a%2Fb%3Fc%23d%20e/%252F"
    assert api.blob_path("sha256:" + "0" * 64) == "/v1/blobs/sha256%3A" + "0" * 64


@pytest.mark.parametrize(
    "path",
    [
        "/v1/deployments/../workspaces/local/members",
        "/v1/deployments/./x",
        "/v1/operations/%2e%2e/x",
        "/v1/operations/%2E",
        "/v1/x?y=1",
        "/v1/x#frag",
        "v1/x",
        "/v1//x",
        "/v1/x y",
        "/v1/x\\..\\y",
        "//evil.example/v1/x",
    ],
)
def test_the_client_refuses_any_path_that_was_not_built_clean(path):
    from rhone_cli.http import ApiClient

    transport = RecordingTransport.refusing()
    with ApiClient(API, "t", transport=transport) as client, pytest.raises(RhoneError) as raised:
        client.get(path)
    assert raised.value.code == "invalid_path"
    assert raised.value.exit_code == ExitCode.USAGE
    assert transport.requests == []


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("deployment", ["dep_1a21bf7bac50000e5b333bc", "dep_x"], ["dep_", "op_1a2", "dep_A1", "dep_1/..", "dep-1"]),
        ("operation", ["op_1a21be1bc46141764b9aa98"], ["op", "op_" + "a" * 65, "op_1?", " op_1"]),
    ],
)
def test_id_formats(kind, good, bad):
    for value in good:
        assert api_paths.checked_id(kind, value) == value
    for value in bad:
        with pytest.raises(RhoneError):
            api_paths.checked_id(kind, value)


def test_refs_accept_names_or_ids_of_their_kind_only():
    assert api_paths.checked_ref("app", "web") == "web"
    assert api_paths.checked_ref("app", "app_1a2b") == "app_1a2b"
    assert api_paths.checked_ref("environment", "production") == "production"
    for bad in ("prj_1a2b", "Web", "web-", "a--b", "1web", "x" * 41, "", "web/x", "..", "."):
        with pytest.raises(RhoneError):
            api_paths.checked_ref("app", bad)
