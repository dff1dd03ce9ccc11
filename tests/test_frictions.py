"""The frictions a new user met first, each fixed and pinned here (in process; a mock transport stands in for the API
where one is needed, and records what was sent).

Fresh HOME hints name `rhone local up`; missing --project and --app are reported together; `rhone help COMMAND`;
`rhone deploy --help` shows that bare `deploy` deploys; no `<int range>` metavars; a wait that loses the API names
the operation; build and app output cannot drive the terminal. (Promoting the current owner, which needs the real
promotion stages, is pinned in tests/e2e/test_promote_e2e.py.)
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from rhone_cli.errors import ExitCode
from rhone_cli.http import ApiClient
from rhone_cli.output import sanitize_terminal
from tests.conftest import VALID_TOML, RecordingTransport

API = "http://rhone.test"
ENVIRON = {"RHONE_API_URL": API, "RHONE_TOKEN": "rht_friction_secret_1a2b3c4d"}
DEP = "dep_1a21bf7bac50000e5b333bc"
OP = "op_1a21be1bc46141764b9aa98"
DIGEST = "sha256:" + "c" * 64


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setitem(ApiClient.__init__.__kwdefaults__, "sleep", recorded.append)
    return recorded


def test_a_fresh_home_points_at_rhone_local_up(rhone, tmp_path):
    (tmp_path / "rhone.toml").write_text(VALID_TOML)
    transport = RecordingTransport.refusing()

    deploy = rhone("deploy", transport=transport)
    assert deploy.exit_code == ExitCode.USAGE
    assert "error: no workspace given" in deploy.stderr
    assert "start Rhone Local with `rhone local up`" in deploy.stderr

    whoami = rhone("whoami", transport=transport)
    assert whoami.exit_code == ExitCode.AUTH
    assert "not logged in" in whoami.stderr and "start Rhone Local with `rhone local up`" in whoami.stderr
    assert transport.requests == []


def test_missing_project_and_app_are_reported_together(rhone):
    transport = RecordingTransport.refusing()
    result = rhone("env", "ls", "-w", "local", "--json", environ=ENVIRON, transport=transport)

    assert result.exit_code == ExitCode.USAGE
    error = result.json()["error"]
    assert error["message"] == "no project and no app given"
    assert error["hint"] == "pass --project NAME and --app NAME, or run inside a directory with a rhone.toml"
    assert error["details"] == {"missing": ["project", "app"]}
    assert transport.requests == []
    only_app = rhone("env", "ls", "-w", "local", "-p", "shop", environ=ENVIRON, transport=transport)
    assert "error: no app given" in only_app.stderr


@pytest.mark.parametrize("words", [("deploy",), ("deploy", "ls"), ("env", "bind"), ("promote",), ("status",), ("api",)])
def test_help_command_is_the_commands_help(rhone_subprocess, words):
    via_help = rhone_subprocess("help", *words)
    direct = rhone_subprocess(*words, "--help")
    assert via_help.exit_code == direct.exit_code == 0
    assert via_help.stdout == direct.stdout
    assert via_help.stdout.startswith(f"Usage: rhone {' '.join(words)} ")


def test_help_topics_and_unknown_words(rhone, rhone_subprocess):
    assert rhone("help", "exit-codes").stdout.startswith("CODE")
    unknown = rhone_subprocess("help", "nosuchthing")
    assert unknown.exit_code == ExitCode.USAGE and "No such command 'nosuchthing'" in unknown.stderr


def test_deploy_usage_shows_that_the_command_is_optional(rhone_subprocess):
    usage = rhone_subprocess("deploy", "--help").stdout.splitlines()[0]
    assert usage == "Usage: rhone deploy [OPTIONS] [COMMAND [ARGS]...]"


def _help_pages():
    """Every command's help text, rendered by the command tree itself: {"deploy ls": "Usage: …"}."""
    import typer

    from rhone_cli import command_tree
    from rhone_cli.main import app

    pages = {}

    def walk(command, ctx, path):
        pages[" ".join(path)] = command.get_help(ctx)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, typer.Context(sub, info_name=name, parent=ctx), (*path, name))

    root = command_tree.build(app)
    walk(root, typer.Context(root, info_name="rhone"), ())
    return pages


def test_no_help_page_shows_a_range_metavar():
    pages = _help_pages()
    assert len(pages) > 50 and "--instances N" in pages["app scale"]  # the pages are real
    offenders = {path: re.findall(r"<\w+ range>", text) for path, text in pages.items()}
    assert {path: found for path, found in offenders.items() if found} == {}


def _api(handler):
    return RecordingTransport(httpx.MockTransport(handler))


