"""A corpus of malformed `rhone.toml` files (tests/fixtures/bad_configs/), each with its expected problem.

Every case goes through `rhone config validate` (human and `--json`) and `rhone config show` (the command that
needs a valid config): exit 2, the exact line and dotted key, the suggestion where one is expected, the documented
problem line on stderr, exactly one schema-valid JSON document on stdout under `--json`, no traceback, and the file
left byte-for-byte unchanged. The expected values below were written by reading each fixture, not by running rhone.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import VALID_TOML, assert_matches_schema

BAD_CONFIGS = Path(__file__).resolve().parent / "fixtures" / "bad_configs"

# The documented human shape of one problem line on stderr (README: `file:line: key.path: message`).
PROBLEM_LINE = re.compile(r"^  \S+rhone\.toml:\d+(:\d+)?: ", re.M)


@dataclass(frozen=True)
class Expect:
    file: str
    line: int
    key: str | None
    message_contains: str
    suggestion: str | None = None
    column: int | None = None


SLUG_MESSAGE = "must start with a lowercase letter and contain only lowercase letters, digits and single hyphens"

CASES = [
    # -- TOML syntax errors: no key, a line and a column ---------------------------------------------------------
    Expect(
        "syntax_unclosed_string.toml",
        line=2,
        column=14,
        key=None,
        message_contains="TOML syntax error: Illegal character '\\n'",
    ),
    Expect(
        "syntax_missing_value.toml", line=8, column=10, key=None, message_contains="TOML syntax error: Invalid value"
    ),
    Expect(
        "syntax_duplicate_key.toml",
        line=4,
        column=15,
        key=None,
        message_contains="TOML syntax error: Cannot overwrite a value",
    ),
    Expect(
        "syntax_bad_table_header.toml",
        line=4,
        column=5,
        key=None,
        message_contains="TOML syntax error: Expected ']' at the end of a table declaration",
    ),
    Expect(
        "syntax_duplicate_table.toml",
        line=10,
        column=5,
        key=None,
        message_contains="TOML syntax error: Cannot declare ('app',) twice",
    ),
    # An array left open until the end of the file: tomllib gives no position, rhone names the last line.
    Expect("syntax_unclosed_array_eof.toml", line=13, key=None, message_contains="Invalid value at end of file"),
    # -- wrong types (strict: TOML has real types) ----------------------------------------------------------------
    Expect(
        "type_string_for_int.toml",
        line=9,
        key="build.timeout",
        message_contains="Input should be a valid integer (got str '600')",
    ),
    Expect(
        "type_int_for_string.toml",
        line=5,
        key="app.name",
        message_contains="Input should be a valid string (got int 5)",
    ),
    Expect(
        "type_string_for_bool.toml",
        line=11,
        key="environments.production.approval_required",
        message_contains="Input should be a valid boolean (got str 'yes')",
    ),
    Expect(
        "type_array_for_table.toml",
        line=10,
        key="build",
        message_contains="Input should be a valid dictionary or instance of BuildSection (got list",
    ),
    Expect(
        "type_table_for_array.toml",
        line=11,
        key="runtime.services",
        message_contains="Input should be a valid list (got dict",
    ),
    Expect(
        "type_bool_for_int.toml",
        line=9,
        key="process.readiness_timeout",
        message_contains="Input should be a valid integer (got bool True)",
    ),
    Expect(
        "type_float_for_int.toml",
        line=8,
        key="build.timeout",
        message_contains="Input should be a valid integer (got float 60.5)",
    ),
    # -- unknown keys and sections ----------------------------------------------------------------------------
    Expect("unknown_key_typo.toml", line=8, key="build.timout", message_contains="unknown key", suggestion="timeout"),
    Expect(
        "unknown_key_no_suggestion.toml",
        line=9,
        key="process.colour",
        message_contains="unknown key (allowed here: start, health_path, readiness_timeout, readiness, drain_timeout)",
    ),
    Expect(
        "unknown_key_in_provider_typo.toml",
        line=12,
        key="providers.db.requried",
        message_contains="unknown key",
        suggestion="required",
    ),
    Expect(
        "unknown_key_in_environment_typo.toml",
        line=11,
        key="environments.production.aproval_required",
        message_contains="unknown key",
        suggestion="approval_required",
    ),
    Expect(
        "unknown_key_dotted_inline.toml",
        line=12,
        key="vango.state",
        message_contains="unknown key (allowed here: state_manifest, state_schema, routes)",
    ),
    Expect(
        "unknown_section.toml",
        line=10,
        key="deploy",
        message_contains="unknown key (allowed here: project, app, build, process, vango, database, environments",
    ),
    Expect("unknown_section_typo.toml", line=7, key="biuld", message_contains="unknown key", suggestion="build"),
    # -- missing required keys: reported at the table that should hold them ----------------------------------------
    Expect("missing_project_name.toml", line=1, key="project.name", message_contains="required key is missing"),
    Expect("missing_app_name.toml", line=4, key="app.name", message_contains="required key is missing"),
    Expect("missing_process_start.toml", line=7, key="process.start", message_contains="required key is missing"),
    # A whole missing top-level table belongs to the root table, which starts on line 1.
    Expect("missing_process_section.toml", line=1, key="process", message_contains="required key is missing"),
    # -- slugs ------------------------------------------------------------------------------------------------------
    Expect("slug_uppercase.toml", line=2, key="project.name", message_contains=SLUG_MESSAGE),
    Expect("slug_double_hyphen.toml", line=5, key="app.name", message_contains=SLUG_MESSAGE),
    Expect("slug_leading_digit.toml", line=3, key="project.workspace", message_contains=SLUG_MESSAGE),
    Expect("slug_too_long.toml", line=2, key="project.name", message_contains="must be at most 40 characters"),
    Expect("slug_environment_name.toml", line=10, key="environments.Staging", message_contains=SLUG_MESSAGE),
    # -- globs ------------------------------------------------------------------------------------------------------
    Expect(
        "glob_unclosed_bracket.toml",
        line=8,
        key="build.include[0]",
        message_contains="glob 'src/[abc' has an unclosed '['",
    ),
    Expect(
        "glob_double_star_in_segment.toml",
        line=10,
        key="build.exclude[1]",
        message_contains="glob 'a/**b': '**' must be a whole path segment",
    ),
    Expect("glob_empty.toml", line=8, key="build.include[1]", message_contains="glob must not be empty"),
    Expect(
        "glob_dotdot.toml",
        line=10,
        key="build.include[1]",
        message_contains="must stay inside the project directory (no '..' segments)",
    ),
    # -- paths ------------------------------------------------------------------------------------------------------
    Expect(
        "output_absolute.toml",
        line=8,
        key="build.output",
        message_contains="must be relative to the project directory, not an absolute path",
    ),
    Expect(
        "output_dotdot.toml",
        line=8,
        key="build.output",
        message_contains="must stay inside the project directory (no '..' segments)",
    ),
    Expect(
        "output_windows_absolute.toml",
        line=8,
        key="build.output",
        message_contains="must be relative to the project directory, not an absolute path",
    ),
    Expect(
        "migrations_absolute.toml",
        line=11,
        key="database.migrations",
        message_contains="must be relative to the project directory, not an absolute path",
    ),
    # -- enumerations, bounds, URL paths, commands ---------------------------------------------------------------
    Expect(
        "runtime_service_typo.toml",
        line=11,
        key="runtime.services[1]",
        message_contains="'brodcast' is not one of session, broadcast, cache",
        suggestion="broadcast",
    ),
    Expect(
        "provider_kind_bad.toml",
        line=11,
        key="providers.db.kind",
        message_contains="'postgresql' is not one of postgres, mysql, redis, s3, smtp, sqlite, generic",
        suggestion="postgres",
    ),
    Expect(
        "provider_kind_no_suggestion.toml",
        line=11,
        key="providers.search.kind",
        message_contains="'elasticsearch' is not one of postgres, mysql",
    ),
    Expect("timeout_out_of_range.toml", line=8, key="build.timeout", message_contains="less than or equal to 7200"),
    Expect(
        "drain_timeout_negative.toml",
        line=9,
        key="process.drain_timeout",
        message_contains="greater than or equal to 0",
    ),
    Expect(
        "drain_timeout_huge.toml", line=9, key="process.drain_timeout", message_contains="less than or equal to 3600"
    ),
    Expect(
        "drain_timeout_not_a_number.toml",
        line=9,
        key="process.drain_timeout",
        message_contains="Input should be a valid integer (got str '30s')",
    ),
    Expect(
        "readiness_unknown.toml",
        line=9,
        key="process.readiness",
        message_contains="'grpc' is not one of http, tcp",
    ),
    Expect(
        "readiness_timeout_zero.toml",
        line=9,
        key="process.readiness_timeout",
        message_contains="greater than or equal to 1",
    ),
    Expect(
        "health_path_no_slash.toml",
        line=9,
        key="process.health_path",
        message_contains="must be an absolute URL path such as '/healthz'",
    ),
    Expect("empty_start_command.toml", line=8, key="process.start", message_contains="command must not be empty"),
    # -- encoding ---------------------------------------------------------------------------------------------------
    # Line 3 is `# caf\xe9 au lait` (Latin-1): the bad byte is the 6th character of the line, byte 30 of the file.
    Expect("non_utf8.toml", line=3, column=6, key=None, message_contains="not valid UTF-8 (byte 30)"),
    # -- line tracking: things that must not shift later line numbers ---------------------------------------------
    # A multi-line string whose content looks like a table header and a key.
    Expect(
        "multiline_string_before_error.toml",
        line=13,
        key="build.timout",
        message_contains="unknown key",
        suggestion="timeout",
    ),
    # A comment holding U+2028 (allowed by TOML; str.splitlines() would break the line there).
    Expect(
        "unicode_line_separator_before_error.toml",
        line=9,
        key="build.timout",
        message_contains="unknown key",
        suggestion="timeout",
    ),
    # A multi-line basic string ending in a quote right before the closing delimiter (`""""`).
    Expect(
        "multiline_string_quote_before_close.toml",
        line=9,
        key="process.health_path",
        message_contains="must be an absolute URL path",
    ),
]

