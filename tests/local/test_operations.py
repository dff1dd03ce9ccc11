"""Operations: leases and compare-and-swap keep stale workers harmless, crashes resume from the last durable stage,
the unique index decides name races, stage history is evidence, and long-polls answer on the next recorded stage."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest

from rhone_local import notify
from rhone_local.domain.operations import MACHINES, TENANCY, TERMINAL_STATES
from rhone_local.notify import ChangeNotifier, ChangeWatch
from rhone_local.workers import Workers

from .conftest import BASE, LocalEnv

LEASE = 0.05  # for the worker meant to go stale: its lease runs out while the test waits
HELD = 30.0  # for the worker meant to write: its writes check its lease against the wall clock, so a loaded machine
# must not be able to run it out between a claim and the next write


class RecordingNotifier(ChangeNotifier):
    """Counts long-poll waits and change notifications, and signals once a long-poll is actually waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0
        self.waiting = threading.Event()
        self.changes: Counter[str] = Counter()
        self.woken_after_change: list[bool] = []

    def changed(self, op_id: str) -> None:
        self.changes[op_id] += 1
        super().changed(op_id)

    async def wait_for_change(self, watch: ChangeWatch, timeout: float) -> None:
        import asyncio

        self.waits += 1
        before = self.changes[watch.op_id]
        # Runs once the waiter is registered and the coroutine is suspended on its event (after the first await).
        asyncio.get_running_loop().call_soon(self.waiting.set)
        await super().wait_for_change(watch, timeout)
        self.woken_after_change.append(self.changes[watch.op_id] > before)


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


def _start_project(local: LocalEnv, name: str = "shop") -> dict[str, Any]:
    response = local.client.post(f"{BASE}/projects", json={"name": name}, headers=local.owner.headers)
    assert response.status_code == 202, response.text
    return response.json()


def _row(local: LocalEnv, op_id: str) -> dict[str, Any]:
    return local.operation(op_id)


def _wait_past_lease(op: dict[str, Any]) -> None:
    for _ in range(100):
        if time.time() > op["lease_until"]:
            return
        time.sleep(LEASE / 2)
    raise AssertionError("the lease never expired")


def _assert_valid_history(op: dict[str, Any]) -> None:
    machine = MACHINES[op["kind"]]
    states = [stage["state"] for stage in op["stages"]]
    assert states[0] == "queued"
    assert states[-1] == op["state"]
    assert op["version"] == len(states)
    for current, new in itertools.pairwise(states):
        assert machine.allowed(current, new), f"{current} → {new} in {states}"


@pytest.fixture
def short_lease(local: LocalEnv) -> Workers:
    return Workers(local.store, local.notifier, count=1, lease_seconds=LEASE, stage_delay=0)


@pytest.fixture
def held_lease(local: LocalEnv) -> Workers:
    return Workers(local.store, local.notifier, count=1, lease_seconds=HELD, stage_delay=0)


# -- stale workers -----------------------------------------------------------------------------------------------
def test_stale_worker_with_an_old_version_changes_nothing(
    local: LocalEnv, short_lease: Workers, held_lease: Workers
) -> None:
    op_id = _start_project(local)["id"]
    seen_by_a = local.store.claim_operation("worker-a", LEASE, TERMINAL_STATES)
    assert seen_by_a is not None and seen_by_a["id"] == op_id and seen_by_a["version"] == 1

    _wait_past_lease(seen_by_a)
    seen_by_b = local.store.claim_operation("worker-b", HELD, TERMINAL_STATES)
    assert seen_by_b is not None and seen_by_b["id"] == op_id and seen_by_b["lease_owner"] == "worker-b"
    advanced = held_lease.step(seen_by_b, "worker-b")
    assert (advanced["state"], advanced["version"]) == ("validating", 2)
    truth = _row(local, op_id)

    # Worker A wakes up with version 1: its write is refused whether or not it names itself as lease owner.
    assert local.store.advance_operation(seen_by_a, "validating", worker="worker-a") is None
    assert local.store.advance_operation(seen_by_a, "failed", error={"code": "late", "message": "late"}) is None
    short_lease.drive(seen_by_a, "worker-a")  # the whole driver: a stale write, dropped
    after = _row(local, op_id)
    assert after == truth
    assert (after["state"], after["version"], len(after["stages"])) == ("validating", 2, 2)
    assert after["lease_owner"] == "worker-b", "the stale worker released a lease it no longer held"


