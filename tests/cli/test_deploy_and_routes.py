"""Deploy, promote, rollback, routes, status, logs and `op wait` through the CLI, in process against the real API
app and workers: each command's success and its refusals with their exit codes, and nothing else changed.

The pipeline is the real one without a sandbox: builds and previews run as real processes (hence `slow`); what needs
the edge, a crash or a signal stays in tests/e2e."""

from __future__ import annotations

import pytest

from rhone_cli.errors import ExitCode
from tests.conftest import assert_matches_schema
from tests.e2e.helpers import hello_app, set_version

from .conftest import rows

pytestmark = pytest.mark.slow


@pytest.fixture
def app_dir(cli):
    """examples/hello as project `hello`, app `hello`, built with a real (trivial) build command."""
    return hello_app(cli.cwd)


# A refused route move may leave its operation (failed, with the reason) and the key that made it; nothing else.
RECORDS_OF_A_REFUSED_OPERATION = {"operations", "idempotency"}


def changed_tables(before: dict, after: dict) -> set[str]:
    return {table for table in after if after[table] != before.get(table)}


def route_owner(cli, app_dir, env: str = "production") -> tuple[str | None, int | None]:
    route = cli.json("route", "show", env, cwd=app_dir)
    return route["deployment_id"], route["epoch"]


def test_deploy_promote_redeploy_rollback_with_every_read_command(cli, api_app, app_dir):
    a = cli.json("deploy", cwd=app_dir)
    assert_matches_schema(a, "deployment.schema.json")
    assert a["state"] == "preview_ready" and a["url"]
    promoted = cli.json("promote", a["id"], cwd=app_dir)
    assert_matches_schema(promoted, "route-move.schema.json")
    assert (promoted["deployment_id"], promoted["epoch"]) == (a["id"], 1)

    set_version(app_dir, "2.0.0")
    both = cli.json("deploy", "--promote", cwd=app_dir)
    assert_matches_schema(both, "deploy-promote.schema.json")
    b = both["deployment"]
    assert route_owner(cli, app_dir) == (b["id"], 2)

    listed = cli.json("deploy", "ls", cwd=app_dir)
    assert_matches_schema(listed, "deployment-list.schema.json")
    assert [d["id"] for d in listed] == [b["id"], a["id"]]
    shown = cli.json("deploy", "show", a["id"])
    assert_matches_schema(shown, "deployment.schema.json")
    logs = cli.json("deploy", "logs", a["id"])
    assert_matches_schema(logs, "deployment-logs.schema.json")
    assert logs["allocations"]
    history = cli.json("route", "history", "production", cwd=app_dir)
    assert_matches_schema(history, "route-history.schema.json")
    assert [(h["epoch"], h["deployment_id"]) for h in history] == [(2, b["id"]), (1, a["id"])]
    assert [r["epoch"] for r in cli.json("route", "ls", cwd=app_dir) if r["route_key"].endswith("production")] == [2]
    status = cli.json("status", cwd=app_dir)
    assert_matches_schema(status, "status.schema.json")
    production = next(e for e in status["environments"] if e["environment"] == "production")
    assert (production["route_owner"], production["epoch"]) == (b["id"], 2)
    app_logs = cli.json("logs", "--env", "production", cwd=app_dir)
    assert_matches_schema(app_logs, "logs.schema.json")

    rolled = cli.json("rollback", cwd=app_dir)
    assert (rolled["deployment_id"], rolled["epoch"]) == (a["id"], 3)
    op = cli.json("op", "wait", rolled["operation_id"])
    assert (op["kind"], op["outcome"]) == ("rollback", "succeeded")  # rolled_back is a rollback's success

    human = cli("status", cwd=app_dir)
    assert human.exit_code == 0 and a["id"] in human.stdout