# multiple_problems.toml: (line, key, suggestion) of every problem, in the order they are reported.
MULTIPLE_PROBLEMS = [
    (2, "project.name", None),
    (8, "build.timout", "timeout"),
    (9, "build.output", None),
    (10, "build.exclude[0]", None),
    (12, "process.start", None),
    (13, "process.health_path", None),
    (16, "runtime.services[0]", "session"),
]


# -- helpers ------------------------------------------------------------------------------------------------------
def _project_with(tmp_path: Path, fixture: str) -> tuple[Path, bytes]:
    """Copy a fixture to <tmp>/proj/rhone.toml; return the path and its exact bytes."""
    project = tmp_path / "proj"
    project.mkdir(exist_ok=True)
    target = project / "rhone.toml"
    shutil.copyfile(BAD_CONFIGS / fixture, target)
    return target, target.read_bytes()


def _single_json_document(stdout: str):
    """stdout must hold exactly one JSON document and nothing else (whitespace around it aside)."""
    decoder = json.JSONDecoder()
    text = stdout.lstrip()
    assert text, "stdout is empty"
    document, end = decoder.raw_decode(text)
    assert text[end:].strip() == "", f"more than one JSON document on stdout: {text[end:]!r}"
    return document


def _no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert "unexpected error" not in stderr