def test_worker_whose_lease_was_taken_cannot_write_even_at_the_current_version(local: LocalEnv) -> None:
    op_id = _start_project(local)["id"]
    seen_by_a = local.store.claim_operation("worker-a", LEASE, TERMINAL_STATES)
    assert seen_by_a is not None
    _wait_past_lease(seen_by_a)
    seen_by_b = local.store.claim_operation("worker-b", HELD, TERMINAL_STATES)
    assert seen_by_b is not None and seen_by_b["version"] == seen_by_a["version"] == 1
    taken = _row(local, op_id)

    assert local.store.advance_operation(seen_by_a, "validating", worker="worker-a") is None
    assert _row(local, op_id) == taken
    # The current lease holder, with the same version, can.
    moved = local.store.advance_operation(seen_by_b, "validating", worker="worker-b")
    assert moved is not None and (moved["state"], moved["version"]) == ("validating", 2)


def test_a_live_lease_is_never_taken(local: LocalEnv) -> None:
    op_id = _start_project(local)["id"]
    held = local.store.claim_operation("holder", 30.0, TERMINAL_STATES)
    assert held is not None and held["id"] == op_id
    assert local.store.claim_operation("other", 30.0, TERMINAL_STATES) is None
    renewed = local.store.advance_operation(held, "validating", worker="holder", lease_seconds=30.0)
    assert renewed is not None and renewed["lease_owner"] == "holder"
    assert local.store.claim_operation("other", 30.0, TERMINAL_STATES) is None
    local.store.release_operation(op_id, "other")  # not the holder: no effect
    assert _row(local, op_id)["lease_owner"] == "holder"
    local.store.release_operation(op_id, "holder")
    assert local.store.claim_operation("other", 30.0, TERMINAL_STATES)["id"] == op_id


# -- the state machine -----------------------------------------------------------------------------------------------
def test_tenancy_machine_never_moves_backwards() -> None:
    path = TENANCY.happy_path
    allowed = {(current, new) for current in TENANCY.states for new in TENANCY.states if TENANCY.allowed(current, new)}
    # The whole transition table, written out (not re-derived from the implementation).
    assert allowed == {
        ("queued", "validating"),
        ("validating", "applying"),
        ("applying", "succeeded"),
        ("queued", "failed"),
        ("validating", "failed"),
        ("applying", "failed"),
    }
    # Spelled out: no step back, no skip, no stay, nothing out of a terminal state.
    assert not TENANCY.allowed("applying", "validating")
    assert not TENANCY.allowed("validating", "queued")
    assert not TENANCY.allowed("queued", "applying")
    assert not TENANCY.allowed("validating", "validating")
    assert not TENANCY.allowed("succeeded", "failed")
    assert not TENANCY.allowed("failed", "queued")
    assert [TENANCY.next_state(s) for s in path] == [*path[1:], None]


def test_driven_operations_only_move_forward(local: LocalEnv) -> None:
    project = local.create_project("shop")
    app = local.create_app(project, "web")
    env_op = local.client.post(
        f"{BASE}/projects/shop/apps/web/environments", json={"name": "staging"}, headers=local.owner.headers
    ).json()
    other_project = _start_project(local, "shop2")
    local.run_operations()
    for op_id in (project["operation_id"], app["operation_id"], env_op["id"], other_project["id"]):
        op = _row(local, op_id)
        assert op["state"] == "succeeded"
        _assert_valid_history(op)


