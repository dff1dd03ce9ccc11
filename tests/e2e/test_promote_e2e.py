"""`rhone promote`, `rhone rollback` and route ownership end to end: the real `rhone` against a real Rhone Local
(started by `rhone local up`), promoting copies of examples/hello through the real pipeline, runner and edge.

Production is reached the way a program that cannot resolve `*.localhost` reaches it: connect to the edge on
127.0.0.1 and name the route in the Host header (`hello--production.localhost`). Every refusal asserts the exact
exit code and error code, and that nothing moved: the route's owner, its epoch and its events are unchanged, no
operation was started and no allocation was made.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx

from rhone_cli.services.local import process_alive
from tests.conftest import REPO, assert_matches_schema
from tests.e2e.helpers import db_rows, set_version, wait_until

HELLO = REPO / "examples" / "hello"
ROUTE_KEY = "hello--production"
PRODUCTION_HOST = f"{ROUTE_KEY}.localhost"
APP_PATH = "/v1/workspaces/local/projects/hello/apps/hello"
PROMOTION_STAGES = ["requested", "policy_check", "route_cas", "edge_propagating", "healthy"]
ROLLBACK_STAGES = [*PROMOTION_STAGES[:-1], "rolled_back"]
LIVE = ("planned", "pulling", "starting", "ready", "draining")


# -- helpers ---------------------------------------------------------------------------------------------------------
def hello_copy(root: Path, name: str = "hello", *, version: str = "1.0.0", extra: str = "") -> Path:
    """A copy of examples/hello (without its checked-in link to some other server) answering `version`."""
    app_dir = root / name
    shutil.copytree(HELLO, app_dir, ignore=shutil.ignore_patterns(".rhone", "__pycache__"))
    set_version(app_dir, version)
    if extra:
        (app_dir / "rhone.toml").write_text((app_dir / "rhone.toml").read_text() + "\n" + extra)
    return app_dir


def cli(server, app_dir: Path, *args: str, token: str | None = None, timeout: float = 90):
    return server.rhone(*args, cwd=app_dir, timeout=timeout, environ={"RHONE_TOKEN": token} if token else None)


def ok_json(server, app_dir: Path, *args: str, token: str | None = None):
    result = cli(server, app_dir, *args, "--json", token=token)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.json()


def refused(server, app_dir: Path, *args: str, exit_code: int, code: str, token: str | None = None) -> dict:
    """A command that must fail with `exit_code` and the error `code`; returns the error body."""
    result = cli(server, app_dir, *args, "--json", token=token)
    assert result.exit_code == exit_code, (args, result.exit_code, result.stdout, result.stderr)
    document = result.json()
    assert_matches_schema(document, "error.schema.json")
    error = document["error"]
    assert error["code"] == code, (args, error)
    assert error["exit_code"] == exit_code
    return error


def production(server, path: str = "/") -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.edge_port}{path}", headers={"Host": PRODUCTION_HOST}, timeout=10)


def edge_host(server, host: str, path: str = "/") -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.edge_port}{path}", headers={"Host": host}, timeout=10)


def route_owner(server, environment: str = "production") -> tuple[str, int] | None:
    rows = db_rows(
        server,
        "SELECT r.deployment_id, r.epoch FROM route_owners r JOIN environments e ON e.id = r.environment_id "
        "WHERE r.route_key = ? AND e.name = ?",
        f"hello--{environment}",
        environment,
    )
    return (rows[0]["deployment_id"], rows[0]["epoch"]) if rows else None


def environment_allocations(server, environment: str = "production") -> list[dict]:
    return db_rows(
        server,
        "SELECT a.* FROM allocations a JOIN environments e ON e.id = a.environment_id "
        "JOIN apps p ON p.id = e.app_id WHERE e.name = ? AND p.name = 'hello' ORDER BY a.id",
        environment,
    )


def world(server) -> dict:
    """Everything a refused promotion must leave as it was."""
    return {
        "owners": db_rows(server, "SELECT * FROM route_owners ORDER BY route_key"),
        "events": db_rows(server, "SELECT * FROM route_events ORDER BY seq"),
        "route_ops": db_rows(server, "SELECT id FROM operations WHERE kind IN ('promote', 'rollback') ORDER BY id"),
        "allocations": db_rows(server, "SELECT id, deployment_id, environment_id FROM allocations ORDER BY id"),
        "frozen": db_rows(server, "SELECT name, frozen FROM environments ORDER BY id"),
    }


def owner_headers(server, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.owner_token()}", **extra}


def wait_operation(server, op: dict, timeout: float = 90) -> dict:
    """Long-poll an operation until it is terminal (or parked)."""
    deadline = time.monotonic() + timeout
    while not op["terminal"] and op["state"] != "blocked":
        assert time.monotonic() < deadline, f"operation {op['id']} still {op['state']}"
        response = httpx.get(
            f"{server.api_url}/v1/operations/{op['id']}",
            params={"wait": "10", "after_version": op["version"]},
            headers=owner_headers(server),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        op = response.json()
    return op


def member_token(server, app_dir: Path, role: str) -> str:
    """Invite a member with `role` (through the CLI) and issue a token for them (as the owner)."""
    email = f"{role}-{time.monotonic_ns()}@example.test"
    member = ok_json(server, app_dir, "workspace", "invite", email, "--role", role)
    issued = httpx.post(
        f"{server.api_url}/v1/workspaces/local/tokens",
        json={"name": f"{role} token", "user_id": member["user_id"]},
        headers=owner_headers(server),
        timeout=10,
    )
    assert issued.status_code == 201, issued.text
    return issued.json()["secret"]


def runtime_token(server) -> str:
    minted = httpx.post(f"{server.api_url}{APP_PATH}/runtime-identities", headers=owner_headers(server), timeout=10)
    assert minted.status_code == 201, minted.text
    return minted.json()["token"]["secret"]


def assert_serves(server, deployment_id: str, version: str) -> None:
    answer = production(server)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["deployment"], body["version"], body["environment"]) == (deployment_id, version, "production")


def assert_one_ready_production_allocation(server, owner: str) -> None:
    """The owner's allocation is the only live production allocation; every other one is stopped or failed and
    its process is gone (no allocation leaks). An allocation released by a failed promotion is recorded failed
    first and drains right after (SIGTERM, then a grace period), so a draining one gets time to finish."""

    def settled() -> bool:
        return all(a["state"] != "draining" for a in environment_allocations(server))

    assert wait_until(settled, timeout=60), [(a["id"], a["state"]) for a in environment_allocations(server)]
    allocations = environment_allocations(server)
    ready = [a for a in allocations if a["state"] == "ready"]
    assert [a["deployment_id"] for a in ready] == [owner], [
        (a["deployment_id"], a["state"], a["health"]) for a in allocations
    ]
    assert process_alive(ready[0]["pid"])
    for alloc in allocations:
        if alloc["id"] == ready[0]["id"]:
            continue
        assert alloc["state"] in ("stopped", "failed"), alloc
        assert not process_alive(alloc["pid"]), alloc


def deployed_and_promoted(doc: dict) -> dict:
    """`deploy --promote --json` is {"deployment", "promotion"}: check its schema, then flatten for the asserts."""
    assert_matches_schema(doc, "deploy-promote.schema.json")
    return {**doc["deployment"], "promotion": doc["promotion"]}


# -- the README flow -------------------------------------------------------------------------------------------------
def test_deploy_promote_twice_then_rollback_as_in_the_readme(local, tmp_path):
    app_dir = hello_copy(tmp_path)
    assert production(local).status_code == 404  # nothing owns the route yet

    first = deployed_and_promoted(ok_json(local, app_dir, "deploy", "--promote"))
    assert first["state"] == "preview_ready"
    promotion = first["promotion"]
    assert_matches_schema(promotion, "route-move.schema.json")
    assert promotion["route_key"] == ROUTE_KEY and promotion["environment"] == "production"
    assert (promotion["epoch"], promotion["deployment_id"], promotion["state"]) == (1, first["id"], "healthy")
    assert promotion["artifact_digest"] == first["artifact_digest"]  # the validated artifact, never rebuilt
    assert promotion["previous_owner"] is None
    assert promotion["url"] == f"http://{PRODUCTION_HOST}:{local.edge_port}"
    assert_serves(local, first["id"], "1.0.0")
    op = local.json("op", "show", promotion["operation_id"])
    assert [s["state"] for s in op["stages"]] == PROMOTION_STAGES

    set_version(app_dir, "2.0.0")
    second = deployed_and_promoted(ok_json(local, app_dir, "deploy", "--promote"))
    assert second["artifact_digest"] != first["artifact_digest"]
    moved = second["promotion"]
    assert_matches_schema(moved, "route-move.schema.json")
    assert (moved["epoch"], moved["deployment_id"], moved["previous_owner"]) == (2, second["id"], first["id"])
    assert_serves(local, second["id"], "2.0.0")
    assert_one_ready_production_allocation(local, second["id"])  # the first owner drained

    back = ok_json(local, app_dir, "rollback")
    assert_matches_schema(back, "route-move.schema.json")
    assert (back["state"], back["epoch"], back["deployment_id"]) == ("rolled_back", 3, first["id"])
    assert back["previous_owner"] == second["id"] and back["artifact_digest"] == first["artifact_digest"]
    assert [s["state"] for s in local.json("op", "show", back["operation_id"])["stages"]] == ROLLBACK_STAGES
    assert_serves(local, first["id"], "1.0.0")
    assert_one_ready_production_allocation(local, first["id"])

    history = ok_json(local, app_dir, "route", "history", "production")[::-1]  # newest first: read it in order
    assert_matches_schema(history, "route-history.schema.json")
    assert [(e["epoch"], e["kind"], e["deployment_id"], e["previous_deployment_id"]) for e in history] == [
        (1, "promote", first["id"], None),
        (2, "promote", second["id"], first["id"]),
        (3, "rollback", first["id"], second["id"]),
    ]
    assert [e["operation_id"] for e in history] == [
        promotion["operation_id"],
        moved["operation_id"],
        back["operation_id"],
    ]
    shown = ok_json(local, app_dir, "route", "show", "production")
    assert_matches_schema(shown, "route.schema.json")
    assert (shown["epoch"], shown["deployment_id"], shown["url"]) == (3, first["id"], promotion["url"])
    listed = ok_json(local, app_dir, "route", "ls")
    assert_matches_schema(listed, "route-list.schema.json")
    assert [(r["route_key"], r["epoch"]) for r in listed] == [(ROUTE_KEY, 3)]

    # `rhone promote` by id, with the digest and epoch it expects: the same route-move document.
    promoted = ok_json(
        local,
        app_dir,
        "promote",
        second["id"],
        "--env",
        "production",
        "--expect-digest",
        second["artifact_digest"],
        "--expect-epoch",
        "3",
    )
    assert_matches_schema(promoted, "route-move.schema.json")
    assert (promoted["state"], promoted["epoch"], promoted["deployment_id"]) == ("healthy", 4, second["id"])
    assert promoted["previous_owner"] == first["id"]
    assert_serves(local, second["id"], "2.0.0")
    assert_one_ready_production_allocation(local, second["id"])


# -- the race ----------------------------------------------------------------------------------------------------------
def test_twenty_concurrent_promotions_expecting_one_epoch_move_it_exactly_once(local, tmp_path):
    app_dir = hello_copy(tmp_path)
    base = deployed_and_promoted(ok_json(local, app_dir, "deploy", "--promote"))
    assert base["promotion"]["epoch"] == 1

    # Twenty more preview_ready deployments of the same artifact: the first deploy's manifest, posted again under
    # fresh Idempotency-Keys (its blobs are already on the server). One at a time: a newer preview supersedes an
    # older one that is still starting, which would fail it with readiness_failed.
    manifest = ok_json(local, app_dir, "artifact", "manifest")
    [row] = db_rows(local, "SELECT config FROM deployments WHERE id = ?", base["id"])
    body = {
        "manifest": manifest["manifest"],
        "manifest_digest": manifest["digest"],
        "config": json.loads(row["config"]),
    }
    candidates = []
    for index in range(20):
        created = httpx.post(
            f"{local.api_url}{APP_PATH}/deployments",
            json=body,
            headers=owner_headers(local, **{"Idempotency-Key": f"race-deploy-{index}"}),
            timeout=30,
        )
        assert created.status_code == 202, created.text
        done = wait_operation(local, created.json(), timeout=120)
        assert done["state"] == "preview_ready", (done["error"], done["stages"][-1])
        candidates.append(done["target_id"])
    assert len(set(candidates)) == 20 and base["id"] not in candidates

    barrier = threading.Barrier(len(candidates))
    outcomes: dict[str, tuple] = {}

    def promote(deployment_id: str) -> None:
        barrier.wait()
        response = httpx.post(
            f"{local.api_url}/v1/deployments/{deployment_id}/promote",
            json={"environment": "production", "expect_epoch": 1},
            headers=owner_headers(local),
            timeout=60,
        )
        if response.status_code == 409:
            outcomes[deployment_id] = ("refused", response.json()["error"]["code"], None)
            return
        assert response.status_code == 202, response.text
        op = wait_operation(local, response.json())
        outcomes[deployment_id] = (op["state"], (op["error"] or {}).get("code"), op)

    threads = [threading.Thread(target=promote, args=(d,)) for d in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert len(outcomes) == 20, outcomes

    winners = [d for d, (state, _, _) in outcomes.items() if state == "healthy"]
    losers = {d: (state, code) for d, (state, code, _) in outcomes.items() if state != "healthy"}
    assert len(winners) == 1, outcomes
    assert set(losers.values()) <= {("failed", "route_epoch_conflict"), ("refused", "route_epoch_conflict")}, losers
    assert len(losers) == 19
    [winner] = winners
    for state, _code, op in outcomes.values():
        if state == "failed":
            # Lost at the compare-and-swap: its error names the winner and the epoch it found.
            assert op["stages"][-1]["evidence"]["current_epoch"] == 2
            assert op["stages"][-1]["evidence"]["current_owner"] == winner
            assert "edge_propagating" not in [s["state"] for s in op["stages"]]

    assert route_owner(local) == (winner, 2)  # the epoch advanced by exactly one
    events = db_rows(local, "SELECT * FROM route_events WHERE route_key = ? ORDER BY seq", ROUTE_KEY)
    assert [(e["epoch"], e["deployment_id"], e["previous_deployment_id"]) for e in events] == [
        (1, base["id"], None),
        (2, winner, base["id"]),
    ]
    assert_serves(local, winner, "1.0.0")
    # Every allocation the losers started for production, and the previous owner's, is stopped and dead.
    assert_one_ready_production_allocation(local, winner)


# -- refusals ------------------------------------------------------------------------------------------------------
def test_refused_promotions_change_nothing(local, tmp_path):
    app_dir = hello_copy(tmp_path)
    owner = deployed_and_promoted(ok_json(local, app_dir, "deploy", "--promote"))
    set_version(app_dir, "2.0.0")
    candidate = ok_json(local, app_dir, "deploy")
    assert candidate["state"] == "preview_ready"
    epoch_one = (owner["id"], 1)
    assert route_owner(local) == epoch_one

    # A blocked deployment (a new migration awaiting approval) and a failed one (its build exits 3) of the same app.
    blocked_dir = hello_copy(tmp_path, "blocked", extra='[database]\nmigrations = "migrations"\n')
    (blocked_dir / "migrations").mkdir()
    (blocked_dir / "migrations" / "0001_init.sql").write_text("CREATE TABLE greetings (id INTEGER PRIMARY KEY);\n")
    blocked_error = refused(local, blocked_dir, "deploy", exit_code=6, code="migration_needs_approval")
    blocked_id = blocked_error["details"]["deployment_id"]
    failed_dir = hello_copy(tmp_path, "failed")
    toml = (failed_dir / "rhone.toml").read_text()
    (failed_dir / "rhone.toml").write_text(
        toml.replace('command = "python3 -m py_compile app.py"', 'command = "exit 3"')
    )
    failed_id = refused(local, failed_dir, "deploy", exit_code=1, code="build_failed")["details"]["deployment_id"]
    staging = ok_json(local, app_dir, "env", "create", "staging", "--approval-required")
    assert staging["approval_required"] is True

    developer, viewer, runtime = (
        member_token(local, app_dir, "developer"),
        member_token(local, app_dir, "viewer"),
        runtime_token(local),
    )
    before = world(local)
    assert_serves(local, owner["id"], "1.0.0")

    def unchanged(what: str) -> None:
        assert world(local) == before, f"{what} changed something"
        assert route_owner(local) == epoch_one
        assert_serves(local, owner["id"], "1.0.0")

    # A digest the deployment's artifact is not: promotion never rebuilds, so it never "fixes" the artifact.
    other_digest = "sha256:" + "0" * 64
    error = refused(
        local, app_dir, "promote", candidate["id"], "--expect-digest", other_digest, exit_code=5, code="digest_mismatch"
    )
    assert other_digest in error["message"] and candidate["artifact_digest"] in error["message"]
    unchanged("a digest mismatch")

    # Only preview_ready deployments can be promoted.
    for deployment_id, state in ((blocked_id, "blocked"), (failed_id, "failed")):
        error = refused(local, app_dir, "promote", deployment_id, exit_code=5, code="deployment_not_ready")
        assert state in error["message"]
        unchanged(f"promoting a {state} deployment")

    # An environment that requires approval: not without --approve; --approve only by owners and admins.
    error = refused(
        local, app_dir, "promote", candidate["id"], "--env", "staging", exit_code=6, code="approval_required"
    )
    unchanged("an unapproved promotion")
    refused(
        local,
        app_dir,
        "promote",
        candidate["id"],
        "--env",
        "staging",
        "--approve",
        token=developer,
        exit_code=3,
        code="insufficient_role",
    )
    unchanged("a developer's --approve")

    # Not allowed to promote at all: a viewer, and the app's own runtime identity.
    refused(local, app_dir, "promote", candidate["id"], token=viewer, exit_code=3, code="insufficient_role")
    unchanged("a viewer's promotion")
    refused(local, app_dir, "promote", candidate["id"], token=runtime, exit_code=3, code="runtime_identity_forbidden")
    refused(
        local, app_dir, "rollback", "--to", owner["id"], token=runtime, exit_code=3, code="runtime_identity_forbidden"
    )
    refused(
        local, app_dir, "env", "freeze", "production", token=runtime, exit_code=3, code="runtime_identity_forbidden"
    )
    unchanged("a runtime identity's promotion")

    # A stale --expect-epoch: the route is at 1, owned by the first deployment, and the error says so.
    error = refused(
        local, app_dir, "promote", candidate["id"], "--expect-epoch", "0", exit_code=5, code="route_epoch_conflict"
    )
    assert error["details"]["current_epoch"] == 1 and error["details"]["current_owner"] == owner["id"]
    assert "epoch 1" in error["message"]
    unchanged("a stale --expect-epoch")

    # Every refusal by role was audited as denied.
    audit = ok_json(local, app_dir, "workspace", "audit")
    denied = [(a["action"], a["actor_kind"], a["detail"]["code"]) for a in audit if a["result"] == "denied"]
    assert ("deployment.promote", "user", "insufficient_role") in denied
    assert denied.count(("deployment.promote", "runtime", "runtime_identity_forbidden")) == 1
    assert ("route.rollback", "runtime", "runtime_identity_forbidden") in denied
    assert ("environment.freeze", "runtime", "runtime_identity_forbidden") in denied

    # A frozen environment refuses promotions (exit 6) until it is unfrozen; unfreezing needs an admin.
    frozen = ok_json(local, app_dir, "env", "freeze", "production", token=developer)
    assert frozen["frozen"] is True
    before = world(local)
    refused(local, app_dir, "promote", candidate["id"], exit_code=6, code="environment_frozen")
    unchanged("a promotion to a frozen environment")
    refused(local, app_dir, "env", "unfreeze", "production", token=developer, exit_code=3, code="insufficient_role")
    unchanged("a developer's unfreeze")
    assert ok_json(local, app_dir, "env", "unfreeze", "production")["frozen"] is False
    promoted = ok_json(local, app_dir, "promote", candidate["id"], "--expect-epoch", "1")
    assert (promoted["state"], promoted["epoch"], promoted["previous_owner"]) == ("healthy", 2, owner["id"])
    assert_serves(local, candidate["id"], "2.0.0")
    assert_one_ready_production_allocation(local, candidate["id"])

    # And the approval an owner gives is recorded: the owner's --approve promotes to staging.
    approved = ok_json(local, app_dir, "promote", candidate["id"], "--env", "staging", "--approve")
    assert (approved["state"], approved["route_key"], approved["epoch"]) == ("healthy", "hello--staging", 1)
    op = local.json("op", "show", approved["operation_id"])
    assert op["params"]["approved_by"] == local.json("whoami")["identity"]["id"]


# -- rollback across migrations ------------------------------------------------------------------------------------
def _approved_deploy(server, app_dir: Path) -> dict:
    """Deploy an app whose new migration blocks it, then approve it (as the owner) until preview_ready."""
    blocked = refused(server, app_dir, "deploy", exit_code=6, code="migration_needs_approval")
    approved = ok_json(server, app_dir, "deploy", "approve", blocked["details"]["deployment_id"])
    assert approved["state"] == "preview_ready", approved
    return approved


def test_rollback_across_a_migration_needs_allow_unsafe_db_and_is_audited(local, tmp_path):
    app_dir = hello_copy(tmp_path, extra='[database]\nmigrations = "migrations"\n')
    migrations = app_dir / "migrations"
    migrations.mkdir()
    (migrations / "0001_init.sql").write_text("CREATE TABLE greetings (id INTEGER PRIMARY KEY);\n")
    first = _approved_deploy(local, app_dir)
    assert ok_json(local, app_dir, "promote", first["id"])["epoch"] == 1

    set_version(app_dir, "2.0.0")
    (migrations / "0002_names.sql").write_text("ALTER TABLE greetings ADD COLUMN name TEXT;\n")
    second = _approved_deploy(local, app_dir)
    assert ok_json(local, app_dir, "promote", second["id"])["epoch"] == 2
    assert_serves(local, second["id"], "2.0.0")

    before = world(local)
    error = refused(local, app_dir, "rollback", exit_code=6, code="rollback_unsafe_db")
    assert error["details"]["migrations"] == ["0002_names.sql"]
    assert "--allow-unsafe-db" in error["message"]
    assert world(local) == before and route_owner(local) == (second["id"], 2)
    assert_serves(local, second["id"], "2.0.0")

    back = ok_json(local, app_dir, "rollback", "--allow-unsafe-db")
    assert_matches_schema(back, "route-move.schema.json")
    assert (back["state"], back["epoch"], back["deployment_id"]) == ("rolled_back", 3, first["id"])
    assert route_owner(local) == (first["id"], 3)
    assert_serves(local, first["id"], "1.0.0")
    assert_one_ready_production_allocation(local, first["id"])

    audit = ok_json(local, app_dir, "workspace", "audit")
    rollbacks = [a for a in audit if a["action"] == "route.rollback" and a["result"] == "allowed"]
    assert len(rollbacks) == 1
    assert "allow-unsafe-db" in rollbacks[0]["target"] and "0002_names.sql" in rollbacks[0]["target"]
    assert first["id"] in rollbacks[0]["target"]


# -- a dead owner --------------------------------------------------------------------------------------------------
def test_a_killed_owner_process_is_replaced_never_served_by_another_deployment(local, tmp_path):
    app_dir = hello_copy(tmp_path)
    old = deployed_and_promoted(ok_json(local, app_dir, "deploy", "--promote"))
    set_version(app_dir, "2.0.0")
    owner = deployed_and_promoted(ok_json(local, app_dir, "deploy", "--promote"))
    set_version(app_dir, "3.0.0")
    preview = ok_json(local, app_dir, "deploy")  # a newer deployment, live in preview, never promoted
    assert_serves(local, owner["id"], "2.0.0")
    assert edge_host(local, preview["url"].split("//", 1)[1]).json()["deployment"] == preview["id"]

    [alloc] = [a for a in environment_allocations(local) if a["state"] == "ready"]
    assert alloc["deployment_id"] == owner["id"]
    os.killpg(alloc["pid"], signal.SIGKILL)  # the allocation runs in its own session: the pid leads its group
    assert wait_until(lambda: not process_alive(alloc["pid"]), timeout=30)

    # Healing starts a replacement of the route owner: until it is ready the edge answers 503, then the owner's new
    # allocation answers — never the preview's, nor the previous owner's, answer; the route does not move.
    served = set()
    for _ in range(200):
        answer = production(local)
        assert answer.status_code in (200, 502, 503), (answer.status_code, answer.text)
        for foreign in (old["id"], preview["id"]):
            assert foreign not in answer.text
        if answer.status_code == 200:
            assert answer.json()["deployment"] == owner["id"]
            served.add(answer.json()["allocation"])
            if answer.json()["allocation"] != alloc["id"]:
                break
        time.sleep(0.05)
    assert served - {alloc["id"]}, "no replacement ever answered"
    assert route_owner(local) == (owner["id"], 2)
    # The preview is unaffected.
    assert edge_host(local, preview["url"].split("//", 1)[1]).json()["deployment"] == preview["id"]


# -- a late stage report -------------------------------------------------------------------------------------------
def test_a_late_stage_report_for_a_finished_promotion_changes_nothing(local, tmp_path):
    from rhone_local.store import Store

    app_dir = hello_copy(tmp_path)
    first = deployed_and_promoted(ok_json(local, app_dir, "deploy", "--promote"))
    set_version(app_dir, "2.0.0")
    second = deployed_and_promoted(ok_json(local, app_dir, "deploy", "--promote"))
    op_id = second["promotion"]["operation_id"]
    owner_before = route_owner(local)
    assert owner_before == (second["id"], 2)

    store = Store(local.data_dir / "rhone.db")
    try:
        finished = store.operation(op_id)
        assert finished["state"] == "healthy" and finished["version"] == len(PROMOTION_STAGES)
        # A worker that still believes the operation is at route_cas (version 3) reports the stage late — with and
        # without a lease it no longer holds.
        stale = {**finished, "state": "route_cas", "version": 3}
        late = {"epoch": 2, "seq": 99, "previous_owner": first["id"]}
        assert store.advance_operation(stale, "edge_propagating", evidence=late) is None
        assert store.advance_operation(stale, "failed", error={"code": "late", "message": "late"}) is None
        assert store.advance_operation(stale, "edge_propagating", evidence=late, worker="worker-gone-0") is None
        assert store.advance_operation({**finished, "version": 1}, "policy_check") is None
        assert store.operation(op_id) == finished
    finally:
        store.close()
    assert route_owner(local) == owner_before
    assert len(db_rows(local, "SELECT * FROM route_events WHERE route_key = ?", ROUTE_KEY)) == 2
    assert local.json("op", "show", op_id)["state"] == "healthy"
    assert_serves(local, second["id"], "2.0.0")


def test_deploy_ls_marks_the_route_owner_and_superseded_previews_and_status_shows_the_app(local, tmp_path):
    """A deployed and promoted, then B and C deployed: A serves production, A's and B's previews were superseded
    (B's preview URL answers 503); `deploy ls` says so, newest first, and `rhone status` shows the app at a glance."""
    app_dir = hello_copy(tmp_path)
    a = ok_json(local, app_dir, "deploy", "--promote")["deployment"]
    set_version(app_dir, "2.0.0")
    b = ok_json(local, app_dir, "deploy")
    set_version(app_dir, "3.0.0")
    c = ok_json(local, app_dir, "deploy")

    rows = ok_json(local, app_dir, "deploy", "ls")
    assert [d["id"] for d in rows] == [c["id"], b["id"], a["id"]]
    assert [(d["superseded_by"], [r["environment"] for r in d["routes"]]) for d in rows] == [
        (None, []),
        (c["id"], []),
        (c["id"], ["production"]),
    ]
    assert rows[2]["routes"][0]["epoch"] == 1 and rows[2]["routes"][0]["url"].startswith("http://hello--production.")
    assert edge_host(local, f"dep-{b['id'].removeprefix('dep_')}.localhost").status_code == 503
    human = cli(local, app_dir, "deploy", "ls").stdout.splitlines()
    assert human[0].split() == ["ID", "ENV", "STATE", "SERVES", "ARTIFACT", "CREATED"]
    assert human[1].split()[:3] == [c["id"], "preview", "preview_ready"]
    assert human[2].split()[:3] == [b["id"], "preview", "superseded"]
    assert human[3].split()[:4] == [a["id"], "preview", "superseded", "production"]

    status = ok_json(local, app_dir, "status")
    assert_matches_schema(status, "status.schema.json")
    by_env = {row["environment"]: row for row in status["environments"]}
    assert (by_env["production"]["route_owner"], by_env["production"]["epoch"]) == (a["id"], 1)
    assert by_env["production"]["url"].startswith("http://hello--production.localhost:")
    assert by_env["production"]["instances"] == {"ready": 1, "total": 1}
    assert by_env["preview"]["route_owner"] is None
    assert by_env["preview"]["url"] == c["url"]
    assert by_env["preview"]["instances"] == {"ready": 1, "total": 1}
    assert by_env["preview"]["latest_deployment"]["id"] == c["id"]


def test_promoting_the_current_owner_again_changes_nothing(local, tmp_path):
    """`rhone promote <current owner>` used to bump the epoch (and write a route event) for nothing: after the same
    policy check, the server moves nothing and says so; a gate that no longer holds still refuses."""
    app_dir = hello_copy(tmp_path)
    first = ok_json(local, app_dir, "deploy", "--promote")
    deployment = first["deployment"]
    before = world(local)

    again = ok_json(local, app_dir, "promote", deployment["id"])

    assert (again["changed"], again["epoch"], again["state"]) == (False, 1, "healthy")
    assert route_owner(local) == (deployment["id"], 1)
    after = world(local)
    assert after["events"] == before["events"] and after["owners"] == before["owners"]
    assert after["allocations"] == before["allocations"]  # nothing drained, nothing started
    assert len(after["route_ops"]) == len(before["route_ops"]) + 1  # the request was an operation, and it is recorded
    human = cli(local, app_dir, "promote", deployment["id"])
    assert human.exit_code == 0 and "(unchanged)" in human.stdout and "nothing changed" in human.stderr
    cli(local, app_dir, "env", "freeze", "production")
    refused(local, app_dir, "promote", deployment["id"], exit_code=6, code="environment_frozen")
    assert route_owner(local) == (deployment["id"], 1)


# -- approval policy: rollback carries it, drift is reported (issue 12, items 1 and 4) ---------------------------------
def test_rollback_needs_the_approval_promotion_needs_and_policy_drift_is_reported(local, tmp_path):
    app_dir = hello_copy(tmp_path, extra="[environments.production]\napproval_required = true\n")
    # The rhone.toml in the copy already has a production section: replace it rather than add a second one.
    toml = (app_dir / "rhone.toml").read_text().replace("[environments.production]\napproval_required = false\n", "", 1)
    (app_dir / "rhone.toml").write_text(toml)
    first = ok_json(local, app_dir, "deploy")
    refused(local, app_dir, "promote", first["id"], exit_code=6, code="approval_required")
    assert ok_json(local, app_dir, "promote", first["id"], "--approve")["epoch"] == 1
    set_version(app_dir, "2.0.0")
    second = ok_json(local, app_dir, "deploy")
    assert ok_json(local, app_dir, "promote", second["id"], "--approve")["epoch"] == 2
    set_version(app_dir, "3.0.0")
    preview_only = ok_json(local, app_dir, "deploy")

    before = world(local)
    error = refused(local, app_dir, "rollback", exit_code=6, code="approval_required")
    assert "--approve" in error["message"]
    error = refused(
        local, app_dir, "rollback", "--to", preview_only["id"], exit_code=5, code="rollback_target_not_previous_owner"
    )
    assert error["hint"] and "rhone route history production" in error["hint"]
    assert error["details"]["valid_targets"] == [first["id"]]
    assert world(local) == before
    back = ok_json(local, app_dir, "rollback", "--approve")
    assert (back["state"], back["epoch"], back["deployment_id"]) == ("rolled_back", 3, first["id"])
    assert_serves(local, first["id"], "1.0.0")

    # The server's policy changes only by `rhone env policy`; rhone.toml disagreeing is reported, not applied.
    relaxed = cli(local, app_dir, "env", "policy", "production", "--no-approval-required", "--json")
    assert relaxed.exit_code == 0 and relaxed.json()["approval_required"] is False
    assert "rhone env policy production --approval-required" in relaxed.stderr
    set_version(app_dir, "4.0.0")
    deployed = cli(local, app_dir, "deploy", "--json")
    assert deployed.exit_code == 0, deployed.stderr
    assert "warning: rhone.toml declares [environments.production] approval_required = true" in deployed.stderr
    assert deployed.json()["policy_drift"] == [
        {
            "environment": "production",
            "setting": "approval_required",
            "declared": True,
            "server": False,
            "fix": "rhone env policy production --approval-required",
        }
    ]
    assert_matches_schema(deployed.json(), "deployment.schema.json")
