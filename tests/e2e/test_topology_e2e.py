"""Bindings, scale and regions end to end: the real `rhone` against a real Rhone Local, copies of examples/hello
deployed, promoted and scaled through the real pipeline, runner and edge.

What an allocation received from its environment is read where the app reads it: the process's own environment
(`/proc/<pid>/environ`). Every secret value a test hands to `rhone` is searched for afterwards in everything `rhone`
printed, the server's log, and every table of the control database but the one that holds secrets.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import assert_matches_schema
from tests.e2e.helpers import HELLO, wait_until

APP_PATH = "/v1/workspaces/local/projects/hello/apps/hello"
PRODUCTION_HOST = "hello--production.localhost"


class Session:
    """Runs `rhone` in one app directory and keeps everything it printed (for the secret search)."""

    def __init__(self, server, app_dir: Path) -> None:
        self.server, self.app_dir, self.printed = server, app_dir, []

    def run(self, *args: str, environ: dict[str, str] | None = None, stdin: str = "", timeout: float = 90):
        result = self.server.rhone(*args, cwd=self.app_dir, environ=environ, stdin=stdin, timeout=timeout)
        self.printed += [result.stdout, result.stderr]
        return result

    def ok(self, *args: str, **kwargs):
        result = self.run(*args, "--json", **kwargs)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result.json()

    def refused(self, *args: str, exit_code: int, code: str, **kwargs) -> dict:
        result = self.run(*args, "--json", **kwargs)
        assert result.exit_code == exit_code, (args, result.exit_code, result.stdout, result.stderr)
        document = result.json()
        assert_matches_schema(document, "error.schema.json")
        assert document["error"]["code"] == code, document
        return document["error"]

    def deploy_and_promote(self) -> dict:
        document = self.ok("deploy", "--promote")
        assert document["promotion"]["state"] == "healthy", document
        return document["deployment"]


def app_copy(root: Path, runtime: str = "", providers: str = "", environments: str = "") -> Path:
    app_dir = root / "hello"
    if not app_dir.exists():
        shutil.copytree(HELLO, app_dir, ignore=shutil.ignore_patterns(".rhone", "__pycache__"))
    base = (HELLO / "rhone.toml").read_text()  # ends in its [environments.production] table
    (app_dir / "rhone.toml").write_text(base + environments + "\n" + runtime + "\n" + providers)
    return app_dir


def edge_get(server, path: str = "/", cookie: str | None = None) -> httpx.Response:
    headers = {"Host": PRODUCTION_HOST}
    if cookie:
        headers["Cookie"] = cookie
    return httpx.get(f"http://127.0.0.1:{server.edge_port}{path}", headers=headers, timeout=10)


def process_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def db_rows(server, sql: str, *args) -> list[dict]:
    with sqlite3.connect(server.data_dir / "rhone.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, args)]


def live_allocations(server, environment: str = "production") -> list[dict]:
    """Live allocations of an environment, with their region's name, oldest first (read from the store)."""
    return db_rows(
        server,
        "SELECT a.*, r.name AS region FROM allocations a JOIN environments e ON e.id = a.environment_id "
        "JOIN regions r ON r.id = a.region_id "
        "WHERE e.name = ? AND a.state IN ('planned', 'pulling', 'starting', 'ready', 'draining') ORDER BY a.id",
        environment,
    )


def route(session: Session) -> tuple[str, int]:
    owner = session.ok("route", "show", "production")
    return owner["deployment_id"], owner["epoch"]