# -- crashes ---------------------------------------------------------------------------------------------------------
def test_drive_resumes_a_crashed_operation_from_its_recorded_stage(local: LocalEnv) -> None:
    op_id = _start_project(local)["id"]
    op = local.store.claim_operation("crashed", 5.0, TERMINAL_STATES)
    assert op is not None
    op = local.store.advance_operation(op, "validating", evidence={"by": "crashed"}, worker="crashed")
    assert op is not None
    op = local.store.advance_operation(op, "applying", evidence={"by": "crashed"}, worker="crashed")
    assert op is not None
    local.store.release_operation(op_id, "crashed")

    assert local.run_operations(worker="successor") == [op_id]
    done = _row(local, op_id)
    assert done["state"] == "succeeded"
    assert [s["state"] for s in done["stages"]] == ["queued", "validating", "applying", "succeeded"]
    assert [s["evidence"] for s in done["stages"][1:3]] == [{"by": "crashed"}, {"by": "crashed"}], "stages redone"
    assert local.store.count("projects") == 1
    assert local.store.one("SELECT operation_id FROM projects")["operation_id"] == op_id
    _assert_valid_history(done)


def test_a_killed_worker_is_replaced_once_its_lease_expires(
    local: LocalEnv, short_lease: Workers, held_lease: Workers
) -> None:
    op_id = _start_project(local)["id"]
    op = local.store.claim_operation("killed", HELD, TERMINAL_STATES)
    assert op is not None
    op = held_lease.step(op, "killed")
    op = short_lease.step(op, "killed")  # written under the held lease; it renews the lease to LEASE seconds
    assert op["state"] == "applying"
    # "killed": no release; the successor gets it once the lease has run out.
    _wait_past_lease(op)
    assert local.run_operations(worker="successor") == [op_id]
    assert _row(local, op_id)["state"] == "succeeded"
    assert local.store.count("projects") == 1


class Killed(BaseException):
    """A process death in the middle of the apply transaction (not an Exception: the driver cannot handle it)."""


