"""Concurrent first deploys of a new app: `rhone deploy` creates the project and app when they are missing, and the
one that loses the race takes what the winner created — never `name_taken`.

The race is made deterministic: a transport lets "another deploy" create the app at the worst moment, after this
deploy saw it missing and before its own create lands, either completely (the create request is refused at once) or
only as a queued operation that the workers then apply first (this deploy's operation fails `name_taken`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import RecordingTransport

from .conftest import BASE, SHOP_WEB_TOML, LocalEnv

APPS = f"{BASE}/projects/shop/apps"


class BeforeAndAfterCreate(RecordingTransport):
    """Runs `before` when the CLI sends its create-app request, and `after` once the answer is back."""

    def __init__(self, before: Callable[[], None], after: Callable[[], None]) -> None:
        super().__init__()
        self.before, self.after = before, after

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        racing = request.method == "POST" and request.url.path == APPS
        if racing:
            self.before()
        response = super().handle_request(request)
        if racing:
            response.read()
            self.after()
        return response


def _other_deploy_creates_the_app(local: LocalEnv) -> Callable[[], None]:
    def create() -> None:
        started = local.client.post(APPS, json={"name": "web"}, headers=local.owner.headers)
        assert started.status_code == 202, started.text

    return create


@pytest.fixture
def project_dir(local: LocalEnv, tmp_path: Path) -> Path:
    local.create_project("shop")
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "rhone.toml").write_text(SHOP_WEB_TOML)
    (directory / "app.py").write_text("print('hello')\n")
    return directory


@pytest.mark.parametrize("moment", ["applied before our request", "applied before our operation"])
def test_the_loser_of_a_first_deploy_race_uses_the_winners_app(rhone, local: LocalEnv, live_url, project_dir, moment):
    other = _other_deploy_creates_the_app(local)
    if moment == "applied before our request":
        transport = BeforeAndAfterCreate(before=lambda: (other(), local.run_operations()), after=lambda: None)
    else:  # both creates are queued; the workers apply the other one first, then fail ours
        transport = BeforeAndAfterCreate(before=other, after=local.run_operations)
    environ = {"RHONE_API_URL": live_url, "RHONE_TOKEN": local.owner.token}

    result = rhone("deploy", "--no-wait", "--json", cwd=project_dir, environ=environ, transport=transport)

    assert result.exit_code == 0, result.stdout + result.stderr
    assert "name_taken" not in result.stdout
    apps = local.store.all("SELECT id, name FROM apps")
    assert [a["name"] for a in apps] == ["web"]
    ops = local.store.all("SELECT kind, state, error FROM operations WHERE kind = 'app.create' ORDER BY id")
    if moment == "applied before our request":
        assert [o["state"] for o in ops] == ["succeeded"]  # ours was refused before it became an operation
    else:
        assert [o["state"] for o in ops] == ["succeeded", "failed"]
        assert ops[1]["error"]["code"] == "name_taken"
    deployments = local.store.all("SELECT app_id FROM deployments")
    assert deployments == [{"app_id": apps[0]["id"]}]
    assert result.json()["state"] == "queued" and result.json()["kind"] == "deploy"
    assert "created" not in result.stderr  # this deploy did not create the app (the other one did)


def test_a_name_taken_that_the_caller_cannot_see_is_still_reported(rhone, local: LocalEnv, live_url, project_dir):
    """If the name is taken but the app is still not readable, there is nothing to attach to: the refusal stands."""
    real = httpx.HTTPTransport()

    def refuse(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == APPS:
            return httpx.Response(409, json={"error": {"code": "name_taken", "message": "app 'web' already exists"}})
        return real.handle_request(request)

    transport = RecordingTransport(httpx.MockTransport(refuse))
    environ = {"RHONE_API_URL": live_url, "RHONE_TOKEN": local.owner.token}
    result = rhone("deploy", "--no-wait", "--json", cwd=project_dir, environ=environ, transport=transport)

    assert result.exit_code == 5
    assert result.json()["error"]["code"] == "name_taken"
    assert local.store.count("deployments") == 0