def test_refused_route_moves_are_exit_5_or_6_and_change_nothing(cli, api_app, app_dir):
    a = cli.json("deploy", "--promote", cwd=app_dir)["deployment"]
    set_version(app_dir, "2.0.0")
    b = cli.json("deploy", cwd=app_dir)
    before = rows(api_app)

    stale = cli.fails(ExitCode.CONFLICT, "promote", b["id"], "--expect-epoch", "0", cwd=app_dir)
    assert stale["code"] == "route_epoch_conflict"
    never = cli.fails(ExitCode.CONFLICT, "rollback", "--to", b["id"], cwd=app_dir)
    assert never["code"] == "rollback_target_not_previous_owner"
    assert changed_tables(before, rows(api_app)) <= RECORDS_OF_A_REFUSED_OPERATION

    cli.json("env", "freeze", "production", cwd=app_dir)
    frozen_before = rows(api_app)
    frozen = cli.fails(ExitCode.BLOCKED, "promote", b["id"], cwd=app_dir)
    assert frozen["code"] == "environment_frozen"
    assert changed_tables(frozen_before, rows(api_app)) <= RECORDS_OF_A_REFUSED_OPERATION
    assert route_owner(cli, app_dir) == (a["id"], 1)

    cli.json("env", "unfreeze", "production", cwd=app_dir)
    cli.json("env", "policy", "production", "--approval-required", cwd=app_dir)
    unapproved = cli.fails(ExitCode.BLOCKED, "promote", b["id"], cwd=app_dir)
    assert unapproved["code"] == "approval_required"
    assert route_owner(cli, app_dir) == (a["id"], 1)
    assert cli.json("promote", b["id"], "--approve", cwd=app_dir)["epoch"] == 2
    assert route_owner(cli, app_dir) == (b["id"], 2)

    assert cli.fails(ExitCode.NOT_FOUND, "deploy", "show", "dep_0123456789abcdef0123456")["code"] == "not_found"
    assert cli.fails(ExitCode.USAGE, "deploy", "show", "../v1/x")["code"] == "invalid_id"


def test_a_prebuilt_deploy_ships_the_output_directory_and_runs_no_build(cli):
    app_dir = hello_app(cli.cwd, "prebuilt", command="exit 1", output="dist")  # the build would fail: not run
    (app_dir / "dist").mkdir()
    (app_dir / "app.py").rename(app_dir / "dist" / "app.py")
    manifest = cli.json("artifact", "manifest", "--prebuilt", cwd=app_dir)
    document = cli.json("deploy", "--prebuilt", cwd=app_dir)
    assert_matches_schema(document, "deployment.schema.json")
    assert (document["state"], document["prebuilt"]) == ("preview_ready", True)
    assert document["artifact_digest"] == manifest["digest"] == document["source_digest"]
    assert cli.json("deploy", "logs", document["id"])["build"] == ""


def test_a_failing_build_is_exit_1_with_its_log_and_starts_nothing(cli, api_app):
    app_dir = hello_app(cli.cwd, "broken", command="echo compiling; echo 'error: boom' >&2; exit 3")
    error = cli.fails(ExitCode.FAILED, "deploy", cwd=app_dir)
    assert error["code"] == "build_failed" and "error: boom" in error["details"]["evidence"]["log_tail"]
    deployment = cli.json("deploy", "ls", cwd=app_dir)[0]
    assert deployment["state"] == "failed"
    assert rows(api_app)["allocations"] == []
    assert "error: boom" in cli.json("deploy", "logs", deployment["id"])["build"]


