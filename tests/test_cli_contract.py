"""The CLI contract of PRODUCT.md §4: command tree, global options, --json, exit codes, no pretending."""

from __future__ import annotations

import json
import re

import pytest

from rhone_cli.errors import EXIT_CODE_MEANINGS
from tests.conftest import REPO, VALID_TOML, assert_matches_schema

NOUNS = [
    "workspace",
    "project",
    "app",
    "env",
    "deploy",
    "promote",
    "route",
    "region",
    "op",
    "artifact",
    "local",
    "config",
]
OTHERS = ["login", "logout", "whoami", "init", "completion", "help"]


# Every command whose server side arrives later: each must refuse honestly.
def test_help_lists_every_noun(rhone_subprocess):
    result = rhone_subprocess("--help")
    assert result.exit_code == 0
    listed = set(re.findall(r"^  ([a-z-]+)\s", result.stdout.split("Commands:")[1], re.M))
    assert set(NOUNS + OTHERS) <= listed, listed


def test_version(rhone_subprocess):
    from rhone_cli import __version__

    for args in (["--version"], ["--verbose", "--version"]):
        result = rhone_subprocess(*args)
        assert (result.exit_code, result.stdout) == (0, f"rhone {__version__}\n")


@pytest.mark.parametrize("position", ["before", "after"])
def test_global_options_work_before_or_after_the_command(rhone, position):
    args = ["help", "exit-codes"]
    argv = ["--json", "--no-color", *args] if position == "before" else [*args, "--no-color", "--json"]
    result = rhone(*argv)
    assert result.exit_code == 0
    assert_matches_schema(result.json(), "help-exit-codes.schema.json")


def test_value_global_options_are_hoisted_with_their_value(rhone, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "rhone.toml").write_text(VALID_TOML)
    for argv in (
        ["-C", str(project), "config", "validate"],
        ["config", "validate", "-C", str(project)],
        ["config", "validate", f"--cwd={project}"],
    ):
        result = rhone(*argv)
        assert result.exit_code == 0, (argv, result.stderr)
        assert "valid" in result.stdout


def test_double_dash_ends_option_hoisting():
    from rhone_cli.main import hoist_global_options

    assert hoist_global_options(["app", "x", "--json", "--", "--json"]) == ["--json", "app", "x", "--", "--json"]
    assert hoist_global_options(["a", "--profile", "p", "-v"]) == ["--profile", "p", "-v", "a"]


def test_exit_code_table_is_published_identically(rhone):
    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| ([^|]+?) \|$", readme, re.M))
    assert {int(k): v for k, v in rows.items()} == {int(c): m for c, m in EXIT_CODE_MEANINGS.items()}
    result = rhone("help", "exit-codes")
    for code, meaning in EXIT_CODE_MEANINGS.items():
        assert re.search(rf"^{int(code)}\s+{code.name.lower()}\s+{re.escape(meaning)}$", result.stdout, re.M)


def test_usage_errors_exit_2_and_json_mode_keeps_stdout_a_document(rhone):
    result = rhone("config", "validate", "--no-such-flag")
    assert result.exit_code == 2
    assert "No such option" in result.stderr and result.stdout == ""
    result = rhone("config", "validate", "--no-such-flag", "--json")
    assert result.exit_code == 2
    assert_matches_schema(result.json(), "error.schema.json")
    assert result.json()["error"]["code"] == "usage_error"
    result = rhone("nosuchcommand")
    assert result.exit_code == 2


@pytest.mark.parametrize(
    "argv, environ",
    [
        (["--progress", "fancy", "help", "exit-codes"], {}),
        (["help", "exit-codes"], {"RHONE_PROGRESS": "fancy"}),
        (["help", "exit-codes"], {"RHONE_REQUEST_TIMEOUT": "soon"}),
        (["--request-timeout", "0", "help", "exit-codes"], {}),
        (["-C", "/nonexistent/dir", "help", "exit-codes"], {}),
    ],
)
def test_bad_global_settings_are_usage_errors(rhone, argv, environ):
    result = rhone(*argv, environ=environ)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""


