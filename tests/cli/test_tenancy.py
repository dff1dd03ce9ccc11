"""Tenancy through the CLI, in process against the real API app: workspaces, members, the audit log, projects, apps,
environments and operations — each command's success, and its refusals with their exit codes and nothing changed."""

from __future__ import annotations

import json

import pytest

from rhone_cli.errors import ExitCode
from tests.conftest import assert_matches_schema
from tests.local.conftest import SHOP_WEB_TOML

from .conftest import counts, rows


def test_tenancy_commands_and_their_documents(cli):
    project = cli.json("project", "create", "shop")
    assert_matches_schema(project, "project.schema.json")
    assert project["name"] == "shop" and project["id"].startswith("prj_")
    assert [p["name"] for p in cli.json("project", "ls")] == ["shop"]
    assert_matches_schema(cli.json("project", "ls"), "project-list.schema.json")
    assert cli.json("project", "show", "shop")["id"] == project["id"]

    app = cli.json("app", "create", "web", "--project", "shop")
    assert_matches_schema(app, "app.schema.json")
    assert cli.json("app", "show", "web", "-p", "shop")["id"] == app["id"]
    assert [a["name"] for a in cli.json("app", "ls", "-p", "shop")] == ["web"]
    environments = cli.json("env", "ls", "-p", "shop", "-a", "web")
    assert_matches_schema(environments, "environment-list.schema.json")
    assert sorted(e["name"] for e in environments) == ["preview", "production"]
    staging = cli.json("env", "create", "staging", "--approval-required", "-p", "shop", "-a", "web")
    assert_matches_schema(staging, "environment.schema.json")
    assert staging["approval_required"] is True
    assert cli.json("env", "show", "staging", "-p", "shop", "-a", "web")["id"] == staging["id"]

    assert_matches_schema(cli.json("workspace", "ls"), "workspace-list.schema.json")
    assert_matches_schema(cli.json("workspace", "show"), "workspace.schema.json")
    member = cli.json("workspace", "invite", "dev@example.com", "--role", "developer")
    assert_matches_schema(member, "member.schema.json")
    members = cli.json("workspace", "members")
    assert_matches_schema(members, "member-list.schema.json")
    assert {m["role"] for m in members} == {"owner", "developer"}

    audit = cli.json("workspace", "audit")
    assert_matches_schema(audit, "audit-list.schema.json")
    actions = [(a["action"], a["result"]) for a in audit]
    for action in ("project.create", "app.create", "environment.create", "member.invite"):
        assert (action, "allowed") in actions
    assert [a["action"] for a in cli.json("workspace", "audit", "--action", "member.invite")] == ["member.invite"]
    operations = cli.json("op", "ls")
    assert_matches_schema(operations, "operation-list.schema.json")
    assert {op["kind"] for op in operations} == {"project.create", "app.create", "environment.create"}
    assert all(op["state"] == "succeeded" for op in operations)
    assert [op["kind"] for op in cli.json("op", "ls", "--state", "succeeded", "-L", "1")] == ["environment.create"]
    shown = cli.json("op", "show", operations[0]["id"])
    assert_matches_schema(shown, "operation.schema.json")
    assert [s["state"] for s in shown["stages"]] == ["queued", "validating", "applying", "succeeded"]

    human = cli("project", "ls")
    assert human.exit_code == 0 and "shop" in human.stdout and human.stdout.startswith("ID")
    created = cli("project", "create", "two")
    assert created.exit_code == 0 and created.stdout.startswith("created project two (prj_")


def test_mutations_print_the_operation_first_and_no_wait_resumes_with_op_wait(cli, api_app):
    cli.transport.drive = False  # nothing runs the operation until the test says so
    result = cli("project", "create", "later", "--no-wait", "--json")
    assert result.exit_code == 0
    op = result.json()
    assert_matches_schema(op, "operation.schema.json")
    assert (op["state"], op["kind"]) == ("queued", "project.create")
    assert result.stderr.splitlines()[0].startswith(f"operation {op['id']} (project.create)")
    assert f"rhone op wait {op['id']}" in result.stderr
    assert counts(api_app)["projects"] == 0

    api_app.run_operations()
    waited = cli("op", "wait", op["id"], "--json")
    assert waited.exit_code == 0
    assert waited.json()["state"] == "succeeded" and waited.json()["id"] == op["id"]
    assert [p["name"] for p in cli.json("project", "ls")] == ["later"]


