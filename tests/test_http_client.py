"""Contract tests of `rhone_cli.http.ApiClient`: retries, idempotency keys, error mapping, headers and the log.

Every test passes `sleep=` so nothing really sleeps; respx stands in for the server except where a real closed
loopback port is the point.
"""

from __future__ import annotations

import email.utils
import socket
import time

import httpx
import pytest
import respx

from rhone_cli import __version__
from rhone_cli.errors import ExitCode, RhoneError
from rhone_cli.http import MAX_RETRY_AFTER_SECONDS, ApiClient

API = "http://rhone.test"
TOKEN = "rht_http_secret_9c1d7e0b"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]):
    with ApiClient(API, TOKEN, sleep=sleeps.append, max_attempts=5) as api:
        yield api


def error_body(code: str, message: str = "nope", request_id: str | None = "req_body_1", **extra) -> dict:
    return {"error": {"code": code, "message": message, "request_id": request_id, "details": extra or None}}


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- idempotency keys ------------------------------------------------------------------------------------------------
def test_post_retried_after_connect_error_and_503_reuses_one_idempotency_key(client, sleeps):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.post("/v1/things").mock(
            side_effect=[
                httpx.ConnectError("connection reset by gremlins"),
                httpx.Response(503, json=error_body("unavailable")),
                httpx.Response(201, json={"id": "thing_1"}),
            ]
        )
        response = client.post("/v1/things", json={"name": "a"})

    assert response.status == 201
    assert response.data == {"id": "thing_1"}
    assert route.call_count == 3
    keys = [call.request.headers.get("Idempotency-Key") for call in route.calls]
    assert all(keys), keys
    assert keys[0].strip() != ""
    assert len(set(keys)) == 1, keys
    # the body is resent unchanged on each attempt
    assert {call.request.content for call in route.calls} == {route.calls[0].request.content}
    assert len(sleeps) == 2