def _expected_text(path: Path, case: Expect) -> str:
    where = f"{path}:{case.line}" + (f":{case.column}" if case.column else "")
    key = f" {case.key}:" if case.key else ""
    return f"{where}:{key} "


def _problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("  ") and not line.startswith("  hint:")]


def _check_problem(problem: dict, path: Path, case: Expect) -> None:
    assert problem["file"] == str(path)
    assert problem["line"] == case.line, problem
    assert problem["column"] == case.column, problem
    assert problem["key"] == case.key, problem
    assert case.message_contains in problem["message"], problem
    assert problem["suggestion"] == case.suggestion, problem
    assert problem["text"].startswith(_expected_text(path, case)), problem
    if case.suggestion:
        assert problem["text"].endswith(f" (did you mean {case.suggestion!r}?)"), problem
    else:
        assert "did you mean" not in problem["text"], problem


# -- the corpus ---------------------------------------------------------------------------------------------------
def test_corpus_is_complete():
    on_disk = {p.name for p in BAD_CONFIGS.glob("*.toml")}
    listed = {case.file for case in CASES} | {"multiple_problems.toml"}
    assert on_disk == listed, {"untested": on_disk - listed, "missing": listed - on_disk}
    assert len(CASES) >= 24
    # Every fixture really is a problem for rhone (a sanity check on the corpus, not on rhone).
    assert len({case.file for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file.removesuffix(".toml"))
def test_validate_human(rhone, tmp_path, case):
    path, before = _project_with(tmp_path, case.file)
    result = rhone("config", "validate", cwd=path.parent)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    _no_traceback(result.stderr)
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {path} is not valid: 1 problem"
    problems = _problem_lines(result.stderr)
    assert len(problems) == 1, result.stderr
    (problem,) = problems
    assert PROBLEM_LINE.match(problem), problem
    assert problem.startswith("  " + _expected_text(path, case)), problem
    assert case.message_contains in problem
    if case.suggestion:
        assert problem.endswith(f" (did you mean {case.suggestion!r}?)"), problem
    else:
        assert "did you mean" not in problem
    assert lines[-1].startswith("  hint: ")
    assert path.read_bytes() == before


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file.removesuffix(".toml"))
def test_validate_json(rhone, tmp_path, case):
    path, before = _project_with(tmp_path, case.file)
    result = rhone("config", "validate", "--json", cwd=path.parent)
    assert result.exit_code == 2, result.stderr
    assert result.stderr == ""
    document = _single_json_document(result.stdout)
    assert_matches_schema(document, "config-validate.schema.json")
    assert document["file"] == str(path)
    assert document["valid"] is False
    assert len(document["problems"]) == 1, document
    _check_problem(document["problems"][0], path, case)
    assert path.read_bytes() == before


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file.removesuffix(".toml"))
def test_show_refuses_an_invalid_config(rhone, tmp_path, case):
    path, before = _project_with(tmp_path, case.file)

    result = rhone("config", "show", "--json", cwd=path.parent)
    assert result.exit_code == 2, result.stderr
    assert result.stderr == ""
    document = _single_json_document(result.stdout)
    assert_matches_schema(document, "error.schema.json")
    error = document["error"]
    assert error["code"] == "invalid_config"
    assert error["exit_code"] == 2
    assert error["retryable"] is False
    assert error["message"] == f"{path} is not valid: 1 problem"
    assert error["details"]["file"] == str(path)
    assert len(error["details"]["problems"]) == 1
    _check_problem(error["details"]["problems"][0], path, case)
    # The same problems as `config validate --json` reports.
    validate = rhone("config", "validate", "--json", cwd=path.parent).json()
    assert error["details"]["problems"] == validate["problems"]

    human = rhone("config", "show", cwd=path.parent)
    assert human.exit_code == 2
    assert human.stdout == ""
    _no_traceback(human.stderr)
    assert PROBLEM_LINE.search(human.stderr), human.stderr
    assert path.read_bytes() == before