# -- scale ----------------------------------------------------------------------------------------------------------
def test_scale_is_gated_by_runtime_services_then_spreads_and_survives_a_killed_instance(local, tmp_path):
    app_dir = app_copy(tmp_path, runtime='[runtime]\nunsafe_replay_routes = ["/pay"]\n')
    session = Session(local, app_dir)
    session.ok("init", "--link")
    deployment = session.deploy_and_promote()
    owner = route(session)
    assert len(live_allocations(local)) == 1

    # Nothing bound: each missing service is named with its reason; nothing started, the route did not move.
    error = session.refused(
        "app", "scale", "--env", "production", "--instances", "3", exit_code=6, code="runtime_services_missing"
    )
    for service in ("session", "broadcast", "idempotency"):
        assert f"{service} in local-1" in error["message"]
    operation = session.ok("op", "show", error["operation_id"])
    gate = next(s for s in operation["stages"] if s["state"] == "failed")["evidence"]
    assert [m["service"] for m in gate["missing"]] == ["session", "broadcast", "idempotency"]
    assert [s["state"] for s in operation["stages"]] == ["requested", "gate_check", "failed"]
    assert len(live_allocations(local)) == 1 and route(session) == owner

    # One service at a time: the refusal shrinks to what is still missing.
    services = session.ok("env", "services", "production", "--bind", "session")
    assert_matches_schema(services, "environment-services.schema.json")
    assert [s["service"] for s in services["items"]] == ["session"]
    assert [m["service"] for m in services["missing"]] == ["broadcast", "idempotency"]
    error = session.refused(
        "app", "scale", "--env", "production", "--instances", "3", exit_code=6, code="runtime_services_missing"
    )
    assert "session in" not in error["message"] and "broadcast in local-1" in error["message"]
    assert len(live_allocations(local)) == 1

    services = session.ok("env", "services", "production", "--bind", "broadcast", "--bind", "idempotency")
    assert services["missing"] == [] and len(services["items"]) == 3
    scaled = session.ok("app", "scale", "--env", "production", "--instances", "3")
    assert scaled["state"] == "scaled"
    # The first instance was started before the services were bound: a new one replaced it, and it drains away.
    assert wait_until(lambda: all(a["state"] != "draining" for a in live_allocations(local)), timeout=30)
    allocations = session.ok("app", "allocations", "--env", "production")
    assert_matches_schema(allocations, "allocation-list.schema.json")
    assert len(allocations) == 3
    assert {a["state"] for a in allocations} == {"ready"} and all(a["route_owner"] for a in allocations)
    assert {(a["region"], a["cell"]) for a in allocations} == {("local-1", "local-1a")}
    assert {a["deployment_id"] for a in allocations} == {deployment["id"]} and route(session) == owner

    # Each allocation received the environment's service endpoints: Redis (session, broadcast) with a user of its
    # own, Rhone Local's SQLite table for idempotency.
    for alloc in live_allocations(local):
        environ = process_environ(alloc["pid"])
        assert environ["RHONE_ALLOCATION_ID"] == alloc["id"]
        assert environ["RHONE_SERVICE_SESSION_URL"].startswith(f"redis://{alloc['id']}:")
        assert environ["RHONE_SERVICE_BROADCAST_URL"].startswith(f"redis://{alloc['id']}:")
        idempotency = environ["RHONE_SERVICE_IDEMPOTENCY_URL"]
        assert idempotency.startswith("sqlite://") and Path(idempotency.removeprefix("sqlite://")).is_file()

    # Without the edge's affinity cookie requests spread over all three; a client that keeps it stays on one.
    spread = Counter(edge_get(local).json()["allocation"] for _ in range(30))
    assert set(spread) == {a["id"] for a in allocations}
    first = edge_get(local)
    affinity = f"rhone_affinity={first.cookies['rhone_affinity']}"
    pinned = {edge_get(local, cookie=f"theme=dark; {affinity}").json()["allocation"] for _ in range(15)}
    assert pinned == {first.json()["allocation"]}

    # Kill one instance (the pinned client's): ownership does not move; every request is still answered by the
    # owner — the client moves to another instance — and the dead one is recorded failed, and healing replaces it.
    [victim] = [a for a in live_allocations(local) if a["id"] in pinned]
    os.killpg(victim["pid"], signal.SIGKILL)
    answers = [edge_get(local, cookie=affinity) for _ in range(20)]
    assert all(a.status_code == 200 and a.json()["deployment"] == deployment["id"] for a in answers), [
        (a.status_code, a.text[:200]) for a in answers
    ]
    assert {a.json()["allocation"] for a in answers} & pinned == set()
    assert wait_until(lambda: db_rows(local, "SELECT state FROM allocations WHERE id = ?", victim["id"])[0]["state"]
                      == "failed", timeout=30)  # fmt: skip
    failed = db_rows(local, "SELECT state, health FROM allocations WHERE id = ?", victim["id"])[0]
    assert failed["state"] == "failed" and "process exited" in failed["health"]
    assert wait_until(
        lambda: (
            sum(a["state"] == "ready" for a in live_allocations(local)) == 3
            and victim["id"] not in {a["id"] for a in live_allocations(local)}
        ),
        timeout=30,
    )
    assert route(session) == owner

    # Scale down: the extra allocations drain (they hold no connection) and stop.
    assert session.ok("app", "scale", "--env", "production", "--instances", "1")["state"] == "scaled"
    assert wait_until(lambda: len(live_allocations(local)) == 1, timeout=60) and edge_get(local).status_code == 200
    assert session.ok("env", "show", "production")["instances"] == 1


