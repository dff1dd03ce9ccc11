"""`rhone config validate` of a valid file answered without the command tree (rhone_cli/config/_validate_command.py).

The console script hands the plain forms to a path that imports neither typer nor pydantic; everything else, every
invalid file and every failure goes to the full CLI. Each case runs both in fresh interpreters (the console script's
`rhone_cli.entry:run`, and `rhone_cli.main:main`, which always builds the command tree and the models) in the same
directory and asserts the same exit status, stdout and stderr, and which path answered.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import VALID_TOML
from tests.test_startup_imports import loaded, probe_with_stderr

HEAVY = ["typer", "rhone_cli.main", "rhone_cli.commands", "pydantic", "rhone_cli.config.project"]
FULL_TOML = """\
[project]
name = "shop"
workspace = "acme"

[app]
name = "web"

[build]
command = "make"
output = "dist"
include = ["**"]
exclude = ["a/**/b", "!keep"]
timeout = 7200

[process]
start = "python app.py"
health_path = "/ready"
readiness = "tcp"
readiness_timeout = 1
drain_timeout = 0

[environments.production]
approval_required = true
residency = ["eu"]

[runtime]
server_sessions = false
services = ["cache"]

[providers.db]
kind = "postgres"
secrets = ["DATABASE_URL"]

[env]
required = ["API_KEY"]
LOG_LEVEL = "debug"
"""


def run_both(base_environ, cwd, args: list[str], environ: dict[str, str] | None = None):
    """[(status, stdout, stderr, modules) through the console script's entry, then through main()]."""
    return [probe_with_stderr(base_environ, cwd, args, how, environ) for how in ("entry", "main")]


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "sub").mkdir(parents=True)
    (root / "rhone.toml").write_text(FULL_TOML)
    return root


@pytest.mark.parametrize(
    ("cwd", "args"),
    [
        pytest.param(".", ["config", "validate"], id="human"),
        pytest.param(".", ["config", "validate", "--json"], id="json"),
        pytest.param("sub", ["--json", "-q", "config", "validate"], id="found-in-a-parent"),
        pytest.param("sub", ["config", "validate", "-f", "../rhone.toml", "--no-color", "--no-input"], id="-f"),
        pytest.param("sub", ["config", "validate", "--file=../rhone.toml"], id="--file="),
        pytest.param("..", ["-C", "project", "config", "validate", "--file", "rhone.toml", "--json"], id="-C"),
        pytest.param("..", ["config", "validate", "--cwd=project/sub"], id="--cwd="),
    ],
)
def test_a_valid_file_is_answered_without_typer_or_pydantic_and_says_the_same(base_environ, project, cwd, args):
    (fast, full) = run_both(base_environ, project / cwd, args)
    assert loaded(fast[3], HEAVY) == []
    assert {"typer", "pydantic"} <= set(full[3])  # control: main() did build the command tree and the models
    assert fast[:3] == full[:3]
    assert fast[0] == 0 and fast[2] == ""
    path = project / "rhone.toml"
    if "--json" in args:
        assert json.loads(fast[1]) == {"file": str(path), "valid": True, "problems": []}
    else:
        assert fast[1].endswith("rhone.toml: valid (project shop, app web)\n")


def test_a_byte_order_mark_is_read_the_same(base_environ, project):
    (project / "rhone.toml").write_bytes(b"\xef\xbb\xbf" + VALID_TOML.encode())
    (fast, full) = run_both(base_environ, project, ["config", "validate"])
    assert loaded(fast[3], HEAVY) == []
    assert fast[:3] == full[:3] and fast[0] == 0


@pytest.mark.parametrize(
    ("content", "args", "environ", "status"),
    [
        # Files with a problem: the models report it (line, key, message), whichever way rhone was started.
        pytest.param(FULL_TOML.replace("timeout = 7200", "timeout = 7201"), [], {}, 2, id="out-of-range"),
        pytest.param(FULL_TOML.replace('"eu"', '"EU"'), ["--json"], {}, 2, id="bad-slug-json"),
        pytest.param(FULL_TOML.replace("LOG_LEVEL", "PORT"), [], {}, 2, id="reserved-setting"),
        pytest.param(FULL_TOML + "colour = 1\n", [], {}, 2, id="unknown-key"),
        pytest.param("[project\n", ["--json"], {}, 2, id="syntax"),
        pytest.param(None, ["-f", "missing.toml"], {}, 2, id="missing-file"),
        # Forms the fast path does not take: the full CLI answers them.
        pytest.param(FULL_TOML, ["--jq", ".valid"], {}, 0, id="jq"),
        pytest.param(FULL_TOML, ["-f"], {}, 2, id="file-missing-its-value"),
        pytest.param(FULL_TOML, ["--help"], {}, 0, id="help"),
        pytest.param(FULL_TOML, ["extra"], {}, 2, id="extra-argument"),
        pytest.param(FULL_TOML, [], {"RHONE_PROGRESS": "loud"}, 2, id="bad-progress"),
        pytest.param(FULL_TOML, [], {"RHONE_REQUEST_TIMEOUT": "soon"}, 2, id="bad-request-timeout"),
    ],
)
def test_everything_else_is_answered_by_the_full_cli(base_environ, project, content, args, environ, status):
    path = project / "rhone.toml"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    before = path.read_bytes() if path.exists() else None
    (fast, full) = run_both(base_environ, project, ["config", "validate", *args], environ)
    assert "typer" in fast[3]  # the console script handed it to the full CLI
    assert fast[:3] == full[:3]
    assert fast[0] == status
    assert (path.read_bytes() if path.exists() else None) == before
