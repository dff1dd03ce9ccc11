"""The runtime's keys and reads through the API, in process: what the server refuses before anything is recorded."""

from __future__ import annotations

import copy

import pytest

from ._cases import EMPTY_CONFIG, Target, _app_path, _deployment_body, _preview_ready, live_allocation
from .conftest import LocalEnv


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("drain_timeout", -1),
        ("drain_timeout", 3601),
        ("drain_timeout", 1e308),
        ("drain_timeout", "abc"),
        ("drain_timeout", True),
        ("readiness", "grpc"),
        ("readiness", 1),
    ],
)
def test_a_raw_request_with_a_bad_runtime_key_is_refused_and_records_nothing(local: LocalEnv, key, value) -> None:
    """The CLI validates these in rhone.toml; a raw API request gets the same rules from the server."""
    path = _app_path(local, Target())
    body = _deployment_body()
    body["config"] = copy.deepcopy(EMPTY_CONFIG)
    body["config"]["process"][key] = value
    before = local.snapshot()
    response = local.client.post(f"{path}/deployments", json=body, headers=local.owner.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert ["body", "config", "process", key] in [p["loc"] for p in error["details"]["problems"]]
    assert local.snapshot() == before


def test_the_documented_runtime_keys_are_accepted(local: LocalEnv) -> None:
    path = _app_path(local, Target())
    body = _deployment_body()
    body["config"] = copy.deepcopy(EMPTY_CONFIG)
    body["config"]["process"].update(drain_timeout=0, readiness="tcp")
    assert local.client.post(f"{path}/deployments", json=body, headers=local.owner.headers).status_code == 202


# -- logs -------------------------------------------------------------------------------------------------------------
def _allocation_with_log(local: LocalEnv, target: Target, lines: list[str]) -> tuple[str, dict]:
    """A deployment's allocation row and its log file (written directly: the runner is not under test here)."""
    alloc = live_allocation(local, _preview_ready(local, target))
    log = local.client.app.state.ports.logs.log_path(alloc["id"])
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(line + "\n" for line in lines))
    return _app_path(local, target) + "/logs", alloc


def test_logs_are_prefixed_by_allocation_and_a_cursor_reads_only_what_is_new(local: LocalEnv) -> None:
    path, alloc = _allocation_with_log(local, Target(), ["one", "two"])
    developer = local.make_user("developer")
    first = local.client.get(path, headers=developer.headers)
    assert first.status_code == 200, first.text
    assert [(line["allocation_id"], line["text"]) for line in first.json()["lines"]] == [
        (alloc["id"], "one"),
        (alloc["id"], "two"),
    ]
    log = local.client.app.state.ports.logs.log_path(alloc["id"])
    with log.open("a") as handle:
        handle.write("three\npartial")  # a line without its newline yet waits for it
    again = local.client.get(path, params={"cursor": first.json()["cursor"]}, headers=developer.headers)
    assert [line["text"] for line in again.json()["lines"]] == ["three"]
    assert again.json()["truncated"] is False


def test_logs_wait_for_new_output_when_following(local: LocalEnv) -> None:
    import threading

    path, alloc = _allocation_with_log(local, Target(), ["old"])
    cursor = local.client.get(path, headers=local.owner.headers).json()["cursor"]
    log = local.client.app.state.ports.logs.log_path(alloc["id"])

    def write_later() -> None:
        import time

        time.sleep(0.5)
        with log.open("a") as handle:
            handle.write("new\n")

    writer = threading.Thread(target=write_later)
    writer.start()
    answer = local.client.get(path, params={"cursor": cursor, "wait": 20}, headers=local.owner.headers)
    writer.join()
    assert [line["text"] for line in answer.json()["lines"]] == ["new"]


def test_a_response_is_bounded_and_says_more_is_there(local: LocalEnv) -> None:
    from rhone_local.app_logs import MAX_RESPONSE_BYTES

    lines = [f"{index:06d} " + "x" * 1000 for index in range(MAX_RESPONSE_BYTES // 1000 + 50)]
    path, alloc = _allocation_with_log(local, Target(), lines)
    log = local.client.app.state.ports.logs.log_path(alloc["id"])
    read, cursor, pages = [], None, 0
    while True:
        params = {"deployment": alloc["deployment_id"], **({"cursor": cursor} if cursor else {})}
        page = local.client.get(path, params=params, headers=local.owner.headers).json()
        pages += 1
        assert sum(len(line["text"]) + 1 for line in page["lines"]) <= MAX_RESPONSE_BYTES
        read += [line["text"] for line in page["lines"]]
        cursor = page["cursor"]
        if not page["truncated"]:
            break
    assert pages >= 2 and read == lines and log.stat().st_size > MAX_RESPONSE_BYTES


def test_since_starts_at_the_checkpoint_before_the_window(local: LocalEnv) -> None:
    import time

    from rhone_local.app_logs import note_checkpoint

    path, alloc = _allocation_with_log(local, Target(), ["an hour ago"])
    log = local.client.app.state.ports.logs.log_path(alloc["id"])
    note_checkpoint(log, now=time.time() - 3600)
    with log.open("a") as handle:
        handle.write("just now\n")
    note_checkpoint(log)
    answer = local.client.get(path, params={"since": 600}, headers=local.owner.headers).json()
    assert [line["text"] for line in answer["lines"]] == ["just now"]


def test_logs_are_for_developers_and_above_and_never_for_runtime_identities(local: LocalEnv) -> None:
    target = Target()
    path, _ = _allocation_with_log(local, target, ["secret-ish output"])
    viewer = local.make_user("viewer")
    runtime = local.mint_runtime_identity(target.project, target.app)
    for actor, code in ((viewer, "insufficient_role"), (runtime, "forbidden")):
        response = local.client.get(path, headers=actor.headers)
        assert (response.status_code, response.json()["error"]["code"]) == (403, code)
        assert "secret-ish" not in response.text


@pytest.mark.parametrize("cursor", ["not-base64!", "e30", "eyJ4IjoxfQ", "eyJhbGxvY19hIjotMX0"])
def test_a_cursor_the_server_never_issued_is_refused(local: LocalEnv, cursor: str) -> None:
    path, _ = _allocation_with_log(local, Target(), ["x"])
    response = local.client.get(path, params={"cursor": cursor}, headers=local.owner.headers)
    if cursor == "e30":  # {} is a valid (empty) position: everything from the start
        assert response.status_code == 200 and [line["text"] for line in response.json()["lines"]] == ["x"]
        return
    assert (response.status_code, response.json()["error"]["code"]) == (409, "invalid_cursor")