def test_new_migrations_block_the_deploy_until_approved_once(cli, api_app):
    app_dir = hello_app(cli.cwd, "migrating", extra='\n[database]\nmigrations = "migrations"\n')
    (app_dir / "migrations").mkdir()
    (app_dir / "migrations" / "0001_init.sql").write_text("CREATE TABLE greetings (id INTEGER PRIMARY KEY);\n")
    blocked = cli.fails(ExitCode.BLOCKED, "deploy", cwd=app_dir)
    assert blocked["code"] == "migration_needs_approval"
    deployment_id = blocked["details"]["deployment_id"]
    assert f"rhone deploy approve {deployment_id}" in blocked["hint"]
    assert cli.json("op", "show", blocked["operation_id"])["outcome"] == "blocked"
    assert rows(api_app)["allocations"] == []

    approved = cli.json("deploy", "approve", deployment_id)
    assert approved["state"] == "preview_ready" and approved["approval"]["gates"] == ["db_impact"]
    before = rows(api_app)
    assert cli.fails(ExitCode.CONFLICT, "deploy", "approve", deployment_id)["code"] == "not_blocked"
    assert changed_tables(before, rows(api_app)) <= RECORDS_OF_A_REFUSED_OPERATION


def test_deploy_no_wait_then_op_wait_prints_the_deploys_result_and_logs_refuse_a_bad_duration(cli, api_app, app_dir):
    cli.json("init", "--link", cwd=app_dir)  # the project and app exist: a deploy would wait for their creation
    cli.transport.drive = False  # nothing runs the deploy until the test says so
    started = cli.json("deploy", "--no-wait", cwd=app_dir)
    assert_matches_schema(started, "operation.schema.json")
    assert (started["kind"], started["outcome"]) == ("deploy", "running")
    assert rows(api_app)["allocations"] == []

    api_app.run_operations()
    human = cli("op", "wait", started["id"])
    assert human.exit_code == 0 and human.stdout.startswith("Preview: http://"), human.stdout
    waited = cli.json("op", "wait", started["id"])
    assert (waited["kind"], waited["outcome"]) == ("deploy", "succeeded")  # --json stays the operation

    deployment = cli.json("deploy", "ls", cwd=app_dir)[0]
    assert_matches_schema(cli.json("logs", deployment["id"], cwd=app_dir), "logs.schema.json")
    sent = len(cli.transport.requests)
    assert cli.fails(ExitCode.USAGE, "logs", "--since", "yesterday", cwd=app_dir)["code"] == "usage_error"
    assert cli.fails(ExitCode.USAGE, "logs", "../x", cwd=app_dir)["code"] == "invalid_id"
    assert len(cli.transport.requests) == sent  # refused before any request


def test_a_rollback_across_a_migration_needs_allow_unsafe_db(cli, api_app):
    app_dir = hello_app(cli.cwd, "migrating", extra='\n[database]\nmigrations = "migrations"\n')
    migrations = app_dir / "migrations"
    migrations.mkdir()
    (migrations / "0001_init.sql").write_text("CREATE TABLE greetings (id INTEGER PRIMARY KEY);\n")
    first = cli.fails(ExitCode.BLOCKED, "deploy", cwd=app_dir)["details"]["deployment_id"]
    cli.json("deploy", "approve", first)
    cli.json("promote", first, cwd=app_dir)
    set_version(app_dir, "2.0.0")
    (migrations / "0002_names.sql").write_text("ALTER TABLE greetings ADD COLUMN name TEXT;\n")
    second = cli.fails(ExitCode.BLOCKED, "deploy", cwd=app_dir)["details"]["deployment_id"]
    cli.json("deploy", "approve", second)
    assert cli.json("promote", second, cwd=app_dir)["epoch"] == 2

    before = rows(api_app)
    unsafe = cli.fails(ExitCode.BLOCKED, "rollback", cwd=app_dir)
    assert unsafe["code"] == "rollback_unsafe_db" and unsafe["details"]["migrations"] == ["0002_names.sql"]
    assert changed_tables(before, rows(api_app)) <= RECORDS_OF_A_REFUSED_OPERATION
    back = cli.json("rollback", "--allow-unsafe-db", cwd=app_dir)
    assert (back["state"], back["epoch"], back["deployment_id"]) == ("rolled_back", 3, first)
    assert route_owner(cli, app_dir) == (first, 3)
