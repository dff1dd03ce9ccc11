"""Idempotency-Key: a retried POST replays its first answer, never creates twice, and keys belong to one caller."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from .conftest import BASE, LocalEnv, auth


def _post_project(local: LocalEnv, name: str, key: str | None, token: str | None = None) -> httpx.Response:
    headers = auth(token or local.owner.token, **({"Idempotency-Key": key} if key else {}))
    return local.client.post(f"{BASE}/projects", json={"name": name}, headers=headers)


def test_same_key_twice_replays_one_operation(local: LocalEnv) -> None:
    first = _post_project(local, "shop", "key-1")
    second = _post_project(local, "shop", "key-1")
    assert (first.status_code, second.status_code) == (202, 202)
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert second.headers["Location"] == first.headers["Location"] == f"/v1/operations/{first.json()['id']}"
    assert local.store.count("operations") == 1
    assert local.store.count("idempotency") == 1
    local.run_operations()
    assert local.store.count("projects") == 1
    assert local.operation(first.json()["id"])["state"] == "succeeded"
    # The replay is not a second mutation: one allowed audit record, for the first request.
    records = [r for r in local.audit_rows() if r["action"] == "project.create"]
    assert [(r["request_id"], r["result"]) for r in records] == [(first.headers["X-Request-Id"], "allowed")]


def test_replay_after_the_project_exists_returns_the_original_202(local: LocalEnv) -> None:
    first = _post_project(local, "shop", "key-1")
    local.run_operations()
    assert local.store.count("projects") == 1

    replay = _post_project(local, "shop", "key-1")
    assert replay.status_code == 202, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert (replay.json()["state"], replay.json()["version"]) == ("queued", 1)  # the answer as first given

    # Without the key (or with a new one) the same request is a new one, and the name is taken.
    for key in (None, "key-2"):
        fresh = _post_project(local, "shop", key)
        assert fresh.status_code == 409, fresh.text
        assert fresh.json()["error"]["code"] == "name_taken"
    assert (local.store.count("operations"), local.store.count("projects")) == (1, 1)


def test_reused_key_with_another_body_is_refused(local: LocalEnv) -> None:
    first = _post_project(local, "shop", "key-1")
    assert first.status_code == 202
    snapshot = local.snapshot()

    other_body = _post_project(local, "store", "key-1")
    assert other_body.status_code == 409, other_body.text
    error = other_body.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert error["request_id"] == other_body.headers["X-Request-Id"]

    other_path = local.client.post(
        f"{BASE}/tokens", json={"name": "shop"}, headers=auth(local.owner.token, **{"Idempotency-Key": "key-1"})
    )
    assert other_path.status_code == 409, other_path.text
    assert other_path.json()["error"]["code"] == "idempotency_key_reused"

    assert local.snapshot() == snapshot, "a refused replay created something"
    local.run_operations()
    assert [p["name"] for p in local.store.all("SELECT name FROM projects")] == ["shop"]


def test_keys_belong_to_one_caller(local: LocalEnv) -> None:
    alice, bob = local.make_user("admin"), local.make_user("admin")
    mine = _post_project(local, "alpha", "shared-key", alice.token)
    # Bob's "shared-key" is his own: another body is not a reuse, the same body is not a replay.
    theirs = _post_project(local, "beta", "shared-key", bob.token)
    assert (mine.status_code, theirs.status_code) == (202, 202), theirs.text
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert theirs.json()["actor"] == {"kind": "user", "id": bob.id}

    carol = local.make_user("admin")
    same_body = _post_project(local, "alpha", "shared-key", carol.token)
    assert same_body.status_code == 202, same_body.text
    assert "Idempotent-Replayed" not in same_body.headers
    assert same_body.json()["id"] not in (mine.json()["id"], theirs.json()["id"])

    # Each caller's own retry replays their own answer.
    again = _post_project(local, "beta", "shared-key", bob.token)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == theirs.json()["id"]
    assert local.store.count("idempotency") == 3

    local.run_operations()
    states = {op_id: local.operation(op_id)["state"] for op_id in (mine.json()["id"], same_body.json()["id"])}
    assert sorted(states.values()) == ["failed", "succeeded"]  # two different requests raced for "alpha"
    assert sorted(p["name"] for p in local.store.all("SELECT name FROM projects")) == ["alpha", "beta"]


def test_a_replayed_token_creation_creates_one_token(local: LocalEnv) -> None:
    headers = auth(local.owner.token, **{"Idempotency-Key": "tok-key"})
    before = local.store.count("tokens")
    first = local.client.post(f"{BASE}/tokens", json={"name": "ci"}, headers=headers)
    second = local.client.post(f"{BASE}/tokens", json={"name": "ci"}, headers=headers)
    # The secret was shown once and is stored nowhere, so the replay cannot repeat the answer: it says so and
    # names the token it created, and still creates nothing.
    assert (first.status_code, second.status_code) == (201, 409)
    assert second.json()["error"]["code"] == "secret_shown_once"
    assert second.json()["error"]["details"]["first"]["id"] == first.json()["id"]
    assert "secret" not in second.json()["error"]["details"]["first"]
    assert local.store.count("tokens") == before + 1


# -- ten concurrent copies against a real server -----------------------------------------------------------------
def test_ten_concurrent_copies_create_one_project(local: LocalEnv, live_url: str) -> None:
    copies = 10
    barrier = threading.Barrier(copies)
    headers = auth(local.owner.token, **{"Idempotency-Key": "concurrent-key"})

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=live_url, timeout=30) as client:
            barrier.wait(timeout=10)
            return client.post(f"{BASE}/projects", json={"name": "rush"}, headers=headers)

    with ThreadPoolExecutor(max_workers=copies) as pool:
        responses = list(pool.map(send, range(copies)))

    assert [r.status_code for r in responses] == [202] * copies, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == copies - 1
    assert len({r.headers["X-Request-Id"] for r in responses}) == copies
    assert local.store.count("operations") == 1
    assert local.store.count("idempotency") == 1

    local.run_operations()
    assert local.store.count("projects") == 1
    assert local.operation(responses[0].json()["id"])["state"] == "succeeded"


def test_token_secrets_are_not_stored_in_clear(local: LocalEnv) -> None:
    headers = auth(local.owner.token, **{"Idempotency-Key": "secret-key"})
    secret = local.client.post(f"{BASE}/tokens", json={"name": "ci"}, headers=headers).json()["secret"]
    dump = "\n".join(local.store.conn.iterdump())
    assert secret not in dump