def test_every_post_carries_a_key_and_separate_posts_get_different_keys(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.post("/v1/things").mock(return_value=httpx.Response(201, json={}))
        client.post("/v1/things", json={"n": 1})
        client.post("/v1/things", json={"n": 2})
        client.post("/v1/things")  # no body at all still gets a key

    keys = [call.request.headers.get("Idempotency-Key") for call in route.calls]
    assert len(keys) == 3
    assert all(key and key.strip() for key in keys), keys
    assert len(set(keys)) == 3, keys


def test_explicit_idempotency_key_is_sent_as_given_on_every_attempt(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.post("/v1/things").mock(side_effect=[httpx.Response(502), httpx.Response(200, json={"ok": True})])
        client.post("/v1/things", json={}, idempotency_key="my-key-123")

    assert route.call_count == 2
    assert [call.request.headers.get("Idempotency-Key") for call in route.calls] == ["my-key-123", "my-key-123"]


def test_non_idempotent_post_sends_no_key(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.post("/v1/things").mock(return_value=httpx.Response(201, json={}))
        client.post("/v1/things", json={}, idempotent=False)

    assert route.call_count == 1
    assert "idempotency-key" not in route.calls[0].request.headers


def test_non_idempotent_post_is_not_retried_on_503(client, sleeps):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.post("/v1/things").mock(
            side_effect=[httpx.Response(503, json=error_body("unavailable")), httpx.Response(201, json={})]
        )
        with pytest.raises(RhoneError) as caught:
            client.post("/v1/things", json={}, idempotent=False)

    assert route.call_count == 1
    assert "idempotency-key" not in route.calls[0].request.headers
    assert caught.value.exit_code == ExitCode.UNREACHABLE
    assert sleeps == []


def test_non_idempotent_post_is_not_retried_on_connect_error(client, sleeps):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.post("/v1/things").mock(side_effect=[httpx.ConnectError("refused"), httpx.Response(201, json={})])
        with pytest.raises(RhoneError) as caught:
            client.post("/v1/things", json={}, idempotent=False)

    assert route.call_count == 1
    assert caught.value.exit_code == ExitCode.UNREACHABLE
    assert caught.value.code == "api_unreachable"
    assert sleeps == []


def test_get_and_delete_send_no_idempotency_key(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        get = mock.get("/v1/things").mock(return_value=httpx.Response(200, json=[]))
        delete = mock.delete("/v1/things/1").mock(return_value=httpx.Response(204))
        client.get("/v1/things")
        assert client.delete("/v1/things/1").data is None

    assert "idempotency-key" not in get.calls[0].request.headers
    assert "idempotency-key" not in delete.calls[0].request.headers


# -- retries ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [502, 504, 429])
def test_get_is_retried_on_transient_status(client, sleeps, status):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.get("/v1/things").mock(
            side_effect=[httpx.Response(status), httpx.Response(status), httpx.Response(200, json={"ok": 1})]
        )
        response = client.get("/v1/things")

    assert response.data == {"ok": 1}
    assert route.call_count == 3
    assert len(sleeps) == 2


def test_get_is_retried_after_connect_error_and_timeout(client, sleeps):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.get("/v1/things").mock(
            side_effect=[httpx.ConnectError("nope"), httpx.ReadTimeout("slow"), httpx.Response(200, json={})]
        )
        assert client.get("/v1/things").status == 200

    assert route.call_count == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500])
def test_non_transient_statuses_are_not_retried(client, sleeps, status):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.get("/v1/things").mock(return_value=httpx.Response(status, json=error_body("x")))
        with pytest.raises(RhoneError):
            client.get("/v1/things")

    assert route.call_count == 1
    assert sleeps == []


def test_retry_after_seconds_is_honoured(client, sleeps):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.get("/v1/things").mock(
            side_effect=[httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(200, json={})]
        )
        client.get("/v1/things")

    assert sleeps == [2]


def test_retry_after_http_date_is_honoured(client, sleeps):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.get("/v1/things").mock(
            side_effect=[httpx.Response(503, headers={"Retry-After": when}), httpx.Response(200, json={})]
        )
        client.get("/v1/things")

    assert len(sleeps) == 1
    # HTTP dates have one-second resolution, and the clock moves between formatting and parsing
    assert 27.0 <= sleeps[0] <= 30.5, sleeps


def test_retry_after_in_the_past_means_no_wait(client, sleeps):
    when = email.utils.formatdate(time.time() - 3600, usegmt=True)
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.get("/v1/things").mock(
            side_effect=[httpx.Response(503, headers={"Retry-After": when}), httpx.Response(200, json={})]
        )
        client.get("/v1/things")

    assert sleeps == [0]


def test_huge_retry_after_is_capped(client, sleeps):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.get("/v1/things").mock(
            side_effect=[httpx.Response(503, headers={"Retry-After": "86400"}), httpx.Response(200, json={})]
        )
        client.get("/v1/things")

    assert sleeps == [MAX_RETRY_AFTER_SECONDS]


def test_backoff_without_retry_after_is_jittered_within_cap():
    sleeps: list[float] = []
    cap = 0.5
    with (
        ApiClient(API, sleep=sleeps.append, max_attempts=8, backoff_base=0.25, backoff_cap=cap) as api,
        respx.mock(base_url=API, assert_all_called=True) as mock,
    ):
        route = mock.get("/v1/things").mock(return_value=httpx.Response(503))
        with pytest.raises(RhoneError):
            api.get("/v1/things")

    assert route.call_count == 8
    assert len(sleeps) == 7
    assert all(0 <= delay <= cap for delay in sleeps), sleeps
    # exponential growth of the window: the first wait is bounded by the base, not the cap
    assert sleeps[0] <= 0.25


def test_garbage_retry_after_falls_back_to_backoff(client, sleeps):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.get("/v1/things").mock(
            side_effect=[httpx.Response(503, headers={"Retry-After": "soon-ish"}), httpx.Response(200, json={})]
        )
        client.get("/v1/things")

    assert len(sleeps) == 1
    assert 0 <= sleeps[0] <= client.backoff_cap


# -- status mapping --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "exit_code", "fallback_code"),
    [
        (400, ExitCode.USAGE, "bad_request"),
        (401, ExitCode.AUTH, "unauthenticated"),
        (403, ExitCode.AUTH, "forbidden"),
        (404, ExitCode.NOT_FOUND, "not_found"),
        (409, ExitCode.CONFLICT, "conflict"),
        (422, ExitCode.USAGE, "invalid_request"),
    ],
)
def test_status_maps_to_exit_code(client, status, exit_code, fallback_code):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        # once with a body, once with an empty body (the fallback code applies)
        mock.get("/v1/with-body").mock(return_value=httpx.Response(status, json=error_body("specific_code", "bad")))
        mock.get("/v1/empty").mock(return_value=httpx.Response(status))
        with pytest.raises(RhoneError) as with_body:
            client.get("/v1/with-body")
        with pytest.raises(RhoneError) as empty:
            client.get("/v1/empty")

    assert with_body.value.exit_code == exit_code
    assert with_body.value.code == "specific_code"
    assert with_body.value.message == "bad"
    assert with_body.value.details["status"] == status
    assert empty.value.exit_code == exit_code
    assert empty.value.code == fallback_code
    assert str(status) in empty.value.message


def test_persistent_503_gives_up_after_max_attempts_with_exit_8(sleeps):
    with (
        ApiClient(API, sleep=sleeps.append, max_attempts=4) as api,
        respx.mock(base_url=API, assert_all_called=True) as mock,
    ):
        route = mock.get("/v1/things").mock(
            return_value=httpx.Response(503, json=error_body("unavailable", "try later"))
        )
        with pytest.raises(RhoneError) as caught:
            api.get("/v1/things")

    assert route.call_count == 4
    assert len(sleeps) == 3
    error = caught.value
    assert error.exit_code == ExitCode.UNREACHABLE == 8
    assert error.retryable is True
    assert "gave up" in error.message
    assert "4 attempts" in error.message


def test_persistent_connect_error_gives_up_with_exit_8(sleeps):
    with (
        ApiClient(API, sleep=sleeps.append, max_attempts=3) as api,
        respx.mock(base_url=API, assert_all_called=True) as mock,
    ):
        route = mock.get("/v1/things").mock(side_effect=httpx.ConnectError("no route"))
        with pytest.raises(RhoneError) as caught:
            api.get("/v1/things")

    assert route.call_count == 3
    assert len(sleeps) == 2
    assert caught.value.exit_code == ExitCode.UNREACHABLE
    assert API in caught.value.message


def test_error_code_from_body_is_kept(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.post("/v1/routes/r1/switch").mock(
            return_value=httpx.Response(
                409, json=error_body("route_epoch_conflict", "the route moved", expected=3, actual=4)
            )
        )
        with pytest.raises(RhoneError) as caught:
            client.post("/v1/routes/r1/switch", json={"epoch": 3})

    error = caught.value
    assert error.code == "route_epoch_conflict"
    assert error.exit_code == ExitCode.CONFLICT
    assert error.message == "the route moved"
    assert error.details == {"status": 409, "expected": 3, "actual": 4}


@pytest.mark.parametrize("status", [409, 403, 423, 400])
def test_blocked_error_codes_exit_6_whatever_the_status(client, status):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.post("/v1/deploys").mock(
            return_value=httpx.Response(status, json=error_body("environment_frozen", "production is frozen"))
        )
        with pytest.raises(RhoneError) as caught:
            client.post("/v1/deploys", json={})

    assert caught.value.code == "environment_frozen"
    assert caught.value.exit_code == ExitCode.BLOCKED == 6


def test_operation_id_is_carried_from_details(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.get("/v1/ops/op_1").mock(
            return_value=httpx.Response(409, json=error_body("conflict", operation_id="op_1"))
        )
        with pytest.raises(RhoneError) as caught:
            client.get("/v1/ops/op_1")

    assert caught.value.operation_id == "op_1"


# -- transport failures ----------------------------------------------------------------------------------------------
def test_connection_refused_on_a_real_closed_port(sleeps):
    url = f"http://127.0.0.1:{closed_port()}"
    with (
        ApiClient(url, TOKEN, sleep=sleeps.append, max_attempts=2, timeout=5) as api,
        pytest.raises(RhoneError) as caught,
    ):
        api.get("/v1/whoami")

    error = caught.value
    assert error.exit_code == ExitCode.UNREACHABLE == 8
    assert error.code == "api_unreachable"
    assert url in error.message
    assert "refused" in error.message
    assert error.details == {"method": "GET", "url": f"{url}/v1/whoami"}
    assert len(sleeps) == 1
    assert TOKEN not in error.message


# -- request ids -----------------------------------------------------------------------------------------------------
def test_request_id_from_body(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.get("/v1/things").mock(
            return_value=httpx.Response(404, json=error_body("not_found", request_id="req_from_body"))
        )
        with pytest.raises(RhoneError) as caught:
            client.get("/v1/things")

    assert caught.value.request_id == "req_from_body"
    assert caught.value.to_document()["error"]["request_id"] == "req_from_body"


def test_request_id_from_header_when_body_has_none(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.get("/v1/things").mock(
            return_value=httpx.Response(
                404, json=error_body("not_found", request_id=None), headers={"X-Request-Id": "req_from_header"}
            )
        )
        with pytest.raises(RhoneError) as caught:
            client.get("/v1/things")

    assert caught.value.request_id == "req_from_header"


def test_request_id_on_success_comes_from_header(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.get("/v1/things").mock(
            return_value=httpx.Response(200, json={"ok": True}, headers={"X-Request-Id": "req_ok"})
        )
        assert client.get("/v1/things").request_id == "req_ok"


def test_non_json_500_maps_cleanly(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.get("/v1/things").mock(
            return_value=httpx.Response(
                500,
                text="<html><body>Internal Server Error</body></html>",
                headers={"Content-Type": "text/html", "X-Request-Id": "req_html"},
            )
        )
        with pytest.raises(RhoneError) as caught:
            client.get("/v1/things")

    error = caught.value
    assert route.call_count == 1
    assert error.exit_code == ExitCode.UNREACHABLE
    assert error.code == "server_error"
    assert "500" in error.message
    assert "<html>" not in error.message
    assert error.request_id == "req_html"
    assert error.details == {"status": 500}


def test_json_body_that_is_not_an_error_object_maps_cleanly(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        mock.get("/v1/things").mock(return_value=httpx.Response(404, json=["unexpected", "shape"]))
        mock.get("/v1/other").mock(return_value=httpx.Response(404, json={"error": "just a string"}))
        with pytest.raises(RhoneError) as first:
            client.get("/v1/things")
        with pytest.raises(RhoneError) as second:
            client.get("/v1/other")

    for caught in (first, second):
        assert caught.value.exit_code == ExitCode.NOT_FOUND
        assert caught.value.code == "not_found"


# -- headers and the log ---------------------------------------------------------------------------------------------
def test_user_agent_and_bearer_token(client):
    with respx.mock(base_url=API, assert_all_called=True) as mock:
        get = mock.get("/v1/whoami").mock(return_value=httpx.Response(200, json={}))
        post = mock.post("/v1/things").mock(return_value=httpx.Response(201, json={}))
        client.get("/v1/whoami")
        client.post("/v1/things", json={})

    for route in (get, post):
        headers = route.calls[0].request.headers
        assert headers["User-Agent"] == f"rhone/{__version__}"
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert headers["Accept"] == "application/json"


def test_no_authorization_header_without_a_token(sleeps):
    with ApiClient(API, sleep=sleeps.append) as api, respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.get("/v1/health").mock(return_value=httpx.Response(200, json={}))
        api.get("/v1/health")

    assert "authorization" not in route.calls[0].request.headers


def test_log_lines_never_contain_the_token(sleeps):
    lines: list[str] = []
    with (
        ApiClient(API, TOKEN, sleep=sleeps.append, log=lines.append, max_attempts=3) as api,
        respx.mock(base_url=API, assert_all_called=True) as mock,
    ):
        mock.post("/v1/things").mock(
            side_effect=[
                httpx.ConnectError(f"failed talking to {API}"),
                httpx.Response(503, headers={"X-Request-Id": "req_1"}),
                httpx.Response(201, json={}),
            ]
        )
        mock.get("/v1/missing").mock(return_value=httpx.Response(404, json=error_body("not_found")))
        api.post("/v1/things", json={"token_field": "not the token"})
        with pytest.raises(RhoneError):
            api.get("/v1/missing")

    assert lines, "the log callback was never called"
    assert any("POST" in line and "/v1/things" in line for line in lines)
    assert any("idempotency-key=" in line for line in lines)
    assert any("503" in line for line in lines)
    for line in lines:
        assert TOKEN not in line
        assert "Bearer" not in line
        assert "authorization" not in line.lower()


def test_base_url_trailing_slash_is_normalised(sleeps):
    with ApiClient(f"{API}/", sleep=sleeps.append) as api, respx.mock(base_url=API, assert_all_called=True) as mock:
        route = mock.get("/v1/whoami").mock(return_value=httpx.Response(200, json={}))
        api.get("/v1/whoami")

    assert str(route.calls[0].request.url) == f"{API}/v1/whoami"


def test_transport_argument_is_used(sleeps):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"via": "transport"})

    with ApiClient(API, TOKEN, sleep=sleeps.append, transport=httpx.MockTransport(handler)) as api:
        assert api.get("/v1/whoami").data == {"via": "transport"}

    assert len(seen) == 1
    assert seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("status", "body", "exit_code"),
    [
        # A refusal that states its exit category is judged by it, whatever its code or status.
        (409, {"code": "a_gate_no_cli_knows", "exit_category": "gate"}, ExitCode.BLOCKED),
        (400, {"code": "environment_frozen", "exit_category": "conflict"}, ExitCode.CONFLICT),
        # Without one (or with one no CLI knows): the status and the known codes, as before.
        (400, {"code": "environment_frozen"}, ExitCode.BLOCKED),
        (409, {"code": "something_new", "exit_category": "from_the_future"}, ExitCode.CONFLICT),
    ],
)
def test_a_refusal_states_its_exit_category(client, status, body, exit_code):
    with respx.mock(base_url=API) as mock:
        mock.post("/v1/things").mock(return_value=httpx.Response(status, json={"error": {"message": "no", **body}}))
        with pytest.raises(RhoneError) as raised:
            client.post("/v1/things", {})
    assert (raised.value.code, raised.value.exit_code) == (body["code"], exit_code)
