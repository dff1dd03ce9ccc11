"""API conventions: request ids, uniform errors, authentication failures, pagination, id prefixes,
topology that never leaks into public identity, and the environments an app is created with."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from rhone_local.server import CELL, REGION

from .conftest import BASE, LocalEnv, auth

ERROR_KEYS = {"code", "message", "request_id", "details"}
GENERATED_REQUEST_ID = re.compile(r"^req_[0-9a-f]{23}$")


def _assert_uniform_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    request_id = response.headers["X-Request-Id"]
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ERROR_KEYS
    assert error["request_id"] == request_id
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code
    return error


# -- X-Request-Id and the error body on every status ------------------------------------------------------------------
def test_every_status_carries_a_request_id_and_errors_are_uniform(local: LocalEnv) -> None:
    client, owner = local.client, local.owner.headers
    viewer = local.make_user("viewer")

    ok = client.get("/v1/health")
    assert ok.status_code == 200 and GENERATED_REQUEST_ID.match(ok.headers["X-Request-Id"])
    created = client.post(f"{BASE}/members", json={"email": "a@example.test", "role": "viewer"}, headers=owner)
    assert created.status_code == 201 and GENERATED_REQUEST_ID.match(created.headers["X-Request-Id"])
    accepted = client.post(f"{BASE}/projects", json={"name": "shop"}, headers=owner)
    assert accepted.status_code == 202 and GENERATED_REQUEST_ID.match(accepted.headers["X-Request-Id"])
    assert accepted.json()["request_id"] == accepted.headers["X-Request-Id"]  # the operation records it

    errors = {
        (400, "malformed_json"): client.post(
            f"{BASE}/projects", content=b'{"name": "sho', headers={**owner, "Content-Type": "application/json"}
        ),
        (401, "unauthenticated"): client.get("/v1/whoami"),
        (403, "insufficient_role"): client.post(f"{BASE}/projects", json={"name": "x"}, headers=viewer.headers),
        (404, "not_found"): client.get(f"{BASE}/projects/missing", headers=owner),
        (405, "method_not_allowed"): client.put("/v1/health"),
        (409, "already_a_member"): client.post(
            f"{BASE}/members", json={"email": "a@example.test", "role": "viewer"}, headers=owner
        ),
        (422, "invalid_request"): client.post(f"{BASE}/projects", json={"name": "Not A Name"}, headers=owner),
    }
    for (status, code), response in errors.items():
        error = _assert_uniform_error(response, status, code)
        assert GENERATED_REQUEST_ID.match(error["request_id"]), (status, error)
    unknown = client.get("/v1/no-such-route", headers=owner)
    _assert_uniform_error(unknown, 404, "not_found")
    # Every request got its own id.
    ids = [r.headers["X-Request-Id"] for r in (ok, created, accepted, unknown, *errors.values())]
    assert len(set(ids)) == len(ids)


def test_validation_errors_name_the_problem(local: LocalEnv) -> None:
    response = local.client.post(f"{BASE}/projects", json={"name": "Not A Name"}, headers=local.owner.headers)
    problems = _assert_uniform_error(response, 422, "invalid_request")["details"]["problems"]
    assert [p["loc"] for p in problems] == [["body", "name"]]
    limit = local.client.get(f"{BASE}/projects", params={"limit": 0}, headers=local.owner.headers)
    _assert_uniform_error(limit, 422, "invalid_request")


def test_an_incoming_request_id_is_echoed_and_recorded(local: LocalEnv) -> None:
    mine = "client-1234.retry_2"
    ok = local.client.get("/v1/health", headers={"X-Request-Id": mine})
    assert ok.headers["X-Request-Id"] == mine
    refused = local.client.get("/v1/whoami", headers={"X-Request-Id": mine})
    assert _assert_uniform_error(refused, 401, "unauthenticated")["request_id"] == mine

    accepted = local.client.post(
        f"{BASE}/projects", json={"name": "shop"}, headers=auth(local.owner.token, **{"X-Request-Id": mine})
    )
    assert accepted.headers["X-Request-Id"] == mine
    assert accepted.json()["request_id"] == mine
    assert [r["action"] for r in local.audit_for(mine)] == ["project.create"]


@pytest.mark.parametrize("incoming", [b"has spaces", b"x" * 101, b"semi;colon", "ünïcode".encode(), b""])
def test_an_invalid_incoming_request_id_is_replaced(local: LocalEnv, incoming: bytes) -> None:
    response = local.client.get("/v1/health", headers={"X-Request-Id": incoming})
    assert GENERATED_REQUEST_ID.match(response.headers["X-Request-Id"])
    refused = local.client.get("/v1/whoami", headers={"X-Request-Id": incoming})
    assert GENERATED_REQUEST_ID.match(_assert_uniform_error(refused, 401, "unauthenticated")["request_id"])


# -- authentication ---------------------------------------------------------------------------------------------------
def test_missing_or_malformed_credentials_are_unauthenticated(local: LocalEnv) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        _assert_uniform_error(local.client.get("/v1/whoami", headers=headers), 401, "unauthenticated")


def test_an_unknown_token_is_invalid(local: LocalEnv) -> None:
    _assert_uniform_error(local.client.get("/v1/whoami", headers=auth("rht_not-a-real-token")), 401, "invalid_token")
    mutation = local.client.post(f"{BASE}/projects", json={"name": "shop"}, headers=auth("rht_nope"))
    _assert_uniform_error(mutation, 401, "invalid_token")
    assert local.store.count("operations") == 0


def test_a_revoked_token_stops_working(local: LocalEnv) -> None:
    user = local.make_user("developer")
    assert local.client.get("/v1/whoami", headers=user.headers).status_code == 200
    revoked = local.client.delete(f"{BASE}/tokens/{user.token_id}", headers=user.headers)  # revoking one's own
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"]
    _assert_uniform_error(local.client.get("/v1/whoami", headers=user.headers), 401, "invalid_token")
    _assert_uniform_error(local.client.get(BASE, headers=user.headers), 401, "invalid_token")


def test_an_expired_token_stops_working(local: LocalEnv) -> None:
    issued = local.client.post(
        f"{BASE}/tokens", json={"name": "short", "expires_in_days": 1}, headers=local.owner.headers
    )
    assert issued.status_code == 201, issued.text
    token = issued.json()
    expires = datetime.fromisoformat(token["expires_at"].replace("Z", "+00:00"))
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(days=1)
    assert local.client.get("/v1/whoami", headers=auth(token["secret"])).status_code == 200

    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    local.store.conn.execute("UPDATE tokens SET expires_at = ? WHERE id = ?", (past, token["id"]))
    # `token_expired` (not `invalid_token`): a client that keeps a refresh token knows to use it.
    _assert_uniform_error(local.client.get("/v1/whoami", headers=auth(token["secret"])), 401, "token_expired")
    local.store.conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (past, token["id"]))
    _assert_uniform_error(local.client.get("/v1/whoami", headers=auth(token["secret"])), 401, "invalid_token")


# -- pagination -------------------------------------------------------------------------------------------------------
def test_pagination_chains_cursors_without_duplicates_or_gaps(local: LocalEnv) -> None:
    names = [f"p{i}" for i in range(7)]
    for name in names:
        assert (
            local.client.post(f"{BASE}/projects", json={"name": name}, headers=local.owner.headers).status_code == 202
        )
    local.run_operations()

    pages, cursor = [], None
    for _ in range(10):
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        response = local.client.get(f"{BASE}/projects", params=params, headers=local.owner.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        if body["next_cursor"] is None:
            break
        assert body["next_cursor"] == body["items"][-1]["id"]
        cursor = body["next_cursor"]
    assert [len(p) for p in pages] == [3, 3, 1]
    ids = [item["id"] for page in pages for item in page]
    assert len(ids) == len(set(ids)) == 7
    assert ids == sorted(ids)
    assert sorted(item["name"] for page in pages for item in page) == sorted(names)
    everything = local.client.get(f"{BASE}/projects", params={"limit": 200}, headers=local.owner.headers).json()
    assert [p["id"] for p in everything["items"]] == ids and everything["next_cursor"] is None

    operations = local.client.get(f"{BASE}/operations", params={"limit": 7}, headers=local.owner.headers).json()
    assert len(operations["items"]) == 7 and operations["next_cursor"] is None  # exactly full: no empty next page


# -- identifiers and topology ---------------------------------------------------------------------------------------
def test_ids_have_their_documented_prefixes(local: LocalEnv) -> None:
    project = local.create_project("shop")
    app = local.create_app(project, "web")
    user = local.make_user("developer")
    identity = local.mint_runtime_identity(project, app)
    environments = local.store.all("SELECT * FROM environments")
    workspace = local.client.get(BASE, headers=local.owner.headers)
    audit = local.audit_rows()

    expectations = {
        "ws_": [workspace.json()["id"]],
        "prj_": [project["id"]],
        "app_": [app["id"]],
        "env_": [e["id"] for e in environments],
        "op_": [project["operation_id"], app["operation_id"]],
        "tok_": [user.token_id, identity.token_id],
        "usr_": [user.id, local.owner.id],
        "req_": [workspace.headers["X-Request-Id"], *[r["request_id"] for r in audit]],
        "rid_": [identity.id],
        "aud_": [r["id"] for r in audit],
        "reg_": [r["id"] for r in local.store.regions()],
        "cell_": [c["id"] for c in local.store.cells()],
    }
    for prefix, ids in expectations.items():
        assert ids, prefix
        for identifier in ids:
            assert re.fullmatch(re.escape(prefix) + r"[0-9a-f]{23}", identifier), (prefix, identifier)


def test_regions_and_cells_exist_from_day_one_and_stay_out_of_public_identity(local: LocalEnv) -> None:
    regions = local.client.get("/v1/regions", headers=local.owner.headers)
    assert regions.status_code == 200
    region, second = regions.json()["items"]
    assert region["name"] == REGION and region["id"].startswith("reg_") and region["primary"] is True
    assert (second["name"], second["primary"]) == ("local-2", False)
    cell, second_cell = local.store.cells()
    assert (cell["name"], cell["region_id"]) == (CELL, region["id"])
    assert [c["name"] for c in second["cells"]] == [second_cell["name"]] == ["local-2a"]

    project = local.create_project("shop")
    app = local.create_app(project, "web")
    env_op = local.client.post(
        f"{BASE}/projects/shop/apps/web/environments", json={"name": "staging"}, headers=local.owner.headers
    )
    assert env_op.status_code == 202
    local.run_operations()

    app_path = f"{BASE}/projects/shop/apps/web"
    public = [
        local.client.get(f"{BASE}/projects/shop", headers=local.owner.headers),
        local.client.get(app_path, headers=local.owner.headers),
        local.client.get(f"{app_path}/environments", headers=local.owner.headers),
        local.client.get(f"/v1/operations/{app['operation_id']}", headers=local.owner.headers),
        env_op,
    ]
    topology = (region["name"], region["id"], cell["name"], cell["id"], second["name"], second["id"], "local-2a")
    for response in public:
        assert response.status_code in (200, 202), response.text
        text = json.dumps(response.json()) + response.headers.get("Location", "")
        for marker in topology:
            assert marker not in text, (marker, response.url)
    for table in ("projects", "apps", "environments"):
        for row in local.store.all(f"SELECT id, name FROM {table}"):
            for marker in topology:
                assert marker not in row["id"] and marker not in row["name"], (table, row, marker)


def test_app_create_makes_preview_and_production(local: LocalEnv) -> None:
    project = local.create_project("shop")
    app = local.create_app(project, "web")
    listed = local.client.get(f"{BASE}/projects/shop/apps/web/environments", headers=local.owner.headers)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert sorted(e["name"] for e in items) == ["preview", "production"]
    assert {e["app_id"] for e in items} == {app["id"]}
    assert {e["operation_id"] for e in items} == {app["operation_id"]}
    assert all(e["approval_required"] is False and e["frozen"] is False for e in items)

    # Policies given at creation apply; extra environments are added; the defaults are always there.
    started = local.client.post(
        f"{BASE}/projects/shop/apps",
        json={"name": "api", "environments": {"production": {"approval_required": True}, "qa": {"frozen": True}}},
        headers=local.owner.headers,
    )
    assert started.status_code == 202, started.text
    local.run_operations()
    items = local.client.get(f"{BASE}/projects/shop/apps/api/environments", headers=local.owner.headers).json()["items"]
    flags = {e["name"]: (e["approval_required"], e["frozen"]) for e in items}
    assert flags == {"preview": (False, False), "production": (True, False), "qa": (False, True)}