def test_every_problem_of_a_file_is_listed(rhone, tmp_path):
    path, before = _project_with(tmp_path, "multiple_problems.toml")
    count = len(MULTIPLE_PROBLEMS)
    assert count == 7

    human = rhone("config", "validate", cwd=path.parent)
    assert human.exit_code == 2
    _no_traceback(human.stderr)
    assert human.stderr.splitlines()[0] == f"error: {path} is not valid: {count} problems"
    problem_lines = _problem_lines(human.stderr)
    assert len(problem_lines) == count, human.stderr
    for text, (line, key, suggestion) in zip(problem_lines, MULTIPLE_PROBLEMS, strict=True):
        assert PROBLEM_LINE.match(text), text
        assert text.startswith(f"  {path}:{line}: {key}: "), text
        assert (f"(did you mean {suggestion!r}?)" in text) == bool(suggestion), text

    result = rhone("config", "validate", "--json", cwd=path.parent)
    assert result.exit_code == 2
    document = _single_json_document(result.stdout)
    assert_matches_schema(document, "config-validate.schema.json")
    assert [(p["line"], p["key"], p["suggestion"]) for p in document["problems"]] == MULTIPLE_PROBLEMS

    show = rhone("config", "show", "--json", cwd=path.parent)
    assert show.exit_code == 2
    error = _single_json_document(show.stdout)
    assert_matches_schema(error, "error.schema.json")
    assert error["error"]["message"] == f"{path} is not valid: {count} problems"
    assert error["error"]["details"]["problems"] == document["problems"]
    assert path.read_bytes() == before