def test_unexpected_errors_are_a_message_not_a_traceback(rhone, monkeypatch):
    from rhone_cli.config import project

    def explode(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(project, "load_file", explode)
    result = rhone("config", "validate", "-f", "x.toml")
    assert result.exit_code == 1
    assert "unexpected error: ValueError: boom" in result.stderr
    assert "Traceback" not in result.stderr
    verbose = rhone("--verbose", "config", "validate", "-f", "x.toml")
    assert "Traceback" in verbose.stderr and verbose.exit_code == 1
    as_json = rhone("--json", "config", "validate", "-f", "x.toml")
    assert as_json.json()["error"]["code"] == "internal_error"


# -- init -------------------------------------------------------------------------------------------------------
def test_init_in_an_empty_directory_writes_a_valid_file(rhone, tmp_path):
    directory = tmp_path / "My Shop"
    directory.mkdir()
    result = rhone("init", "--json", cwd=directory)
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert_matches_schema(doc, "init.schema.json")
    assert doc["link"] is None and "Not linked: not logged in" in result.stderr
    assert doc["config"]["project"]["name"] == "my-shop"
    assert rhone("config", "validate", cwd=directory).exit_code == 0


def test_init_refuses_to_overwrite(rhone, tmp_path):
    (tmp_path / "rhone.toml").write_text("# mine\n")
    result = rhone("init", "--project", "x")
    assert result.exit_code == 5
    assert "already exists" in result.stderr
    assert (tmp_path / "rhone.toml").read_text() == "# mine\n"


def test_init_with_an_invalid_name_writes_nothing(rhone, tmp_path):
    result = rhone("init", "--project", "Bad--Name")
    assert result.exit_code == 2
    assert "project.name" in result.stderr
    assert not (tmp_path / "rhone.toml").exists()


@pytest.mark.parametrize("environ, tty", [({}, False), ({"CI": "true"}, True), ({"RHONE_NO_INPUT": "1"}, True)])
def test_init_never_prompts_without_input_and_names_the_flag(rhone, tmp_path, environ, tty):
    directory = tmp_path / "123"  # no usable default name
    directory.mkdir()
    result = rhone("init", cwd=directory, environ=environ, tty=tty)
    assert result.exit_code == 2
    assert "--project" in result.stderr
    assert not (directory / "rhone.toml").exists()


def test_no_input_flag_also_stops_prompts(rhone, tmp_path):
    directory = tmp_path / "123"
    directory.mkdir()
    result = rhone("--no-input", "init", cwd=directory, tty=True)
    assert result.exit_code == 2 and "--project" in result.stderr


# -- config show ---------------------------------------------------------------------------------------------------
def test_config_show_fills_defaults(rhone, tmp_path):
    (tmp_path / "rhone.toml").write_text(VALID_TOML)
    result = rhone("config", "show", "--json")
    assert result.exit_code == 0
    doc = result.json()
    assert_matches_schema(doc, "config-show.schema.json")
    assert doc["config"]["process"]["health_path"] == "/healthz"
    assert set(doc["config"]["environments"]) == {"preview", "production"}
    human = rhone("config", "show")
    assert "[environments.production]" in human.stdout and "readiness_timeout = 60" in human.stdout


def test_config_commands_need_no_credentials_or_server(rhone, tmp_path):
    (tmp_path / "rhone.toml").write_text(VALID_TOML)
    result = rhone("config", "validate", environ={"RHONE_API_URL": "http://127.0.0.1:1"})
    assert result.exit_code == 0


def test_missing_rhone_toml_is_a_usage_error(rhone):
    result = rhone("config", "show", "--json")
    assert result.exit_code == 2
    assert result.json()["error"]["code"] == "config_not_found"


# -- schemas ---------------------------------------------------------------------------------------------------------
def test_committed_schemas_match_the_models():
    from rhone_cli.schemas import generate

    directory = REPO / "schemas"
    generated = generate()
    for name, text in generated.items():
        assert (directory / name).read_text() == text, f"schemas/{name} drifted: run `python -m rhone_cli.schemas`"
    committed = {p.name for p in directory.glob("*.json")} - {"openapi.json"}
    assert committed == set(generated), "schemas/ holds files no model generates"


def test_committed_openapi_matches_the_api():
    from rhone_local.openapi import TARGET, document

    assert TARGET.read_text() == document(), "schemas/openapi.json drifted: run `python -m rhone_local.openapi`"


def test_help_environment_document(rhone):
    result = rhone("help", "environment", "--json")
    assert_matches_schema(result.json(), "help-environment.schema.json")
    names = {row["name"] for row in result.json()["environment"]}
    assert {"RHONE_TOKEN", "RHONE_API_URL", "RHONE_PROFILE", "NO_COLOR", "CI"} <= names


def test_json_output_is_exactly_one_document(rhone, tmp_path):
    (tmp_path / "rhone.toml").write_text(VALID_TOML)
    for argv in (
        ["config", "validate", "--json"],
        ["config", "show", "--json"],
        ["help", "exit-codes", "--json"],
        ["deploy", "--json"],
        ["whoami", "--json"],
        ["project", "ls", "--json"],
    ):
        result = rhone(*argv)
        json.loads(result.stdout)  # raises on a second document or stray text
        assert result.stdout.strip().startswith("{")


# Variables of protocols rhone speaks with other programs, not settings a person makes.
INTERNAL_VARIABLES = {"COMP_CWORD", "COMP_WORDS", "_TYPER_COMPLETE_ARGS", "_TYPER_COMPLETE_FISH_ACTION"}


def test_help_environment_lists_every_variable_rhone_reads(rhone):
    """Every variable the CLI's code reads (`environ.get("X")`, `environ["X"]`, the proxy variables, the CI run ids)
    is on the page; a new one that is not fails here."""
    from rhone_cli.api import CI_RUN_VARIABLES

    source = "\n".join(p.read_text() for p in (REPO / "rhone_cli").rglob("*.py"))
    read = set(re.findall(r"environ(?:\.get\(|\[)\"([A-Z_][A-Z0-9_]*)\"", source))
    read |= set(re.findall(r"\"((?:RHONE|SSL|CURL|REQUESTS)_[A-Z_]+)\"", source))
    read |= {"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "NO_COLOR", *CI_RUN_VARIABLES}
    listed = {row["name"] for row in rhone("help", "environment", "--json").json()["environment"]}
    described = " ".join(row["meaning"] for row in rhone("help", "environment", "--json").json()["environment"])
    missing = {
        name for name in read - INTERNAL_VARIABLES if name not in listed and not re.search(rf"\b{name}\b", described)
    }
    assert len(read) > 25 and missing == set()