def test_a_promotion_into_a_scaled_environment_starts_every_instance_first(local, tmp_path):
    app_dir = app_copy(tmp_path, runtime="[runtime]\nserver_sessions = false\n")
    session = Session(local, app_dir)
    session.ok("init", "--link")
    first = session.deploy_and_promote()
    assert session.ok("app", "scale", "--env", "production", "--instances", "2")["state"] == "scaled"
    second = session.deploy_and_promote()  # an app without server sessions scales with nothing bound
    assert wait_until(lambda: all(a["state"] != "draining" for a in live_allocations(local)), timeout=30)
    allocations = session.ok("app", "allocations", "--env", "production")
    assert [a["deployment_id"] for a in allocations] == [second["id"], second["id"]]
    assert {a["state"] for a in allocations} == {"ready"}
    assert not [a for a in live_allocations(local) if a["deployment_id"] == first["id"]]


# -- provider bindings ----------------------------------------------------------------------------------------------
PROVIDERS = '[providers.db]\nkind = "postgres"\nsecrets = ["DATABASE_URL"]\n'
PREVIEW_SECRET = "postgres://app:preview-pw-7f3a91c2@db-preview/shop"
PRODUCTION_SECRET = "postgres://app:production-pw-c0ffee42@db-production/shop"
STDIN_SECRET = "stdin-secret-5b8d0e17"