def test_an_unreachable_api_during_a_wait_names_the_operation(rhone, sleeps):
    op = {"id": OP, "kind": "project.create", "state": "queued", "version": 1, "terminal": False, "outcome": "running"}
    op["stages"] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json=op)
        raise httpx.ConnectError("connection refused", request=request)

    result = rhone("project", "create", "shop", "-w", "local", "--json", environ=ENVIRON, transport=_api(handler))

    assert result.exit_code == ExitCode.UNREACHABLE
    error = result.json()["error"]
    assert error["operation_id"] == OP
    assert f"then resume with `rhone op wait {OP}`" in error["hint"]


BUILD_LOG = (
    "compiling\r\n\x1b[2J\x1b[H\x1b]0;pwned title\x07\x1b]52;c;cm0gLXJmIH4=\x07progress 10%\rprogress 100%\n"
    "\x1b[31merror:\x1b[0m boom\x07\x1bc\n"
)


def test_build_and_app_output_cannot_drive_the_terminal(rhone):
    logs = {"build": BUILD_LOG, "allocations": {"alloc_1": "app says \x1b]52;c;c2VjcmV0\x07hi\n"}}
    result = rhone("deploy", "logs", DEP, environ=ENVIRON, transport=_api(lambda r: httpx.Response(200, json=logs)))

    assert result.exit_code == 0
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "\r" not in result.stdout
    assert "progress 10%\nprogress 100%" in result.stdout
    assert "error: boom^G" in result.stdout
    assert "app says hi" in result.stdout
    as_json = rhone(
        "deploy", "logs", DEP, "--json", environ=ENVIRON, transport=_api(lambda r: httpx.Response(200, json=logs))
    )
    assert json.loads(as_json.stdout)["build"] == BUILD_LOG  # the document keeps the log exactly, escaped as JSON
    assert "\x1b" not in as_json.stdout


def test_a_failure_log_tail_is_sanitized_too(rhone):
    op = {
        "id": OP,
        "kind": "deploy",
        "state": "failed",
        "version": 5,
        "terminal": True,
        "outcome": "failed",
        "target_id": DEP,
        "error": {"code": "build_failed", "message": "the build failed", "exit_category": "failure"},
        "stages": [],
    }
    deployment = {"id": DEP, "evidence": {"log_tail": BUILD_LOG}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=op if "operations" in request.url.path else deployment)

    result = rhone("op", "wait", OP, environ=ENVIRON, transport=_api(handler))

    assert result.exit_code == ExitCode.FAILED
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "error: boom" in result.stderr
    assert f"hint: logs: `rhone deploy logs {DEP}`; stages: `rhone op show {OP}`" in result.stderr


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[31mred\x1b[0m", "red"),
        ("a\x1b]52;c;aGk=\x07b", "ab"),
        ("a\x1b]0;title\x1b\\b", "ab"),
        ("a\x1bPdcs\x1b\\b", "ab"),
        ("a\x9b2Jb", "ab"),
        ("a\x1bcb", "ab"),
        ("bell\x07", "bell^G"),
        ("x\ry", "x\ny"),
        ("tab\tend\n", "tab\tend\n"),
        ("nul\x00del\x7f", "nul^@del^?"),
        ("unicode ✓ stays", "unicode ✓ stays"),
    ],
)
def test_sanitize_terminal(text, shown):
    assert sanitize_terminal(text) == shown


def test_every_recorded_stage_is_shown_even_those_no_poll_saw(rhone):
    """One long poll returns after three stages passed: each is shown, in order, not only the last."""
    stages = ["queued", "cloning", "building", "validating", "preview_ready"]

    def op(version: int, upto: int, terminal: bool = False) -> dict:
        return {
            "id": OP,
            "kind": "deploy",
            "state": stages[upto - 1],
            "version": version,
            "terminal": terminal,
            "outcome": "succeeded" if terminal else "running",
            "target_id": DEP,
            "stages": [{"state": s, "entered_at": f"2026-11-30T10:00:0{i}+00:00"} for i, s in enumerate(stages[:upto])],
        }

    answers = iter([op(1, 1), op(4, 4), op(5, 5, terminal=True)])
    deployment = {"id": DEP, "state": "preview_ready", "url": "http://dep-x.localhost:8471", "evidence": {}}

    def handler(request: httpx.Request) -> httpx.Response:
        if "/operations/" in request.url.path:
            return httpx.Response(200, json=next(answers))
        return httpx.Response(200, json=deployment)

    result = rhone("op", "wait", OP, "--progress", "plain", environ=ENVIRON, transport=_api(handler))

    assert result.exit_code == 0, result.stderr
    shown = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert shown == ["cloning", "building", "validating", "preview_ready"]
    assert result.stdout.startswith("Preview: http://dep-x.localhost:8471")
