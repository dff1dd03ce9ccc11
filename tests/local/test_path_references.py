"""Ids and names in paths: the CLI never sends a malformed one, and the API refuses one from any other client.

The attack: `rhone promote '../workspaces/local/…/environments/production/unfreeze?'` — the HTTP client resolves the
`..` segments and `?` ends the path, so the "promotion" was a POST to the unfreeze endpoint, which unfroze
production. Now the CLI exits 2 before any request, and the server answers 404 to a path parameter that is not a
well-formed id or name, before authentication or any lookup.
"""

from __future__ import annotations

import httpx
import pytest

from rhone_cli.errors import ExitCode
from tests.conftest import RecordingTransport

from .conftest import BASE, LocalEnv


@pytest.fixture
def frozen_app(local: LocalEnv) -> str:
    project = local.create_project("shop")
    local.create_app(project, "web")
    app_path = f"{BASE}/projects/shop/apps/web"
    frozen = local.client.post(f"{app_path}/environments/production/freeze", headers=local.owner.headers)
    assert frozen.status_code == 200, frozen.text
    return app_path


def _production_frozen(local: LocalEnv) -> bool:
    return bool(local.store.one("SELECT frozen FROM environments WHERE name = 'production'")["frozen"])


def test_promote_with_a_path_for_an_id_cannot_unfreeze_production(rhone, local: LocalEnv, frozen_app, live_url):
    attack = "../workspaces/local/projects/shop/apps/web/environments/production/unfreeze?"
    # What the old client did with it: the URL it built is the unfreeze endpoint, with "/promote" as the query.
    old_url = httpx.URL(f"{live_url}/v1/deployments/{attack}/promote")
    assert old_url.path == f"{frozen_app}/environments/production/unfreeze"

    snapshot, audit = local.snapshot(), local.audit_rows()
    transport = RecordingTransport()
    environ = {"RHONE_API_URL": live_url, "RHONE_TOKEN": local.owner.token}
    result = rhone("promote", attack, "--json", environ=environ, transport=transport)

    assert result.exit_code == ExitCode.USAGE, result.stdout
    assert result.json()["error"]["code"] == "invalid_id"
    assert "expected dep_" in result.json()["error"]["message"]
    assert transport.requests == []
    assert _production_frozen(local)
    assert local.snapshot() == snapshot
    assert local.audit_rows() == audit


def test_op_show_with_a_path_for_an_id_prints_no_members(rhone, local: LocalEnv, live_url):
    transport = RecordingTransport()
    environ = {"RHONE_API_URL": live_url, "RHONE_TOKEN": local.owner.token}
    result = rhone("op", "show", "../workspaces/local/members", environ=environ, transport=transport)

    assert result.exit_code == ExitCode.USAGE
    assert "not a valid operation id: expected op_" in result.stderr
    assert "@" not in result.stdout + result.stderr  # no member's email
    assert transport.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/operations/op_1%3Fx"),
        ("GET", "/v1/operations/op_%2E%2E"),
        ("GET", "/v1/deployments/dep_1%20x/logs"),
        ("POST", "/v1/deployments/dep_..x/promote"),
        ("POST", "/v1/deployments/op_1a2b/approve"),
        ("POST", f"{BASE}/projects/shop/apps/web/environments/production%3F/unfreeze"),
        ("POST", f"{BASE}/projects/shop/apps/web/environments/production%23x/freeze"),
        ("POST", f"{BASE}/projects/shop%2E%2E/apps"),
        ("GET", f"{BASE}/projects/shop/apps/Web"),
        ("GET", "/v1/workspaces/local%3F"),
        ("DELETE", f"{BASE}/tokens/tok_%2E%2E"),
        ("GET", "/v1/regions/local-1%3Fx"),
        ("DELETE", f"{BASE}/projects/shop/apps/web/environments/production/bindings/db%3Fregion=x"),
    ],
)
def test_the_api_refuses_malformed_path_references_changing_nothing(local: LocalEnv, frozen_app, method, path):
    snapshot, audit = local.snapshot(), local.audit_rows()

    response = local.client.request(method, path, headers=local.owner.headers, json={} if method == "POST" else None)

    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert "names nothing" in error["message"]
    assert local.snapshot() == snapshot
    assert local.audit_rows() == audit
    assert _production_frozen(local)


def test_the_api_still_answers_well_formed_ids_it_does_not_know_with_a_plain_404(local: LocalEnv):
    response = local.client.get("/v1/operations/op_1a21be1bc46141764b9aa98", headers=local.owner.headers)
    assert response.status_code == 404
    assert "names nothing" not in response.json()["error"]["message"]
