"""Which Idempotency-Key a mutating command sends: explicit, derived in CI, or fresh per request."""

from __future__ import annotations

import httpx
import respx

from rhone_cli.api import idempotency_key


def key(environ: dict[str, str], path: str, *identity: str) -> str | None:
    return idempotency_key(environ, path, *identity)


def test_outside_ci_the_client_makes_a_fresh_key_per_request() -> None:
    assert key({}, "/v1/x", "a") is None


def test_an_explicit_key_is_per_endpoint_whatever_the_body() -> None:
    environ = {"RHONE_IDEMPOTENCY_KEY": "job-7"}
    assert key(environ, "/v1/p", "alpha") == key(environ, "/v1/p", "beta")  # reuse with another body → server 409
    assert key(environ, "/v1/projects") != key(environ, "/v1/projects/x/apps")  # a project, then an app
    assert key(environ, "/v1/p").startswith("job-7-")


def test_ci_keys_follow_the_run_and_the_request_but_not_the_attempt() -> None:
    first = {"CI": "true", "GITHUB_RUN_ID": "123", "GITHUB_RUN_ATTEMPT": "1"}
    rerun = {**first, "GITHUB_RUN_ATTEMPT": "2"}  # GitHub's "re-run jobs" keeps the run id
    assert key(first, "/v1/d", "sha256:aa", "preview") == key(rerun, "/v1/d", "sha256:aa", "preview")
    assert key(first, "/v1/d", "sha256:aa", "preview") != key(first, "/v1/d", "sha256:bb", "preview")
    assert key(first, "/v1/d", "sha256:aa", "preview") != key(
        {**first, "GITHUB_RUN_ID": "124"}, "/v1/d", "sha256:aa", "preview"
    )
    assert key({"CI_PIPELINE_ID": "9"}, "/v1/d") is not None


def test_an_api_validation_error_is_a_clean_exit_2(rhone) -> None:
    """The API's 422 problems (loc/message) render as lines, never as a crash of the error renderer. (The name is
    one the CLI accepts — it refuses malformed names itself, before sending — and the mocked API refuses.)"""
    body = {
        "error": {
            "code": "invalid_request",
            "message": "the request is not valid",
            "request_id": "req_1",
            "details": {
                "problems": [
                    {
                        "loc": ["body", "name"],
                        "message": "String should match pattern",
                        "type": "string_pattern_mismatch",
                    }
                ]
            },
        }
    }
    with respx.mock(base_url="http://rhone.test") as mock:
        mock.post("/v1/workspaces/local/projects").mock(return_value=httpx.Response(422, json=body))
        result = rhone(
            "project",
            "create",
            "shop",
            "-w",
            "local",
            environ={"RHONE_API_URL": "http://rhone.test", "RHONE_TOKEN": "tok-test"},
        )
    assert result.exit_code == 2, result.stderr
    assert "name: String should match pattern" in result.stderr
    assert "Traceback" not in result.stderr and "request id: req_1" in result.stderr


def test_converging_requests_get_no_ci_derived_key_so_3_1_3_in_one_job_acts_three_times() -> None:
    ci = {"CI": "true", "GITHUB_RUN_ID": "123"}
    assert idempotency_key(ci, "/v1/scale", "3", derive_in_ci=False) is None
    explicit = {**ci, "RHONE_IDEMPOTENCY_KEY": "k"}
    assert idempotency_key(explicit, "/v1/scale", "3", derive_in_ci=False) is not None  # the script asked for it
