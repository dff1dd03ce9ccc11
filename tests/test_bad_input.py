"""Bad input that used to be an unexpected error (exit 1 with `internal_error`, or a RecursionError): not-a-number
and infinite timeouts, an API URL with an unclosed IPv6 bracket, a rhone.toml nested thousands of levels deep.
Each is now exit 2 with a message naming what is wrong, and nothing is sent."""

from __future__ import annotations

import httpx
import pytest

from rhone_cli.errors import ExitCode
from tests.conftest import VALID_TOML, RecordingTransport

TOO_DEEP = "too deeply nested: tables and arrays may nest at most 16 levels"
ENVIRON = {"RHONE_API_URL": "http://rhone.test", "RHONE_TOKEN": "rht_bad_input_0a1b2c3d"}


def _run_refusing(rhone, *argv: str, environ: dict | None = None, cwd=None) -> dict:
    """The `--json` document of a command that must exit 2 without sending anything."""
    transport = RecordingTransport.refusing()
    result = rhone(*argv, "--json", environ={**ENVIRON, **(environ or {})}, transport=transport, cwd=cwd)
    assert transport.requests == [], "nothing may be sent"
    assert result.exit_code == ExitCode.USAGE, result.stdout + result.stderr
    document = result.json()
    return document if argv[:2] == ("config", "validate") else document["error"]


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400", "-1", "0", "0.05", "3601"])
def test_request_timeout_flag_must_be_finite_seconds_in_range(rhone, value):
    error = _run_refusing(rhone, "--request-timeout", value, "whoami")
    assert error["code"] in ("usage_error",)
    assert "--request-timeout" in error["message"]
    assert "between 0.1 and 3600" in error["message"]


@pytest.mark.parametrize("value", ["0", "-1", "3601", "nan", "soon", "1.5"])
def test_local_down_timeout_must_be_whole_seconds_in_range(rhone, value, tmp_path):
    error = _run_refusing(rhone, "local", "down", "--timeout", value, "--data-dir", str(tmp_path / "data"))
    assert error["code"] == "usage_error"
    assert "--timeout" in error["message"]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "soon", "1e999"])
def test_request_timeout_variable_must_be_finite_seconds_in_range(rhone, value):
    error = _run_refusing(rhone, "whoami", environ={"RHONE_REQUEST_TIMEOUT": value})
    assert error["message"] == f"RHONE_REQUEST_TIMEOUT must be a number of seconds between 0.1 and 3600, not {value!r}"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e400", "604801"])
@pytest.mark.parametrize(
    "command",
    [("op", "wait", "op_1a2b"), ("promote", "dep_1a2b"), ("deploy", "approve", "dep_1a2b"), ("app", "scale")],
)
def test_wait_timeout_must_be_finite_seconds_in_range(rhone, command, value):
    extra = ("--env", "production", "--instances", "2") if command == ("app", "scale") else ()
    error = _run_refusing(rhone, *command, *extra, "--wait-timeout", value)
    assert "--wait-timeout" in error["message"]
    assert "must be a number of seconds between 0 and 604800" in error["message"]


def test_a_finite_wait_timeout_is_accepted(rhone):
    transport = RecordingTransport(httpx.MockTransport(lambda request: httpx.Response(404)))
    result = rhone("op", "wait", "op_1a2b", "--wait-timeout", "0.5", environ=ENVIRON, transport=transport)
    assert [r.url.path for r in transport.requests] == ["/v1/operations/op_1a2b"]
    assert result.exit_code == ExitCode.NOT_FOUND


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://[::1/v1", "http://host:99999", "http://host:port", "http://a b", "ftp://host"]
)
def test_malformed_api_urls_are_usage_errors_naming_the_url(rhone, url):
    error = _run_refusing(rhone, "whoami", environ={"RHONE_API_URL": url})
    assert error["code"] == "invalid_api_url"
    assert error["message"] == f"the API URL {url!r} is not an http(s) URL"
    flag = _run_refusing(rhone, "--api-url", url, "app", "ls", "-w", "local", "-p", "shop")
    assert flag["code"] == "invalid_api_url"


def _nested(kind: str, levels: int) -> str:
    if kind == "arrays":
        return f"a = {'[' * levels}{']' * levels}\n"
    return f"a = {'{ b = ' * levels}1{' }' * levels}\n"


@pytest.mark.parametrize("levels", [5000, 400, 17])
@pytest.mark.parametrize("kind", ["arrays", "inline tables"])
def test_a_deeply_nested_rhone_toml_is_exit_2_not_a_recursion_error(rhone, tmp_path, kind, levels):
    (tmp_path / "rhone.toml").write_text(VALID_TOML + _nested(kind, levels))

    report = _run_refusing(rhone, "config", "validate", cwd=tmp_path)
    assert report["valid"] is False
    assert [p["message"] for p in report["problems"]] == [TOO_DEEP]
    for command in (("config", "show"), ("deploy",), ("artifact", "manifest")):
        error = _run_refusing(rhone, *command, cwd=tmp_path)
        assert error["code"] == "invalid_config", (command, error)
        assert [p["message"] for p in error["details"]["problems"]] == [TOO_DEEP]


def test_ordinary_nesting_is_still_reported_as_what_it_is(rhone, tmp_path):
    (tmp_path / "rhone.toml").write_text(VALID_TOML + _nested("arrays", 3))
    report = _run_refusing(rhone, "config", "validate", cwd=tmp_path)
    assert "unknown key" in report["problems"][0]["message"]