def test_wait_timeout_is_exit_7_with_the_resume_command_and_the_operation_continues(cli, api_app):
    cli.transport.drive = False
    result = cli("project", "create", "slow", "--wait-timeout", "0", "--json")
    assert result.exit_code == ExitCode.WAIT_TIMEOUT
    error = result.json()["error"]
    assert error["code"] == "wait_timeout" and error["operation_id"].startswith("op_")
    assert f"rhone op wait {error['operation_id']}" in error["hint"]
    assert counts(api_app)["projects"] == 0  # not done, not undone: still queued

    api_app.run_operations()
    finished = cli("op", "wait", error["operation_id"], "--json")
    assert finished.exit_code == 0 and finished.json()["state"] == "succeeded"


def test_progress_jsonl_is_one_object_per_line_on_stderr(cli):
    result = cli("--progress", "jsonl", "project", "create", "events", "--json")
    assert result.exit_code == 0
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert events and all(e["v"] == 1 and e["type"] == "op_state" for e in events)
    assert events[-1]["state"] == "succeeded"


def test_an_explicit_idempotency_key_replays_and_refuses_another_request(cli, api_app):
    environ = {"RHONE_IDEMPOTENCY_KEY": "ci-job-42"}
    first = cli("project", "create", "alpha", "--json", environ=environ)
    assert first.exit_code == 0, first.stderr
    replay = cli("project", "create", "alpha", "--json", environ=environ)
    assert replay.exit_code == 0, replay.stderr
    assert replay.json()["id"] == first.json()["id"]
    before = rows(api_app)
    reused = cli.fails(ExitCode.CONFLICT, "project", "create", "beta", environ=environ)
    assert reused["code"] == "idempotency_key_reused" and reused["request_id"]
    assert rows(api_app) == before
    assert [p["name"] for p in cli.json("project", "ls")] == ["alpha"]


def test_a_taken_name_is_a_conflict_and_creates_nothing(cli, api_app):
    cli.json("project", "create", "dup")
    before = rows(api_app)
    assert cli.fails(ExitCode.CONFLICT, "project", "create", "dup")["code"] == "name_taken"
    assert rows(api_app) == before  # refused with the request: no operation either


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (("project", "show", "nope"), "project"),
        (("app", "show", "nope", "-p", "nope"), "project"),
        (("op", "show", "op_1a21be1bc46141764b9aa98"), "operation"),
        (("op", "wait", "op_1a21be1bc46141764b9aa98"), "operation"),
        (("workspace", "show", "nope"), "workspace"),
        (("env", "show", "staging", "-p", "nope", "-a", "web"), "project"),
    ],
)
def test_what_does_not_exist_is_exit_4_naming_it(cli, argv, kind):
    error = cli.fails(ExitCode.NOT_FOUND, *argv)
    assert error["code"] == "not_found" and error["details"]["kind"] == kind


def test_a_target_read_from_rhone_toml_and_missing_ones_named_together(cli):
    cli.json("project", "create", "shop")
    cli.json("app", "create", "web", "-p", "shop")
    project_dir = cli.cwd / "shop"
    project_dir.mkdir()
    (project_dir / "rhone.toml").write_text(SHOP_WEB_TOML)
    assert [e["name"] for e in cli.json("env", "ls", cwd=project_dir)] == ["preview", "production"]
    assert cli.json("app", "show", cwd=project_dir)["name"] == "web"
    assert cli.json("app", "show", "-C", str(project_dir))["name"] == "web"

    sent = len(cli.transport.requests)
    missing = cli.fails(ExitCode.USAGE, "env", "ls")
    assert missing["message"] == "no project and no app given"
    assert missing["details"] == {"missing": ["project", "app"]}
    assert cli.fails(ExitCode.USAGE, "route", "ls", "-p", "shop")["message"] == "no app given"
    assert len(cli.transport.requests) == sent  # nothing was sent


