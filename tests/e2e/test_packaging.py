"""Packaging: the built wheel, installed as a tool in a fresh environment, is a working rhone — its migrations and
schemas inside — that starts Rhone Local and deploys; `uv tool install` and `pipx install` both work, as the README
says.

The wheel is built from this checkout (`uv build`); installs resolve the dependencies from the package index, and
everything runs with a temporary HOME, tool directory and data directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rhone_cli import __version__
from tests.conftest import REPO

UV = Path(sys.executable).parent / "uv"


def _run(argv: list, *, env: dict, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-2000:])
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not UV.exists():
        pytest.skip("uv is not installed in the test environment (.ci/run installs it)")
    out = tmp_path_factory.mktemp("dist")
    _run([UV, "build", "--wheel", "--out-dir", out, REPO], env=dict(os.environ))
    [built] = out.glob("rhone-*.whl")
    return built


def test_uv_tool_install_of_the_wheel_starts_rhone_local_and_deploys(wheel: Path, local_env, tmp_path: Path):
    tools, bins = tmp_path / "tools", tmp_path / "bin"
    env = {**os.environ, "UV_TOOL_DIR": str(tools), "UV_TOOL_BIN_DIR": str(bins)}
    _run([UV, "tool", "install", "--python", sys.executable, f"{wheel}[local]"], env=env)
    rhone = bins / "rhone"
    assert rhone.exists()
    tool_python = next(tools.glob("rhone/bin/python"))
    where = _run([tool_python, "-P", "-c", "import rhone_cli; print(rhone_cli.__file__)"], env=env, cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(tools)  # the tool's own copy, not this checkout

    shipped = _run(
        [
            tool_python,
            "-P",
            "-c",
            "import importlib.resources as r, json; print(json.dumps(["
            "sorted(p.name for p in r.files('rhone_local.migrations').iterdir() if p.name.endswith('.sql')),"
            "sorted(p.name for p in r.files('rhone_cli.json_schemas').iterdir())]))",
        ],
        env=env,
        cwd=tmp_path,
    )
    migrations, schemas = json.loads(shipped.stdout)
    assert migrations == sorted(p.name for p in (REPO / "rhone_local" / "migrations").glob("*.sql"))
    assert {"rhone.toml.schema.json", "openapi.json", "deployment.schema.json"} <= set(schemas)

    run_env = {**local_env.environ, "PATH": f"{bins}{os.pathsep}{local_env.environ['PATH']}"}
    assert _run([rhone, "--version"], env=run_env).stdout.strip() == f"rhone {__version__}"
    up = _run(
        [rhone, "local", "up", "--port", local_env.port, "--edge-port", local_env.edge_port, "--json"],
        env=run_env,
        cwd=local_env.cwd,
    )
    local_env.started.append(json.loads(up.stdout)["pid"])
    server = Path(f"/proc/{local_env.started[-1]}/cmdline").read_bytes().split(b"\0")
    assert server[0].decode().startswith(str(tools))  # the server is the tool's Python, with the tool's packages

    app = tmp_path / "hello"
    shutil.copytree(REPO / "examples" / "hello", app, ignore=shutil.ignore_patterns(".rhone", "__pycache__"))
    deployed = json.loads(_run([rhone, "deploy", "--promote", "--json"], env=run_env, cwd=app, timeout=180).stdout)
    assert deployed["deployment"]["state"] == "preview_ready"
    assert deployed["promotion"]["state"] == "healthy" and deployed["promotion"]["epoch"] == 1


def test_pipx_install_of_the_wheel_runs(wheel: Path, tmp_path: Path):
    venv = tmp_path / "pipx-venv"
    _run([sys.executable, "-m", "venv", venv], env=dict(os.environ))
    _run([UV, "pip", "install", "--python", venv / "bin" / "python", "-q", "pipx"], env=dict(os.environ))
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin")}
    _run([venv / "bin" / "pipx", "install", "--python", sys.executable, f"{wheel}[local]"], env=env)
    rhone = tmp_path / "bin" / "rhone"
    assert _run([rhone, "--version"], env=env).stdout.strip() == f"rhone {__version__}"
    help_text = _run([rhone, "local", "--help"], env=env).stdout
    assert "Usage: rhone local" in help_text