def assert_secrets_never_leaked(server, session: Session, secrets: list[str]) -> None:
    """No secret value in anything rhone printed, in the server's log, or in any table but binding_secrets."""
    printed = "\n".join(session.printed)
    log = (server.data_dir / "rhone-local.log").read_text(errors="replace")
    with sqlite3.connect(server.data_dir / "rhone.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        dump = {t: repr(db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables if t != "binding_secrets"}
    for secret in secrets:
        assert secret not in printed, secret
        assert secret not in log, secret
        for table, rows in dump.items():
            assert secret not in rows, (table, secret)


def test_provider_bindings_gate_deploys_and_promotions_keep_lanes_apart_and_never_echo_secrets(local, tmp_path):
    app_dir = app_copy(tmp_path, runtime="[runtime]\nserver_sessions = false\n", providers=PROVIDERS)
    session = Session(local, app_dir)
    session.ok("init", "--link")

    # Declaring a provider proves nothing: the deploy is blocked until preview has a ready binding for it.
    error = session.refused("deploy", exit_code=6, code="binding_missing")
    assert "db" in error["message"]

    # Secrets never come from the command line; a missing variable or file is a usage error. Nothing is created.
    result = session.run("env", "bind", "preview", "db", "--kind", "postgres", "--resource", "pg://db-preview/shop",
                         "--secret", f"DATABASE_URL={PREVIEW_SECRET}")  # fmt: skip
    assert result.exit_code == 2 and "not accepted on the command line" in result.stderr
    result = session.run("env", "bind", "preview", "db", "--kind", "postgres", "--resource", "pg://x/y",
                         "--secret", "DATABASE_URL")  # fmt: skip
    assert result.exit_code == 2 and "DATABASE_URL is not set" in result.stderr
    result = session.run("env", "bind", "preview", "db", "--kind", "postgres", "--resource", "pg://x/y",
                         "--secret", "DATABASE_URL=@/nonexistent/file")  # fmt: skip
    assert result.exit_code == 2 and "cannot read" in result.stderr
    assert db_rows(local, "SELECT COUNT(*) AS n FROM provider_bindings")[0]["n"] == 0

    bound = session.ok("env", "bind", "preview", "db", "--kind", "postgres", "--resource", "pg://db-preview/shop",
                       "--secret", "DATABASE_URL", environ={"DATABASE_URL": PREVIEW_SECRET})  # fmt: skip
    assert_matches_schema(bound, "provider-binding.schema.json")
    assert (bound["state"], bound["secrets"], bound["region"], bound["mutable"]) == (
        "ready", ["DATABASE_URL"], "local-1", True
    )  # fmt: skip
    listed = session.ok("env", "bindings", "preview")
    assert [b["name"] for b in listed] == ["db"] and "value" not in repr(listed)
    human = session.run("env", "bindings", "preview")
    assert human.exit_code == 0 and "pg://db-preview/shop" in human.stdout and "DATABASE_URL" in human.stdout

    preview = session.ok("deploy")
    assert preview["state"] == "preview_ready"
    [alloc] = [a for a in live_allocations(local, "preview") if a["deployment_id"] == preview["id"]]
    environ = process_environ(alloc["pid"])
    assert environ["DATABASE_URL"] == PREVIEW_SECRET
    assert environ["RHONE_PROVIDER_DB_RESOURCE"] == "pg://db-preview/shop"

    # Production has no binding yet: the promotion is refused, naming it; nothing moved.
    error = session.refused("promote", preview["id"], exit_code=6, code="binding_missing")
    assert "db" in error["message"]
    assert db_rows(local, "SELECT COUNT(*) AS n FROM route_owners")[0]["n"] == 0

    # The preview database bound to production too: refused (exit 5), nothing created.
    before = db_rows(local, "SELECT * FROM provider_bindings ORDER BY id")
    error = session.refused("env", "bind", "production", "db", "--kind", "postgres", "--resource",
                            "pg://db-preview/shop", "--secret", "DATABASE_URL", exit_code=5,
                            code="shared_mutable_resource", environ={"DATABASE_URL": PRODUCTION_SECRET})  # fmt: skip
    assert "preview" in error["message"]
    assert db_rows(local, "SELECT * FROM provider_bindings ORDER BY id") == before
    # Only a binding declared shared and read-only on both sides may share a resource.
    session.refused("env", "bind", "production", "db", "--kind", "postgres", "--resource", "pg://db-preview/shop",
                    "--shared", "--read-only", exit_code=5, code="shared_mutable_resource")  # fmt: skip
    session.ok("env", "bind", "preview", "replica", "--kind", "postgres", "--resource", "pg://replica/shop",
               "--shared", "--read-only")  # fmt: skip
    session.ok("env", "bind", "production", "replica", "--kind", "postgres", "--resource", "pg://replica/shop",
               "--shared", "--read-only")  # fmt: skip
    error = session.refused("env", "bind", "staging-like", "replica", "--kind", "postgres", "--resource",
                            "pg://replica/shop", exit_code=4, code="not_found")  # fmt: skip

    # Production's own database, its secret from stdin; then the promotion passes and production gets its values.
    session.ok("env", "bind", "production", "db", "--kind", "postgres", "--resource", "pg://db-production/shop",
               "--secret", "DATABASE_URL=@-", stdin=PRODUCTION_SECRET + "\n")  # fmt: skip
    secret_file = tmp_path / "token"
    secret_file.write_text(STDIN_SECRET)
    session.ok("env", "bind", "production", "cache", "--kind", "redis", "--resource", "redis://cache/0",
               "--secret", f"CACHE_TOKEN=@{secret_file}")  # fmt: skip
    promoted = session.ok("promote", preview["id"])
    assert promoted["state"] == "healthy"
    [alloc] = live_allocations(local, "production")
    environ = process_environ(alloc["pid"])
    assert (environ["DATABASE_URL"], environ["CACHE_TOKEN"]) == (PRODUCTION_SECRET, STDIN_SECRET)

    # Unbinding removes the binding and its secret values; a new promotion is blocked again.
    unbound = session.ok("env", "unbind", "production", "db")
    assert unbound["state"] == "unbound"
    assert [b["name"] for b in session.ok("env", "bindings", "production")] == ["cache", "replica"]
    assert not db_rows(
        local,
        "SELECT * FROM binding_secrets s JOIN provider_bindings b ON b.id = s.binding_id WHERE b.state = 'removed'",
    )
    session.refused("promote", preview["id"], exit_code=6, code="binding_missing")
    session.refused("env", "unbind", "production", "db", exit_code=4, code="not_found")

    # The values went to the allocations and nowhere else.
    for args in (("op", "ls"), ("env", "bindings", "production"), ("deploy", "show", preview["id"])):
        session.ok(*args)
    assert_secrets_never_leaked(local, session, [PREVIEW_SECRET, PRODUCTION_SECRET, STDIN_SECRET])


# -- regions --------------------------------------------------------------------------------------------------------
REGION_SECRET = "postgres://app:region2-pw-91ab77e3@db-us/shop"


def enable_refused(session: Session, gate: str, stage: str) -> dict:
    """`region enable local-2` stops at `stage` with `gate`; the region stays out of the environment's traffic."""
    error = session.refused("region", "enable", "local-2", "--env", "production", exit_code=6, code=gate)
    operation = session.ok("op", "show", error["operation_id"])
    states = [s["state"] for s in operation["stages"]]
    assert states[-2:] == [stage, "disabled"] and states[0] == "requested", states
    status = {r["region"]: r for r in session.ok("region", "status", "--env", "production")}
    assert status["local-2"]["state"] == "disabled" and status["local-2"]["reason"].startswith(gate)
    assert status["local-1"]["state"] == "eligible"
    return error


def test_region_enablement_stops_at_each_missing_gate_and_traffic_waits_for_eligible(local, tmp_path):
    residency = 'residency = ["eu"]\n'  # appended to hello's [environments.production]
    runtime = "[runtime]\nserver_sessions = true\n"
    app_dir = app_copy(tmp_path, runtime=runtime, providers=PROVIDERS, environments=residency)
    session = Session(local, app_dir)
    session.ok("init", "--link")
    regions = session.ok("region", "ls")
    assert_matches_schema(regions, "region-list.schema.json")
    assert [(r["name"], r["jurisdiction"], r["primary"]) for r in regions] == [
        ("local-1", "eu", True),
        ("local-2", "us", False),
    ]
    assert session.ok("region", "show", "local-2")["cells"][0]["name"] == "local-2a"
    session.refused("region", "show", "mars-1", exit_code=4, code="not_found")

    # Nothing promoted: no artifact to place in the region.
    enable_refused(session, "artifact_absent", "provisioning")

    for env in ("preview", "production"):
        session.ok("env", "bind", env, "db", "--kind", "postgres", "--resource", f"pg://db-{env}/shop",
                   "--secret", "DATABASE_URL", environ={"DATABASE_URL": f"secret-{env}-3e1f"})  # fmt: skip
    session.ok("env", "services", "production", "--bind", "session", "--bind", "broadcast")
    session.deploy_and_promote()

    # 1. residency: production may live in eu only; local-2 is us.
    error = enable_refused(session, "residency_violation", "provisioning")
    assert "'us'" in error["message"]

    # 2. data topology: residency now allows us, but production's database is not bound in local-2.
    (app_dir / "rhone.toml").write_text(
        (app_dir / "rhone.toml").read_text().replace('residency = ["eu"]', 'residency = ["eu", "us"]')
    )
    (app_dir / "app.py").write_text((app_dir / "app.py").read_text().replace('"1.0.0"', '"1.1.0"'))
    owner = session.deploy_and_promote()
    enable_refused(session, "data_topology_not_ready", "provisioning")

    # 3. secrets: bound there, without the secret rhone.toml says it needs.
    session.ok("env", "bind", "production", "db", "--kind", "postgres", "--resource", "pg://db-us/shop",
               "--region", "local-2")  # fmt: skip
    error = enable_refused(session, "secret_missing", "provisioning")
    assert "DATABASE_URL" in error["message"]
    session.ok("env", "unbind", "production", "db", "--region", "local-2")
    session.ok("env", "bind", "production", "db", "--kind", "postgres", "--resource", "pg://db-us/shop",
               "--region", "local-2", "--secret", "DATABASE_URL", environ={"DATABASE_URL": REGION_SECRET})  # fmt: skip

    # 4. runtime services: bound in local-1 only.
    error = enable_refused(session, "runtime_services_missing", "binding_services")
    assert "session" in error["message"] and "broadcast" in error["message"]
    session.ok("env", "services", "production", "--bind", "session", "--bind", "broadcast", "--region", "local-2")

    # 5. the artifact: one of its files is gone from the artifact store.
    [row] = db_rows(local, "SELECT manifest FROM artifacts WHERE digest = ?", owner["artifact_digest"])
    first = json.loads(row["manifest"])["files"][0]["sha256"]
    blob = local.data_dir / "blobs" / "sha256" / first[:2] / first[2:]
    hidden = blob.with_name(blob.name + ".away")
    blob.rename(hidden)
    try:
        enable_refused(session, "artifact_absent", "replicating_artifacts")
    finally:
        hidden.rename(blob)

    # While local-2 was never eligible, scaling placed nothing there and the edge routed nothing there.
    assert session.ok("app", "scale", "--env", "production", "--instances", "2")["state"] == "scaled"
    assert {a["region"] for a in session.ok("app", "allocations", "--env", "production")} == {"local-1"}

    enabled = session.ok("region", "enable", "local-2", "--env", "production")
    assert [s["state"] for s in enabled["stages"]] == [
        "requested", "provisioning", "binding_services", "replicating_artifacts", "eligible"
    ]  # fmt: skip
    shown = session.ok("region", "show", "local-2", "--env", "production")
    assert shown["eligibility"]["state"] == "eligible"

    # Now a scale spreads over both regions, each allocation with its own region's bindings; public names stay clean.
    assert session.ok("app", "scale", "--env", "production", "--instances", "2")["state"] == "scaled"

    # The surplus local-1 allocation drains on its own (the scale does not wait for it).
    def settled() -> list[dict] | None:
        rows = session.ok("app", "allocations", "--env", "production")
        return rows if all(a["state"] != "draining" for a in rows) else None

    allocations = wait_until(settled, timeout=60)
    assert sorted(a["region"] for a in allocations) == ["local-1", "local-2"]
    by_region = {a["region"]: a for a in live_allocations(local)}
    assert process_environ(by_region["local-2"]["pid"])["DATABASE_URL"] == REGION_SECRET
    assert process_environ(by_region["local-2"]["pid"])["RHONE_REGION"] == "local-2"
    answers = {edge_get(local).json()["allocation"] for _ in range(20)}
    assert answers == {a["id"] for a in allocations}
    route_doc = session.ok("route", "show", "production")
    for marker in ("local-1", "local-2", "local-2a"):
        assert marker not in route_doc["url"] and marker not in route_doc["route_key"]
    assert_secrets_never_leaked(local, session, [REGION_SECRET, "secret-production-3e1f", "secret-preview-3e1f"])


# -- crashes --------------------------------------------------------------------------------------------------------
SLOW_START = "sleep 1; exec python3 app.py"


@pytest.mark.parametrize("moment", ["gate_check", "allocations starting"])
def test_a_scale_survives_kill_9_and_converges_without_orphans(local_env, tmp_path, moment):
    from tests.e2e.helpers import allocation_group, operation_state, processes_under, restart

    local_env.up(environ={"RHONE_LOCAL_STAGE_DELAY": "1.0"} if moment == "gate_check" else None)
    app_dir = app_copy(tmp_path, runtime="[runtime]\nserver_sessions = false\n")
    if moment == "allocations starting":  # the new allocations take a second to listen: the kill lands meanwhile
        toml = app_dir / "rhone.toml"
        toml.write_text(toml.read_text().replace('start = "python3 app.py"', f'start = "{SLOW_START}"'))
    session = Session(local_env, app_dir)
    session.ok("init", "--link", timeout=120)
    deployment = session.ok("deploy", "--promote", timeout=120)["deployment"]
    owner = route(session)
    op = session.ok("app", "scale", "--env", "production", "--instances", "3", "--no-wait")
    if moment == "gate_check":
        assert wait_until(lambda: operation_state(local_env, op["id"]) == "gate_check", timeout=60)
    else:
        assert wait_until(
            lambda: len(db_rows(local_env, "SELECT id FROM allocations WHERE state = 'starting'")) >= 2, timeout=15
        )
    os.kill(local_env.pid(), signal.SIGKILL)
    restart(local_env)

    waited = session.ok("op", "wait", op["id"], timeout=120)
    assert waited["state"] == "scaled", waited
    states = [s["state"] for s in waited["stages"]]
    assert states == ["requested", "gate_check", "scaling", "scaled"], states  # each stage recorded once
    ready = [a for a in live_allocations(local_env) if a["state"] == "ready"]
    assert len(ready) == 3 and {a["deployment_id"] for a in ready} == {deployment["id"]}
    assert len(live_allocations(local_env)) == 3 and route(session) == owner
    # Every app process alive belongs to a live allocation — the three, and the deployment's preview — and nothing
    # from before the crash is left over.
    alive = processes_under(local_env.data_dir / "allocations")
    live = db_rows(local_env, "SELECT pid FROM allocations WHERE state IN ('ready', 'draining', 'starting')")
    assert {allocation_group(pid) for pid in alive} == {a["pid"] for a in live}
    assert len(live) == 4
    assert {edge_get(local_env).json()["allocation"] for _ in range(15)} == {a["id"] for a in ready}