def test_a_kill_inside_the_apply_transaction_leaves_neither_effect_nor_state(
    local: LocalEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rhone_local.operations import tenancy

    op_id = _start_project(local)["id"]
    real_apply = tenancy.apply

    def apply_then_die(store: Any, op: dict[str, Any], c: Any) -> dict[str, Any]:
        real_apply(store, op, c)  # the project row is inserted…
        raise Killed  # …and the process dies before the state change commits

    monkeypatch.setattr(tenancy, "apply", apply_then_die)
    with pytest.raises(Killed):
        local.run_operations(worker="doomed")
    assert local.store.count("projects") == 0
    stuck = _row(local, op_id)
    assert (stuck["state"], stuck["lease_owner"]) == ("applying", None)

    monkeypatch.setattr(tenancy, "apply", real_apply)
    assert local.run_operations(worker="successor") == [op_id]
    assert _row(local, op_id)["state"] == "succeeded"
    assert local.store.count("projects") == 1


# -- name races ------------------------------------------------------------------------------------------------------
def _assert_one_winner(local: LocalEnv, first: str, second: str) -> None:
    ops = [_row(local, first), _row(local, second)]
    assert sorted(op["state"] for op in ops) == ["failed", "succeeded"]
    loser = next(op for op in ops if op["state"] == "failed")
    winner = next(op for op in ops if op["state"] == "succeeded")
    assert loser["error"]["code"] == "name_taken"
    assert loser["stages"][-1]["error"]["code"] == "name_taken"
    assert local.store.all("SELECT id, operation_id FROM projects WHERE name = 'shop'") == [
        {"id": winner["target_id"], "operation_id": winner["id"]}
    ]
    for op in ops:
        _assert_valid_history(op)


def test_two_operations_for_one_name_one_after_the_other(local: LocalEnv) -> None:
    first, second = _start_project(local)["id"], _start_project(local)["id"]
    assert sorted(local.run_operations()) == sorted([first, second])
    _assert_one_winner(local, first, second)
    loser = next(_row(local, i) for i in (first, second) if _row(local, i)["state"] == "failed")
    assert loser["stages"][-2]["state"] == "validating"  # refused by validation: the winner had already applied


def test_two_operations_for_one_name_interleaved(local: LocalEnv) -> None:
    """Both pass validation before either applies: the unique index decides, the loser fails cleanly."""
    first, second = _start_project(local)["id"], _start_project(local)["id"]
    op_a = local.store.claim_operation("worker-a", 5.0, TERMINAL_STATES)
    op_b = local.store.claim_operation("worker-b", 5.0, TERMINAL_STATES)
    assert {op_a["id"], op_b["id"]} == {first, second}
    workers = local.workers
    for _ in range(2):  # queued → validating → applying, in lock step
        op_a, op_b = workers.step(op_a, "worker-a"), workers.step(op_b, "worker-b")
    assert (op_a["state"], op_b["state"]) == ("applying", "applying")
    op_a, op_b = workers.step(op_a, "worker-a"), workers.step(op_b, "worker-b")
    assert (op_a["state"], op_b["state"]) == ("succeeded", "failed")
    assert _row(local, op_b["id"])["stages"][-2]["state"] == "applying"  # refused by the unique index
    _assert_one_winner(local, first, second)


# -- stage history ---------------------------------------------------------------------------------------------------
def _parse(ts: str) -> datetime:
    assert ts.endswith("Z"), ts
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_stage_history_has_timestamps_and_evidence(local: LocalEnv) -> None:
    project = local.create_project("shop")
    app = local.create_app(project, "web")

    response = local.client.get(f"/v1/operations/{app['operation_id']}", headers=local.owner.headers)
    assert response.status_code == 200
    op = response.json()
    assert op["state"] == "succeeded" and op["terminal"] is True and op["error"] is None
    assert op["links"] == {"self": f"/v1/operations/{op['id']}"}
    stages = op["stages"]
    assert [s["state"] for s in stages] == ["queued", "validating", "applying", "succeeded"]
    assert op["version"] == len(stages)
    times = [_parse(s["entered_at"]) for s in stages]
    assert times == sorted(times)
    assert _parse(op["created_at"]) == times[0] and _parse(op["updated_at"]) == times[-1]
    assert all(s["error"] is None for s in stages)
    assert stages[0]["evidence"] == {}
    assert stages[2]["evidence"] == {"name_available": True, "parent_exists": True}
    final = stages[3]["evidence"]
    assert final["app_id"] == app["id"] == op["target_id"]
    assert set(final["environment_ids"]) == {"preview", "production"}
    assert final["runtime_identity_id"].startswith("rid_")

    project_op = local.client.get(f"/v1/operations/{project['operation_id']}", headers=local.owner.headers).json()
    assert project_op["stages"][-1]["evidence"] == {"project_id": project["id"]}


# -- long-polling ----------------------------------------------------------------------------------------------------
def test_long_poll_answers_when_a_worker_records_the_next_stage(
    local: LocalEnv, notifier: RecordingNotifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No periodic re-check inside the 5 s wait: only the notification can end the one wait before its deadline.
    monkeypatch.setattr(notify, "RECHECK_SECONDS", 60.0)
    started = _start_project(local)
    op_id, version = started["id"], started["version"]

    with ThreadPoolExecutor(max_workers=1) as pool:
        poll = pool.submit(
            local.client.get,
            f"/v1/operations/{op_id}",
            params={"wait": 5, "after_version": version},
            headers=local.owner.headers,
        )
        assert notifier.waiting.wait(10), "the long-poll never waited"
        assert not poll.done()
        op = local.store.claim_operation("worker", 5.0, TERMINAL_STATES)
        assert op is not None
        local.workers.step(op, "worker")  # one stage, durably recorded …
        notifier.changed(op_id)  # … then announced, as `drive` does
        response = poll.result(timeout=10)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] > version
    assert body["state"] == "validating"
    assert notifier.waits == 1
    assert notifier.woken_after_change == [True]


def test_long_poll_on_a_terminal_operation_returns_at_once(local: LocalEnv, notifier: RecordingNotifier) -> None:
    op_id = _start_project(local)["id"]
    local.run_operations()
    final = _row(local, op_id)
    assert final["state"] == "succeeded"

    waits_before = notifier.waits
    response = local.client.get(
        f"/v1/operations/{op_id}", params={"wait": 5, "after_version": final["version"]}, headers=local.owner.headers
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["terminal"], body["version"]) == ("succeeded", True, final["version"])
    assert notifier.waits == waits_before, "a terminal operation was waited on"


def test_long_poll_behind_the_current_version_returns_at_once(local: LocalEnv, notifier: RecordingNotifier) -> None:
    op_id = _start_project(local)["id"]
    op = local.store.claim_operation("worker", 5.0, TERMINAL_STATES)
    local.workers.step(op, "worker")
    response = local.client.get(
        f"/v1/operations/{op_id}", params={"wait": 5, "after_version": 1}, headers=local.owner.headers
    )
    assert response.status_code == 200
    assert (response.json()["state"], response.json()["version"]) == ("validating", 2)
    assert notifier.waits == 0


def test_deploy_and_promotion_machines_are_exactly_the_published_ones() -> None:
    from rhone_local.domain.operations import DEPLOY, PROMOTE, ROLLBACK

    def table(machine) -> set[tuple[str, str]]:
        return {(c, n) for c in machine.states for n in machine.states if machine.allowed(c, n)}

    forward = [
        ("queued", "cloning"),
        ("cloning", "building"),
        ("building", "validating"),
        ("validating", "preview_ready"),
    ]
    assert table(DEPLOY) == {
        *forward,
        ("validating", "blocked"),  # a gate that needs a person
        ("blocked", "validating"),  # an approval resumes validation
        *((s, "failed") for s in ("queued", "cloning", "building", "validating", "blocked")),
    }
    stages = ["requested", "policy_check", "route_cas", "edge_propagating"]
    for machine, final in ((PROMOTE, "healthy"), (ROLLBACK, "rolled_back")):
        steps = list(zip(stages, [*stages[1:], final], strict=True))
        assert table(machine) == {*steps, *((s, "failed") for s in stages)}


def test_binding_scale_and_region_machines_are_exactly_the_published_ones() -> None:
    from rhone_local.domain.operations import BIND, REGION_ENABLE, SCALE, UNBIND

    def table(machine) -> set[tuple[str, str]]:
        return {(c, n) for c in machine.states for n in machine.states if machine.allowed(c, n)}

    assert table(BIND) == {
        ("requested", "binding"),
        ("binding", "bound"),
        ("requested", "failed"),
        ("binding", "failed"),
    }
    assert table(UNBIND) == {
        ("requested", "unbinding"), ("unbinding", "unbound"), ("requested", "failed"), ("unbinding", "failed")
    }  # fmt: skip
    scale = ["requested", "gate_check", "scaling"]
    assert table(SCALE) == {*zip(scale, [*scale[1:], "scaled"], strict=True), *((s, "failed") for s in scale)}
    # Region Enablement (docs/state-machines.md): a gate that does not hold ends it `disabled` — never `failed`.
    region = ["requested", "provisioning", "binding_services", "replicating_artifacts"]
    assert table(REGION_ENABLE) == {
        *zip(region, [*region[1:], "eligible"], strict=True),
        *((s, "disabled") for s in region),
    }
    assert not REGION_ENABLE.allowed("provisioning", "failed") and not REGION_ENABLE.allowed("eligible", "disabled")
