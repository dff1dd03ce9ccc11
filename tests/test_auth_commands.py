"""`rhone login`, `rhone whoami` and `rhone logout` end to end (in-process), with respx as the API.

The `rhone` fixture keeps one temporary HOME per test, so a login in a test is seen by the whoami that follows it.
The keyring backend always fails here, so tokens land in the 0600 credentials file.
"""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import httpx
import pytest
import respx

from rhone_cli.http import ApiClient
from tests.conftest import assert_matches_schema

API = "http://rhone.test"
TOKEN = "rht_login_secret_7e3f0a9b21"
ENV_TOKEN = "rht_env_secret_5d8c2b4a10"
FLAG_TOKEN = "rht_flag_secret_1a2b3c4d5e"

IDENTITY = {
    "id": "usr_1",
    "kind": "user",
    "name": "ada",
    "workspaces": [{"name": "acme", "role": "owner"}],
}


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """ApiClient's default `sleep` is bound at definition time; swap it for a recorder so retries never wait."""
    recorded: list[float] = []
    monkeypatch.setitem(ApiClient.__init__.__kwdefaults__, "sleep", recorded.append)
    return recorded


@pytest.fixture
def credentials_path(base_environ: dict[str, str]) -> Path:
    return Path(base_environ["RHONE_CONFIG_DIR"]) / "credentials.toml"


@pytest.fixture
def api():
    with respx.mock(base_url=API, assert_all_called=False) as mock:
        yield mock


def whoami_route(api, *responses: httpx.Response):
    route = api.get("/v1/whoami")
    if len(responses) == 1:
        return route.mock(return_value=responses[0])
    return route.mock(side_effect=list(responses))


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def login(rhone, *extra: str, token: str = TOKEN):
    return rhone("login", "--api-url", API, "--with-token", *extra, stdin=token + "\n")


def assert_no_token(result, *tokens: str) -> None:
    for token in tokens or (TOKEN,):
        assert token not in result.stdout
        assert token not in result.stderr


# -- login -----------------------------------------------------------------------------------------------------------
def test_login_with_token_stores_in_file_and_reports_json(rhone, api, credentials_path):
    route = whoami_route(api, httpx.Response(200, json=IDENTITY))

    result = login(rhone, "--json")

    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert_matches_schema(doc, "login.schema.json")
    assert doc["credential_store"] == "file"
    assert doc["api_url"] == API
    assert doc["verified"] is True
    assert doc["identity"]["name"] == "ada"
    assert doc["credentials_file"] == str(credentials_path)

    assert route.call_count == 1
    assert route.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"

    assert credentials_path.exists()
    assert stat.S_IMODE(credentials_path.stat().st_mode) == 0o600
    assert TOKEN in credentials_path.read_text()

    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert str(credentials_path) in warnings[0]
    assert result.stderr.count("warning:") == 1
    assert_no_token(result)


def test_login_then_whoami_reads_the_file(rhone, api, credentials_path):
    route = whoami_route(api, httpx.Response(200, json=IDENTITY))
    assert login(rhone, "--json").exit_code == 0

    result = rhone("whoami", "--json")

    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert_matches_schema(doc, "auth-status.schema.json")
    assert doc["credential_source"] == "file"
    assert doc["credentials_file"] == str(credentials_path)
    assert doc["api_url"] == API
    assert doc["workspace"] == "acme"  # the single workspace of the identity became the profile default
    assert doc["identity"]["id"] == "usr_1"
    assert route.call_count == 2
    assert route.calls[-1].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert_no_token(result)


def test_login_human_output_never_shows_the_token(rhone, api):
    whoami_route(api, httpx.Response(200, json=IDENTITY))

    result = login(rhone)

    assert result.exit_code == 0, result.stderr
    assert "ada" in result.stdout
    assert_no_token(result)


def test_rhone_token_env_wins_over_stored_token(rhone, api):
    route = whoami_route(api, httpx.Response(200, json=IDENTITY))
    assert login(rhone).exit_code == 0

    result = rhone("whoami", "--json", environ={"RHONE_TOKEN": ENV_TOKEN})

    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert_matches_schema(doc, "auth-status.schema.json")
    assert doc["credential_source"] == "env"
    assert doc["credentials_file"] is None
    assert route.calls[-1].request.headers["Authorization"] == f"Bearer {ENV_TOKEN}"
    assert_no_token(result, TOKEN, ENV_TOKEN)


