"""Scale and runtime services through the API, in process: what is refused at request time, and why."""

from __future__ import annotations

from ._cases import Target, _owned_production, _preview_ready
from .conftest import LocalEnv


def _production(local: LocalEnv) -> tuple[Target, str]:
    target = Target()
    _owned_production(local, target)
    assert target.project is not None and target.app is not None
    return target, f"/v1/workspaces/local/projects/{target.project['name']}/apps/{target.app['name']}"


def test_one_change_of_an_environments_allocations_at_a_time(local: LocalEnv) -> None:
    target, path = _production(local)
    first = local.client.post(
        f"{path}/environments/production/scale", json={"instances": 3}, headers=local.owner.headers
    )
    assert first.status_code == 202
    before = local.snapshot()
    second = local.client.post(
        f"{path}/environments/production/scale", json={"instances": 1}, headers=local.owner.headers
    )
    assert second.status_code == 409
    assert (second.json()["error"]["code"], second.json()["error"]["details"]["operation_id"]) == (
        "environment_busy",
        first.json()["id"],
    )
    assert local.snapshot() == before  # no second operation, nothing else written
    other = _preview_ready(local, target)
    before = local.snapshot()
    promote = local.client.post(
        f"/v1/deployments/{other}/promote", json={"environment": "production"}, headers=local.owner.headers
    )
    assert promote.status_code == 409 and promote.json()["error"]["code"] == "environment_busy"
    assert local.snapshot() == before


def test_services_a_scaled_environment_needs_cannot_be_unbound(local: LocalEnv) -> None:
    _, path = _production(local)
    with local.store.write() as c:
        c.execute("UPDATE environments SET instances = 3 WHERE name = 'production'")
    before = local.snapshot()
    response = local.client.post(
        f"{path}/environments/production/services", json={"unbind": ["session", "cache"]}, headers=local.owner.headers
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "runtime_services_required"
    assert response.json()["error"]["details"]["services"] == ["session"]
    assert local.snapshot() == before
    # A service the app does not need may go.
    assert (
        local.client.post(
            f"{path}/environments/production/services", json={"unbind": ["cache"]}, headers=local.owner.headers
        ).status_code
        == 202
    )


def test_a_provider_that_cannot_serve_a_service_is_refused_and_nothing_is_recorded(local: LocalEnv) -> None:
    _, path = _production(local)
    before = local.snapshot()
    for body, provider in (
        ({"bind": ["session"], "provider": "nats"}, "nats"),
        ({"bind": ["broadcast", "cache"], "provider": "sql"}, "sql"),
        ({"bind": ["idempotency"], "provider": "redis"}, "redis"),
    ):
        response = local.client.post(f"{path}/environments/production/services", json=body, headers=local.owner.headers)
        assert response.status_code == 422, body
        error = response.json()["error"]
        assert (error["code"], error["details"]["provider"]) == ("provider_cannot_serve", provider)
    assert local.snapshot() == before  # no operation, no binding
