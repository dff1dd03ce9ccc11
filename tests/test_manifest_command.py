"""`rhone artifact manifest` answered without the command tree (rhone_cli/artifacts/_manifest_command.py).

The console script hands the plain forms to a path that never imports typer; everything else, and every failure,
goes to the full CLI. Each case runs both in fresh interpreters (the console script's `rhone_cli.entry:run`, and
`rhone_cli.main:main`, which always builds the command tree) on the same tree and asserts the same exit status,
stdout and stderr, and which path answered.
"""

from __future__ import annotations

import json
import os

import pytest

from rhone_cli.artifacts.manifest import build_manifest
from tests.conftest import VALID_TOML
from tests.test_startup_imports import loaded, probe_with_stderr

COMMAND_TREE = ["typer", "rhone_cli.main", "rhone_cli.commands"]


def run_both(base_environ, cwd, args: list[str], environ: dict[str, str] | None = None):
    """[(status, stdout, stderr, modules) through the console script's entry, then through main()]."""
    return [probe_with_stderr(base_environ, cwd, args, how, environ) for how in ("entry", "main")]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "project"
    for index in range(12):
        path = root / f"dir{index % 3}" / f"file{index}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content {index}\n")
    (root / "top.txt").write_text("top\n")
    (root / ".env").write_text("SECRET=1\n")  # left out by the built-in rules, on both paths
    an_hour_ago = os.stat(root / "top.txt").st_mtime - 3600
    for path in root.rglob("*"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    build_manifest(root)  # a warm stat cache, so both runs hash nothing and say the same
    return root


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["artifact", "manifest"], id="human"),
        pytest.param(["artifact", "manifest", "--json"], id="json"),
        pytest.param(["--json", "-q", "artifact", "manifest", "--no-cache"], id="no-cache"),
        pytest.param(["artifact", "manifest", "--no-color", "--no-input", "--quiet"], id="flags-after"),
    ],
)
def test_plain_forms_answer_without_the_command_tree_and_say_the_same(base_environ, tree, args):
    (fast, full) = run_both(base_environ, tree, args)
    assert loaded(fast[3], COMMAND_TREE) == []
    assert "typer" in full[3]  # control: main() did build the command tree
    assert fast[:3] == full[:3]
    assert fast[0] == 0 and fast[1]
    if "--json" in args:
        document = json.loads(fast[1])
        assert document["file_count"] == 13 and document["hashed"] == (13 if "--no-cache" in args else 0)
        assert "\n" not in fast[1].rstrip("\n")  # stdout is a pipe: compact JSON


@pytest.mark.parametrize("spelling", [["-C", "{dir}"], ["--cwd", "{dir}"], ["--cwd={dir}"]])
def test_directory_option_in_any_spelling(base_environ, tree, tmp_path, spelling):
    args = ["artifact", "manifest", "--json", *(part.format(dir=tree) for part in spelling)]
    (fast, full) = run_both(base_environ, tmp_path, args)
    assert loaded(fast[3], COMMAND_TREE) == []
    assert fast[:3] == full[:3]
    assert json.loads(fast[1])["root"] == str(tree.resolve())


@pytest.mark.parametrize(
    ("args", "environ", "status"),
    [
        # Options the fast path does not take: the full CLI answers them.
        pytest.param(["artifact", "manifest", "--prebuilt"], {}, 2, id="prebuilt-without-rhone.toml"),
        pytest.param(["artifact", "manifest", "--explain", "top.txt"], {}, 0, id="explain"),
        pytest.param(["artifact", "--no-cache", "manifest"], {}, 2, id="command-option-before-the-command"),
        pytest.param(["artifact", "manifest", "extra"], {}, 2, id="extra-argument"),
        pytest.param(["artifact", "manifest", "-C"], {}, 2, id="directory-missing-its-value"),
        pytest.param(["-C", "no-such-dir", "artifact", "manifest"], {}, 2, id="no-such-directory"),
        pytest.param(["--jq", ".digest", "artifact", "manifest"], {}, 0, id="jq"),
        # Variables only the full CLI reads and validates.
        pytest.param(["artifact", "manifest"], {"RHONE_REQUEST_TIMEOUT": "soon"}, 2, id="bad-request-timeout"),
        pytest.param(["artifact", "manifest", "--json"], {"RHONE_PROGRESS": "loud"}, 2, id="bad-progress"),
    ],
)
def test_everything_else_is_answered_by_the_full_cli(base_environ, tree, args, environ, status):
    (fast, full) = run_both(base_environ, tree, args, environ)
    assert "typer" in fast[3]  # the console script handed it to the full CLI
    assert fast[:3] == full[:3]
    assert fast[0] == status


def test_a_failure_on_the_fast_path_is_reported_by_the_full_cli(base_environ, tree):
    # An invalid rhone.toml is found by the fast path, whose loading fails: the full CLI runs and says why.
    (tree / "rhone.toml").write_text("name = \n")
    (fast, full) = run_both(base_environ, tree, ["artifact", "manifest", "--json"])
    assert "typer" in fast[3]
    assert fast[:3] == full[:3]
    assert fast[0] == 2 and json.loads(fast[1])["error"]["code"] == "invalid_config"


def test_a_project_with_rhone_toml_is_answered_on_the_fast_path(base_environ, tree):
    # build.include/exclude come from rhone.toml, read without the models (rhone_cli/config/rules.py accepts the file)
    # and without the command tree.
    (tree / "rhone.toml").write_text(VALID_TOML.replace("[process]", '[build]\nexclude = ["dir1/"]\n\n[process]'))
    # Old and in the warm cache like the rest of the tree: a file written just now is "racy" until the cache is
    # written 2 s after it, so the runs' `hashed` counts would depend on how long the first run took.
    an_hour_ago = os.stat(tree / "top.txt").st_mtime
    os.utime(tree / "rhone.toml", (an_hour_ago, an_hour_ago))
    build_manifest(tree)
    (fast, full) = run_both(base_environ, tree / "dir0", ["artifact", "manifest", "--json"])
    assert loaded(fast[3], [*COMMAND_TREE, "pydantic", "rhone_cli.config.project"]) == []
    assert fast[:3] == full[:3]
    document = json.loads(fast[1])
    assert document["root"] == str(tree.resolve())
    paths = [entry["path"] for entry in document["manifest"]["files"]]
    assert "rhone.toml" in paths and "dir0/file0.txt" in paths
    assert not [path for path in paths if path.startswith("dir1/")]  # build.exclude was applied


def test_a_rhone_toml_the_rules_do_not_accept_is_loaded_by_the_models(base_environ, tree):
    # A build.exclude glob with a problem: the models report it (line and key), on either path, and nothing is listed.
    (tree / "rhone.toml").write_text(VALID_TOML.replace("[process]", '[build]\nexclude = ["a/**b"]\n\n[process]'))
    (fast, full) = run_both(base_environ, tree, ["artifact", "manifest", "--json"])
    assert fast[:3] == full[:3]
    error = json.loads(fast[1])["error"]
    assert (fast[0], error["code"]) == (2, "invalid_config")
    assert [problem["key"] for problem in error["details"]["problems"]] == ["build.exclude[0]"]
