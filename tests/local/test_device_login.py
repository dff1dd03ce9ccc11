"""Device login and expiring tokens: `rhone login --device` against the real API app on a loopback port.

The CLI runs in a thread (it polls every second, as the server asks); the test plays the person at the approval page
through the API (`POST /v1/device/approve`, or the HTML form). A denied or expired code is exit 3 and stores
nothing. Tokens from a device login expire and are refreshed — before they expire, or when the server says they
did — and each refresh token works once.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from rhone_cli.errors import ExitCode
from tests.conftest import RecordingTransport, assert_matches_schema

from .conftest import LocalEnv


@pytest.fixture
def environ(live_url: str) -> dict[str, str]:
    return {"RHONE_API_URL": live_url, "RHONE_PROFILE": "hosted"}


@pytest.fixture
def credentials_file(base_environ: dict[str, str]) -> Path:
    return Path(base_environ["RHONE_CONFIG_DIR"]) / "credentials.toml"


def _pending_code(local: LocalEnv, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = local.store.one("SELECT * FROM device_codes WHERE state = 'pending' ORDER BY id DESC LIMIT 1")
        if row:
            return row
        time.sleep(0.05)  # the CLI thread has not asked for its code yet
    raise AssertionError("the CLI never asked for a device code")


def _login_in_background(rhone, environ, *extra: str) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        outcome["result"] = rhone("login", "--device", "--json", *extra, environ=environ)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _approve(local: LocalEnv, user_code: str, approve: bool = True):
    return local.client.post(
        "/v1/device/approve", json={"user_code": user_code, "approve": approve}, headers=local.owner.headers
    )


def test_an_approved_device_login_stores_an_expiring_token_and_its_refresh_token(
    rhone, local: LocalEnv, environ, credentials_file
):
    thread, outcome = _login_in_background(rhone, environ)
    code = _pending_code(local)
    assert code["client_name"].startswith("rhone on ")
    decided = _approve(local, code["user_code"].lower().replace("-", ""))  # typed loosely, as people do
    assert decided.status_code == 200 and decided.json()["state"] == "approved"
    thread.join(60)

    result = outcome["result"]
    assert result.exit_code == 0, result.stderr
    assert f"and check that it shows the code {code['user_code']}" in result.stderr
    assert f"/device?code={code['user_code']}" in result.stderr
    doc = result.json()
    assert_matches_schema(doc, "login.schema.json")
    assert doc["profile"] == "hosted" and doc["expires_at"] and doc["identity"]["id"] == local.owner.id
    stored = credentials_file.read_text()
    assert "hosted:refresh" in stored and "rhr_" in stored
    token_row = local.store.one("SELECT * FROM tokens WHERE name LIKE 'device login:%'")
    assert token_row["subject_id"] == local.owner.id and token_row["expires_at"] == doc["expires_at"]
    assert local.store.one("SELECT state FROM device_codes WHERE id = ?", code["id"])["state"] == "issued"

    whoami = rhone("whoami", "--json", environ=environ)
    assert whoami.exit_code == 0 and whoami.json()["identity"]["id"] == local.owner.id
    printed = rhone("auth", "token", environ=environ)
    assert printed.stdout.startswith("rht_") and printed.stdout.strip() in stored  # unmasked, for scripts
    as_json = rhone("auth", "token", "--json", environ=environ)
    assert_matches_schema(as_json.json(), "auth-token.schema.json")
    assert as_json.json()["expires_at"] == doc["expires_at"] and as_json.json()["source"] == "file"


@pytest.mark.parametrize("ending", ["denied", "expired"])
def test_a_denied_or_expired_code_is_exit_3_and_stores_nothing(
    rhone, local: LocalEnv, environ, credentials_file, ending
):
    thread, outcome = _login_in_background(rhone, environ)
    code = _pending_code(local)
    if ending == "denied":
        assert _approve(local, code["user_code"], approve=False).json()["state"] == "denied"
    else:
        with local.store.write() as c:
            c.execute("UPDATE device_codes SET expires_at = '2000-01-01T00:00:00.000Z' WHERE id = ?", (code["id"],))
    thread.join(60)

    result = outcome["result"]
    assert result.exit_code == ExitCode.AUTH, result.stderr
    error = result.json()["error"]
    assert error["code"] == {"denied": "access_denied", "expired": "expired_token"}[ending]
    assert error["message"].startswith("login failed: ")
    assert "rhone login" in error["hint"]
    assert not credentials_file.exists()
    assert local.store.one("SELECT COUNT(*) AS n FROM tokens WHERE name LIKE 'device login:%'")["n"] == 0
    late = _approve(local, code["user_code"])
    assert late.status_code == 409 and late.json()["error"]["code"] == "device_code_closed"


def test_polling_faster_than_the_interval_is_slow_down_and_codes_are_used_once(local: LocalEnv):
    started = local.client.post("/v1/device/code", json={"client_name": "test"}).json()
    assert started["interval"] >= 1 and started["verification_uri_complete"].endswith(f"code={started['user_code']}")
    body = {"device_code": started["device_code"]}
    first = local.client.post("/v1/device/token", json=body)
    second = local.client.post("/v1/device/token", json=body)
    assert first.json()["error"]["code"] == "authorization_pending"
    assert second.json()["error"]["code"] == "slow_down"
    _approve(local, started["user_code"])
    time.sleep(started["interval"])  # the protocol's own pacing
    issued = local.client.post("/v1/device/token", json=body)
    assert issued.status_code == 200 and issued.json()["token_type"] == "bearer"
    again = local.client.post("/v1/device/token", json=body)
    assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_grant"


def _logged_in(rhone, local: LocalEnv, environ) -> dict:
    thread, outcome = _login_in_background(rhone, environ)
    _approve(local, _pending_code(local)["user_code"])
    thread.join(60)
    assert outcome["result"].exit_code == 0, outcome["result"].stderr
    return outcome["result"].json()


def _stored_token(credentials_file: Path) -> str:
    import tomllib

    return tomllib.loads(credentials_file.read_text())["profiles"]["hosted"]["token"]


def test_a_token_about_to_expire_is_refreshed_before_the_request(
    rhone, local: LocalEnv, environ, credentials_file, base_environ
):
    _logged_in(rhone, local, environ)
    old = _stored_token(credentials_file)
    config = Path(base_environ["RHONE_CONFIG_DIR"]) / "config.toml"
    config.write_text(
        config.read_text().replace('token_expires_at = "', 'token_expires_at = "2000-01-01T00:00:00Z"\nx = "')
    )
    transport = RecordingTransport()

    listed = rhone("project", "ls", "-w", "local", "--json", environ=environ, transport=transport)

    assert listed.exit_code == 0, listed.stderr
    assert [r.url.path for r in transport.requests] == ["/v1/token/refresh", "/v1/workspaces/local/projects"]
    new = _stored_token(credentials_file)
    assert new != old and transport.requests[1].headers["Authorization"] == f"Bearer {new}"
    assert local.store.one("SELECT revoked_at FROM tokens WHERE secret_hash = ?", _hash(old))["revoked_at"]
    assert 'token_expires_at = "2000' not in config.read_text()


def test_a_token_the_server_expired_is_refreshed_once_and_the_request_retried(
    rhone, local: LocalEnv, environ, credentials_file
):
    _logged_in(rhone, local, environ)
    old = _stored_token(credentials_file)
    with local.store.write() as c:
        c.execute("UPDATE tokens SET expires_at = '2000-01-01T00:00:00.000Z' WHERE secret_hash = ?", (_hash(old),))
    transport = RecordingTransport()

    listed = rhone("project", "ls", "-w", "local", "--json", environ=environ, transport=transport)

    assert listed.exit_code == 0, listed.stderr
    paths = [r.url.path for r in transport.requests]
    assert paths == ["/v1/workspaces/local/projects", "/v1/token/refresh", "/v1/workspaces/local/projects"]
    assert _stored_token(credentials_file) != old


def test_a_refresh_token_works_once(rhone, local: LocalEnv, environ, credentials_file):
    import tomllib

    _logged_in(rhone, local, environ)
    refresh = tomllib.loads(credentials_file.read_text())["profiles"]["hosted:refresh"]["token"]
    first = local.client.post("/v1/token/refresh", json={"refresh_token": refresh})
    second = local.client.post("/v1/token/refresh", json={"refresh_token": refresh})
    assert first.status_code == 200
    assert second.status_code == 401 and second.json()["error"]["code"] == "invalid_grant"
    # The CLI's stored pair is now stale: its next request fails as 401 with a hint to log in again.
    with local.store.write() as c:
        c.execute("UPDATE tokens SET expires_at = '2000-01-01T00:00:00.000Z' WHERE subject_id = ?", (local.owner.id,))
    stale = rhone("project", "ls", "-w", "local", environ=environ)
    assert stale.exit_code == ExitCode.AUTH


def test_the_approval_page_needs_a_valid_token_and_says_what_happened(local: LocalEnv):
    started = local.client.post("/v1/device/code", json={"client_name": "rhone on laptop"}).json()
    page = local.client.get("/device", params={"code": started["user_code"].lower()})
    assert page.status_code == 200 and f'value="{started["user_code"]}"' in page.text
    assert "<code>rhone on laptop</code> is asking to act as you" in page.text
    form = {"user_code": started["user_code"], "token": "rht_not_valid_0000", "action": "approve"}
    refused = local.client.post("/device", data=form)
    assert refused.status_code == 401 and "That token is not valid." in refused.text
    assert local.store.device_code(user_code=started["user_code"])["state"] == "pending"
    approved = local.client.post("/device", data={**form, "token": local.owner.token})
    assert approved.status_code == 200 and "Login approved" in approved.text and "rhone on laptop" in approved.text
    twice = local.client.post("/device", data={**form, "token": local.owner.token})
    assert twice.status_code == 409 and "already decided" in twice.text


def test_the_approval_page_escapes_what_it_shows(local: LocalEnv):
    started = local.client.post("/v1/device/code", json={"client_name": "<script>alert(1)</script>"}).json()
    page = local.client.get("/device", params={"code": started["user_code"]})
    assert "<script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    done = local.client.post(
        "/device", data={"user_code": started["user_code"], "token": local.owner.token, "action": "deny"}
    )
    assert "<script>" not in done.text and "&lt;script&gt;" in done.text
    assert "Login denied" in done.text
    bad = local.client.get("/device", params={"code": '"><script>'})
    assert "<script>" not in bad.text


def _hash(secret: str) -> str:
    from rhone_local.domain.access import hash_token

    return hash_token(secret)


def test_login_without_a_terminal_or_flags_names_both_ways(rhone, environ):
    result = rhone("login", "--json", environ=environ, tty=False)
    assert result.exit_code == ExitCode.USAGE
    assert "--with-token (or --device)" in json.dumps(result.json())
