"""Environment settings through the API, in process: what is refused (and then changes nothing), where secret values
may and may not appear, and deploys refused at request time when a required setting or binding is missing."""

from __future__ import annotations

import json

import pytest

from rhone_local.domain.manifest import digest_of

from .conftest import BASE, LocalEnv

SECRET = "settings-secret-value-never-echoed-7731"
MANIFEST = {"version": 1, "files": []}


@pytest.fixture
def app_path(local: LocalEnv) -> str:
    project = local.create_project("shop")
    app = local.create_app(project, "web")
    return f"{BASE}/projects/shop/apps/{app['name']}"


def change(local: LocalEnv, app_path: str, env: str = "preview", **body):
    return local.client.post(f"{app_path}/environments/{env}/config", json=body, headers=local.owner.headers)


def config(local: LocalEnv, app_path: str, env: str = "preview") -> dict:
    response = local.client.get(f"{app_path}/environments/{env}/config", headers=local.owner.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_set_then_read_masks_secret_values(local: LocalEnv, app_path: str) -> None:
    response = change(local, app_path, values={"GREETING": "a=b=c"}, secrets={"SECRET_KEY": SECRET})
    assert response.status_code == 202, response.text
    local.run_operations()
    op = local.operation(response.json()["id"])
    assert (op["kind"], op["state"]) == ("config.update", "succeeded")
    items = {i["name"]: i for i in config(local, app_path)["items"]}
    assert items["GREETING"]["value"] == "a=b=c" and items["GREETING"]["secret"] is False
    assert items["SECRET_KEY"]["value"] is None and items["SECRET_KEY"]["secret"] is True
    # The value lives in the settings table and nowhere a reader can reach: operations, audit, responses.
    assert SECRET not in json.dumps(local.store.all("SELECT * FROM operations"))
    assert SECRET not in json.dumps(local.audit_rows())
    assert SECRET not in response.text
    assert op["params"]["secrets"] == ["SECRET_KEY"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"values": {"1A": "x"}}, 422, "invalid_request"),
        ({"values": {"PORT": "1"}}, 422, "invalid_request"),
        ({"values": {"RHONE_TOKEN": "1"}}, 422, "invalid_request"),
        ({"values": {"A-B": "1"}}, 422, "invalid_request"),
        ({"values": {"A": "nul\x00byte"}}, 422, "invalid_request"),
        ({"values": {"A": "x" * (4 * 1024 * 1024)}}, 422, "invalid_request"),
        ({"values": {f"K{i}": "v" for i in range(10_000)}}, 422, "invalid_request"),
        ({"values": {"A": "1"}, "secrets": {"A": "2"}}, 409, "settings_contradict"),
        ({"values": {"A": "1"}, "unset": ["A"]}, 409, "settings_contradict"),
        ({"unset": ["NOPE"]}, 409, "setting_not_found"),
        ({}, 409, "nothing_to_do"),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(local: LocalEnv, app_path: str, body, status, code) -> None:
    assert change(local, app_path, values={"KEEP": "1"}).status_code == 202
    local.run_operations()
    before = local.snapshot()
    response = change(local, app_path, **body)
    assert response.status_code == status, response.text[:500]
    assert response.json()["error"]["code"] == code
    assert local.snapshot() == before


def test_a_change_past_the_environment_limits_applies_nothing(local: LocalEnv, app_path: str) -> None:
    first = {f"K{i}": "v" for i in range(150)}
    assert change(local, app_path, values=first).status_code == 202
    local.run_operations()
    before = local.snapshot()
    response = change(local, app_path, values={f"N{i}": "v" for i in range(60)})
    assert response.status_code == 409 and response.json()["error"]["code"] == "settings_limit"
    big = {f"B{i}": "x" * 30_000 for i in range(10)}  # each value is allowed; together they are 300 KB
    response = change(local, app_path, values=big)
    assert response.status_code == 409 and response.json()["error"]["code"] == "settings_limit"
    assert local.snapshot() == before