# -- around the corpus --------------------------------------------------------------------------------------------
def test_the_valid_file_exits_0(rhone, tmp_path):
    path = tmp_path / "rhone.toml"
    path.write_text(VALID_TOML)
    human = rhone("config", "validate")
    assert (human.exit_code, human.stderr) == (0, "")
    assert human.stdout == f"{path}: valid (project hello, app web)\n"
    result = rhone("config", "validate", "--json")
    assert result.exit_code == 0
    document = _single_json_document(result.stdout)
    assert_matches_schema(document, "config-validate.schema.json")
    assert document == {"file": str(path), "valid": True, "problems": []}
    show = rhone("config", "show", "--json")
    assert show.exit_code == 0
    assert_matches_schema(_single_json_document(show.stdout), "config-show.schema.json")
    assert path.read_text() == VALID_TOML


def test_file_option_with_a_missing_file(rhone, tmp_path):
    missing = tmp_path / "nowhere" / "rhone.toml"
    human = rhone("config", "validate", "-f", str(missing))
    assert human.exit_code == 2
    assert human.stdout == ""
    _no_traceback(human.stderr)
    assert f"  {missing}: file not found" in human.stderr.splitlines()

    result = rhone("config", "validate", "-f", str(missing), "--json")
    assert result.exit_code == 2
    document = _single_json_document(result.stdout)
    assert_matches_schema(document, "config-validate.schema.json")
    assert document["valid"] is False
    assert [(p["line"], p["key"], p["message"]) for p in document["problems"]] == [(None, None, "file not found")]

    show = rhone("config", "show", "-f", str(missing), "--json")
    assert show.exit_code == 2
    error = _single_json_document(show.stdout)
    assert_matches_schema(error, "error.schema.json")
    assert error["error"]["details"]["problems"][0]["message"] == "file not found"
    assert not missing.exists()


def test_file_option_reads_the_named_file(rhone, tmp_path):
    # -f takes any file name, relative to the working directory; a valid rhone.toml next to it is ignored.
    (tmp_path / "rhone.toml").write_text(VALID_TOML)
    shutil.copyfile(BAD_CONFIGS / "unknown_key_typo.toml", tmp_path / "other.toml")
    result = rhone("config", "validate", "-f", "other.toml", "--json")
    assert result.exit_code == 2
    document = _single_json_document(result.stdout)
    assert document["file"] == str(tmp_path / "other.toml")
    assert [(p["line"], p["key"], p["suggestion"]) for p in document["problems"]] == [(8, "build.timout", "timeout")]