def test_token_flag_wins_over_env_and_stored_token(rhone, api):
    route = whoami_route(api, httpx.Response(200, json=IDENTITY))
    assert login(rhone).exit_code == 0

    result = rhone("whoami", "--json", "--token", FLAG_TOKEN, environ={"RHONE_TOKEN": ENV_TOKEN})

    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert_matches_schema(doc, "auth-status.schema.json")
    assert doc["credential_source"] == "flag"
    assert route.calls[-1].request.headers["Authorization"] == f"Bearer {FLAG_TOKEN}"
    assert_no_token(result, TOKEN, ENV_TOKEN, FLAG_TOKEN)


def test_login_rejected_with_401_stores_nothing(rhone, api, credentials_path, base_environ):
    route = whoami_route(
        api,
        httpx.Response(
            401, json={"error": {"code": "unauthenticated", "message": "invalid token", "request_id": "req_401"}}
        ),
    )

    result = login(rhone)

    assert result.exit_code == 3, result.stderr
    assert route.call_count == 1  # a 401 is not retried
    assert "invalid token" in result.stderr
    assert "req_401" in result.stderr
    assert not credentials_path.exists()
    assert not (Path(base_environ["RHONE_CONFIG_DIR"]) / "config.toml").exists()
    assert_no_token(result)
    # and nothing is logged in afterwards
    assert rhone("whoami").exit_code == 3


def test_login_rejected_with_401_json_error_document(rhone, api, credentials_path):
    whoami_route(api, httpx.Response(401, json={"error": {"code": "unauthenticated", "message": "invalid token"}}))

    result = login(rhone, "--json")

    assert result.exit_code == 3
    doc = result.json()
    assert_matches_schema(doc, "error.schema.json")
    assert doc["error"]["exit_code"] == 3
    assert doc["error"]["code"] == "unauthenticated"
    assert not credentials_path.exists()
    assert_no_token(result)


def test_login_without_with_token_and_no_tty_is_a_usage_error(rhone, api, credentials_path):
    route = whoami_route(api, httpx.Response(200, json=IDENTITY))

    result = rhone("login", "--api-url", API, stdin=TOKEN + "\n", tty=False)

    assert result.exit_code == 2
    assert "--with-token" in result.stderr
    assert route.call_count == 0
    assert not credentials_path.exists()

    as_json = rhone("login", "--api-url", API, "--json", stdin=TOKEN + "\n", tty=False)
    assert as_json.exit_code == 2
    assert_matches_schema(as_json.json(), "error.schema.json")
    assert "--with-token" in as_json.json()["error"]["message"]


def test_login_no_verify_makes_no_request(rhone, api, credentials_path):
    route = whoami_route(api, httpx.Response(200, json=IDENTITY))

    result = login(rhone, "--no-verify", "--json")

    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert_matches_schema(doc, "login.schema.json")
    assert doc["verified"] is False
    assert doc["identity"] is None
    assert route.call_count == 0
    assert TOKEN in credentials_path.read_text()


def test_login_empty_token_is_a_usage_error(rhone, api, credentials_path):
    route = whoami_route(api, httpx.Response(200, json=IDENTITY))

    result = login(rhone, token="   ")

    assert result.exit_code == 2
    assert route.call_count == 0
    assert not credentials_path.exists()


# -- whoami ----------------------------------------------------------------------------------------------------------
def test_whoami_not_logged_in_exits_3(rhone, api):
    route = whoami_route(api, httpx.Response(200, json=IDENTITY))

    result = rhone("whoami", "--api-url", API)
    assert result.exit_code == 3
    assert "not logged in" in result.stderr
    assert result.stdout == ""

    as_json = rhone("whoami", "--api-url", API, "--json")
    assert as_json.exit_code == 3
    assert_matches_schema(as_json.json(), "error.schema.json")
    assert route.call_count == 0