def test_unset_removes_and_a_repeated_key_replays(local: LocalEnv, app_path: str) -> None:
    headers = {**local.owner.headers, "Idempotency-Key": "set-once"}
    body = {"values": {"A": "1", "B": "2"}}
    first = local.client.post(f"{app_path}/environments/preview/config", json=body, headers=headers)
    again = local.client.post(f"{app_path}/environments/preview/config", json=body, headers=headers)
    assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
    assert local.store.count("environment_settings") == 2
    local.run_operations()
    assert change(local, app_path, unset=["A"]).status_code == 202
    local.run_operations()
    assert [i["name"] for i in config(local, app_path)["items"]] == ["B"]


def _deploy(local: LocalEnv, app_path: str, config: dict):
    body = {
        "manifest": MANIFEST,
        "manifest_digest": digest_of(MANIFEST),
        "config": {"build": {"output": "."}, "process": {"start": "true"}, **config},
    }
    return local.client.post(f"{app_path}/deployments", json=body, headers=local.owner.headers)


def test_a_deploy_missing_a_required_setting_is_refused_before_anything_runs(local: LocalEnv, app_path: str) -> None:
    before = local.snapshot()
    response = _deploy(local, app_path, {"env": {"required": ["SECRET_KEY", "MODE"], "MODE": "prod"}})
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "setting_missing" and error["details"]["settings"] == ["SECRET_KEY"]
    assert local.snapshot() == before  # no deployment, no operation: nothing was built
    assert [r["result"] for r in local.audit_rows() if r["action"] == "deployment.create"] == ["failed"]
    assert change(local, app_path, secrets={"SECRET_KEY": SECRET}).status_code == 202
    local.run_operations()
    assert _deploy(local, app_path, {"env": {"required": ["SECRET_KEY", "MODE"], "MODE": "prod"}}).status_code == 202


def test_a_deploy_missing_a_provider_binding_is_refused_before_anything_runs(local: LocalEnv, app_path: str) -> None:
    before = local.snapshot()
    response = _deploy(local, app_path, {"providers": {"db": {"kind": "postgres"}}})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "binding_missing"
    assert response.json()["error"]["details"]["providers"] == ["db"]
    assert local.snapshot() == before


def test_the_server_checks_rhone_toml_env_like_the_cli(local: LocalEnv, app_path: str) -> None:
    before = local.snapshot()
    for env in ({"PORT": "1"}, {"required": ["1X"]}, {"A": 1}, {"A": "nul\x00"}, "not a table"):
        response = _deploy(local, app_path, {"env": env})
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request", response.text
    assert local.snapshot() == before


def test_a_viewer_reads_names_but_cannot_change_settings(local: LocalEnv, app_path: str) -> None:
    assert change(local, app_path, secrets={"SECRET_KEY": SECRET}).status_code == 202
    local.run_operations()
    viewer = local.make_user("viewer")
    read = local.client.get(f"{app_path}/environments/preview/config", headers=viewer.headers)
    assert read.status_code == 200 and SECRET not in read.text
    denied = local.client.post(
        f"{app_path}/environments/preview/config", json={"values": {"X": "1"}}, headers=viewer.headers
    )
    assert denied.status_code == 403


def test_rhone_toml_defaults_show_with_their_source(local: LocalEnv, app_path: str) -> None:
    assert change(local, app_path, values={"SECRET_KEY": "k"}).status_code == 202
    local.run_operations()
    deployed = _deploy(local, app_path, {"env": {"required": ["SECRET_KEY", "GREETING"], "GREETING": "hi"}})
    assert deployed.status_code == 202, deployed.text
    document = config(local, app_path)
    sources = {i["name"]: i["source"] for i in document["items"]}
    assert sources == {"GREETING": "rhone.toml", "SECRET_KEY": "environment"}
    assert document["required"] == ["SECRET_KEY", "GREETING"] and document["missing"] == []


def test_documents_match_their_schemas(local: LocalEnv, app_path: str) -> None:
    from tests.conftest import assert_matches_schema

    assert change(local, app_path, values={"A": "1"}, secrets={"B": SECRET}).status_code == 202
    local.run_operations()
    assert_matches_schema(config(local, app_path), "environment-config.schema.json")
    gc = local.client.post("/v1/local/gc", json={"dry_run": True}, headers=local.owner.headers)
    assert gc.status_code == 200, gc.text
    assert_matches_schema(gc.json(), "local-gc.schema.json")
    assert gc.json()["dry_run"] is True and gc.json()["removed"] == {"builds": 0, "allocations": 0, "blobs": 0}