def test_a_rhone_toml_in_a_parent_directory_is_used(rhone, tmp_path):
    path, before = _project_with(tmp_path, "unknown_key_typo.toml")
    deep = path.parent / "src" / "pkg"
    deep.mkdir(parents=True)
    human = rhone("config", "validate", cwd=deep)
    assert human.exit_code == 2
    assert f"  {path}:8: build.timout: unknown key (did you mean 'timeout'?)" in human.stderr.splitlines()
    result = rhone("config", "validate", "--json", cwd=deep)
    assert result.exit_code == 2
    assert result.json()["file"] == str(path)
    show = rhone("config", "show", "--json", cwd=deep)
    assert show.exit_code == 2 and show.json()["error"]["details"]["file"] == str(path)
    assert path.read_bytes() == before

    path.write_text(VALID_TOML)
    assert rhone("config", "validate", cwd=deep).exit_code == 0


def test_dash_C_points_at_the_project(rhone, tmp_path):
    path, before = _project_with(tmp_path, "runtime_service_typo.toml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for argv in (
        ["-C", str(path.parent), "config", "validate", "--json"],
        ["config", "validate", "--json", "-C", str(path.parent)],
        ["-C", "../proj", "config", "validate", "--json"],
        ["config", "validate", "--json", f"--cwd={path.parent}"],
    ):
        result = rhone(*argv, cwd=elsewhere)
        assert result.exit_code == 2, (argv, result.stderr)
        document = _single_json_document(result.stdout)
        assert document["file"] == str(path), argv
        assert [(p["line"], p["key"], p["suggestion"]) for p in document["problems"]] == [
            (11, "runtime.services[1]", "broadcast")
        ], argv
    show = rhone("-C", str(path.parent), "config", "show", "--json", cwd=elsewhere)
    assert show.exit_code == 2 and show.json()["error"]["code"] == "invalid_config"
    # -C DIR also anchors a relative -f.
    result = rhone("-C", str(path.parent), "config", "validate", "-f", "rhone.toml", "--json", cwd=elsewhere)
    assert result.exit_code == 2 and result.json()["file"] == str(path)
    missing = rhone("-C", str(tmp_path / "no-such-dir"), "config", "validate", cwd=elsewhere)
    assert missing.exit_code == 2
    assert "no such directory" in missing.stderr
    _no_traceback(missing.stderr)
    assert path.read_bytes() == before


@pytest.mark.parametrize("fixture", ["unknown_key_typo.toml", "syntax_unclosed_string.toml", "non_utf8.toml"])
def test_the_real_process_exits_2(rhone_subprocess, tmp_path, fixture):
    case = next(c for c in CASES if c.file == fixture)
    path, before = _project_with(tmp_path, fixture)

    human = rhone_subprocess("config", "validate", cwd=path.parent)
    assert human.exit_code == 2, human.stderr
    assert human.stdout == ""
    _no_traceback(human.stderr)
    assert PROBLEM_LINE.search(human.stderr), human.stderr
    assert f"  {_expected_text(path, case)}" in human.stderr

    result = rhone_subprocess("config", "validate", "--json", cwd=path.parent)
    assert result.exit_code == 2, result.stderr
    _no_traceback(result.stderr)
    document = _single_json_document(result.stdout)
    assert_matches_schema(document, "config-validate.schema.json")
    _check_problem(document["problems"][0], path, case)

    show = rhone_subprocess("config", "show", "--json", cwd=path.parent)
    assert show.exit_code == 2, show.stderr
    _no_traceback(show.stderr)
    error = _single_json_document(show.stdout)
    assert_matches_schema(error, "error.schema.json")
    assert error["error"]["code"] == "invalid_config"
    assert path.read_bytes() == before