def test_whoami_against_a_dead_server_exits_8_naming_the_url(rhone):
    url = f"http://127.0.0.1:{closed_port()}"
    environ = {"RHONE_TOKEN": ENV_TOKEN}

    result = rhone("whoami", "--api-url", url, environ=environ)
    assert result.exit_code == 8
    assert url in result.stderr
    assert result.stdout == ""
    assert_no_token(result, ENV_TOKEN)

    as_json = rhone("whoami", "--api-url", url, "--json", environ=environ)
    assert as_json.exit_code == 8
    doc = as_json.json()  # the whole of stdout is exactly one JSON document
    assert_matches_schema(doc, "error.schema.json")
    assert doc["error"]["exit_code"] == 8
    assert doc["error"]["code"] == "api_unreachable"
    assert url in doc["error"]["message"]
    assert as_json.stdout.strip().startswith("{") and as_json.stdout.strip().endswith("}")
    assert_no_token(as_json, ENV_TOKEN)


def test_whoami_retries_a_503_then_succeeds(rhone, api, sleeps):
    route = whoami_route(
        api,
        httpx.Response(200, json=IDENTITY),  # login
        httpx.Response(503, headers={"Retry-After": "1"}),
        httpx.Response(200, json=IDENTITY),
    )
    assert login(rhone).exit_code == 0

    result = rhone("whoami", "--json")

    assert result.exit_code == 0, result.stderr
    assert_matches_schema(result.json(), "auth-status.schema.json")
    assert route.call_count == 3
    assert sleeps == [1]


def test_whoami_persistent_503_exits_8(rhone, api, sleeps):
    route = whoami_route(api, httpx.Response(503))

    result = rhone("whoami", "--api-url", API, "--json", environ={"RHONE_TOKEN": ENV_TOKEN})

    assert result.exit_code == 8
    doc = result.json()
    assert_matches_schema(doc, "error.schema.json")
    assert "gave up" in doc["error"]["message"]
    assert route.call_count == 5
    assert len(sleeps) == 4


def test_verbose_request_log_goes_to_stderr_without_the_token(rhone, api):
    whoami_route(api, httpx.Response(200, json=IDENTITY, headers={"X-Request-Id": "req_verbose"}))
    assert login(rhone).exit_code == 0

    result = rhone("whoami", "--json", "--verbose")

    assert result.exit_code == 0, result.stderr
    assert_matches_schema(result.json(), "auth-status.schema.json")  # stdout is still only the document
    debug = [line for line in result.stderr.splitlines() if line.startswith("debug:")]
    assert any("GET" in line and f"{API}/v1/whoami" in line for line in debug), result.stderr
    assert any("200" in line and "req_verbose" in line for line in debug), result.stderr
    assert "debug:" not in result.stdout
    assert_no_token(result)
    assert "Bearer" not in result.stderr


def test_verbose_login_log_does_not_contain_the_token(rhone, api):
    whoami_route(api, httpx.Response(200, json=IDENTITY))

    result = login(rhone, "--verbose")

    assert result.exit_code == 0, result.stderr
    assert "debug:" in result.stderr
    assert_no_token(result)


# -- logout ----------------------------------------------------------------------------------------------------------
def test_logout_removes_the_token_and_is_idempotent(rhone, api, credentials_path):
    whoami_route(api, httpx.Response(200, json=IDENTITY))
    assert login(rhone).exit_code == 0
    assert TOKEN in credentials_path.read_text()

    first = rhone("logout", "--json")
    assert first.exit_code == 0, first.stderr
    assert_matches_schema(first.json(), "logout.schema.json")
    assert first.json()["removed_from"] == ["file"]
    assert TOKEN not in credentials_path.read_text()
    assert stat.S_IMODE(credentials_path.stat().st_mode) == 0o600

    second = rhone("logout", "--json")
    assert second.exit_code == 0, second.stderr
    assert_matches_schema(second.json(), "logout.schema.json")
    assert second.json()["removed_from"] == []

    assert rhone("whoami").exit_code == 3


def test_logout_warns_when_rhone_token_still_set(rhone, api):
    whoami_route(api, httpx.Response(200, json=IDENTITY))
    assert login(rhone).exit_code == 0

    result = rhone("logout", environ={"RHONE_TOKEN": ENV_TOKEN})

    assert result.exit_code == 0
    assert "RHONE_TOKEN" in result.stderr
    assert_no_token(result, TOKEN, ENV_TOKEN)