def test_a_bad_token_is_exit_3_and_never_echoed(cli):
    result = cli("project", "ls", "--json", environ={"RHONE_TOKEN": "rht_not_a_real_token"})
    assert result.exit_code == ExitCode.AUTH
    assert result.json()["error"]["code"] == "invalid_token"
    assert "rht_not_a_real_token" not in result.stdout + result.stderr


def test_a_viewer_reads_but_cannot_mutate_and_each_refusal_is_audited(cli, api_app):
    cli.json("workspace", "invite", "viewer@example.com", "--role", "viewer")
    viewer = cli.json("workspace", "members")[-1]
    issued = cli.json("api", "/v1/workspaces/local/tokens", "-f", "name=viewer", "-f", f"user_id={viewer['user_id']}")
    as_viewer = {"RHONE_TOKEN": issued["secret"]}
    before = rows(api_app)
    for argv in (
        ["project", "create", "evil"],
        ["workspace", "invite", "x@example.com", "--role", "developer"],
    ):
        assert cli.fails(ExitCode.AUTH, *argv, environ=as_viewer)["code"] == "insufficient_role", argv
    assert rows(api_app) == before
    denied = [a for a in cli.json("workspace", "audit") if a["result"] == "denied"]
    assert [a["action"] for a in denied] == ["member.invite", "project.create"]
    assert cli("project", "ls", environ=as_viewer).exit_code == 0


def test_a_runtime_identity_cannot_mutate_tenancy_through_the_cli(cli, api_app):
    cli.json("project", "create", "shop")
    cli.json("app", "create", "web", "-p", "shop")
    minted = cli.json("api", "POST", "/v1/workspaces/local/projects/shop/apps/web/runtime-identities")
    runtime = {"RHONE_TOKEN": minted["token"]["secret"]}
    before = rows(api_app)
    for argv in (
        ["project", "create", "evil"],
        ["app", "create", "evil", "-p", "shop"],
        ["env", "create", "evil", "-p", "shop", "-a", "web"],
        ["workspace", "invite", "x@example.com", "--role", "owner"],
    ):
        error = cli.fails(ExitCode.AUTH, *argv, environ=runtime)
        assert error["code"] == "runtime_identity_forbidden", argv
    assert rows(api_app) == before
    denied = [a for a in cli.json("workspace", "audit") if a["result"] == "denied"]
    assert len(denied) == 4 and all(a["actor_kind"] == "runtime" for a in denied)
    assert cli("app", "show", "web", "-p", "shop", "--json", environ=runtime).exit_code == 0  # its own app


def test_init_links_the_directory(cli):
    project_dir = cli.cwd / "hello"
    project_dir.mkdir()
    result = cli("init", "--project", "hello", "--app", "site", "--json", cwd=project_dir)
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert_matches_schema(doc, "init.schema.json")
    assert doc["link"]["created"] == ["project", "app"]
    link = json.loads((project_dir / ".rhone" / "link.json").read_text())
    assert link["project_id"] == doc["link"]["project_id"]
    assert [e["name"] for e in cli.json("env", "ls", cwd=project_dir)] == ["preview", "production"]
    again = cli("init", "--link", "--json", cwd=project_dir)
    assert again.exit_code == 0 and again.json()["link"]["created"] == []
    assert len(cli.json("project", "ls")) == 1
    exists = cli.fails(ExitCode.CONFLICT, "init", cwd=project_dir)
    assert exists["code"] == "config_exists"


def test_lists_show_the_newest_and_say_when_more_exist(cli):
    for index in range(3):
        cli.json("project", "create", f"p{index}")
    limited = cli("project", "ls", "-L", "2", "--json")
    assert [p["name"] for p in limited.json()] == ["p2", "p1"]
    assert "showing the 2 newest" in limited.stderr
    assert [p["name"] for p in cli.json("project", "ls", "--all")] == ["p2", "p1", "p0"]
    both = cli.fails(ExitCode.USAGE, "project", "ls", "--all", "-L", "1")
    assert both["message"] == "--all and --limit cannot be combined"
