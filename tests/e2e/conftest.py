"""End-to-end fixtures: a real Rhone Local started by the real `rhone local up`, on free loopback ports, with a
temporary HOME, config dir and data dir, stopped (and checked stopped) after the test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rhone_cli.services.local import process_alive
from tests.conftest import RHONE_BIN, Result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalServer:
    home: Path
    environ: dict[str, str]
    port: int
    edge_port: int
    data_dir: Path
    cwd: Path
    started: list[int] = field(default_factory=list)
    up_options: tuple[str, ...] = ()  # more `rhone local up` options, for every start (restarts included)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rhone(
        self,
        *args: str,
        environ: dict[str, str] | None = None,
        stdin: str = "",
        cwd: Path | None = None,
        timeout: float = 60,
    ) -> Result:
        proc = subprocess.run(
            [str(RHONE_BIN), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or self.cwd,
            env={**self.environ, **(environ or {})},
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def up(self, environ: dict[str, str] | None = None) -> Result:
        result = self.rhone(
            "local", "up", "--port", str(self.port), "--edge-port", str(self.edge_port), "--json", *self.up_options,
            environ=environ,
        )  # fmt: skip
        if result.exit_code == 0:
            self.started.append(result.json()["pid"])
        return result

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "rhone-local.pid").read_text())
        except FileNotFoundError:
            return None

    def owner_token(self) -> str:
        return (self.data_dir / "owner.token").read_text().strip()

    def json(self, *args: str, **kwargs) -> object:
        result = self.rhone(*args, "--json", **kwargs)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return json.loads(result.stdout)


@pytest.fixture
def local_env(tmp_path: Path) -> LocalServer:
    """A configured but not yet started Rhone Local."""
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    environ = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", ""),
        "RHONE_CONFIG_DIR": str(home / ".config" / "rhone"),
        "RHONE_LOCAL_DATA_DIR": str(tmp_path / "data"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }
    server = LocalServer(home, environ, free_port(), free_port(), tmp_path / "data", work)
    yield server
    server.rhone("local", "down")
    for pid in server.started:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
        assert not process_alive(pid), f"Rhone Local pid {pid} outlived its test"


@pytest.fixture
def local(local_env: LocalServer) -> LocalServer:
    """A running Rhone Local with the `local` profile current."""
    result = local_env.up()
    assert result.exit_code == 0, result.stderr
    return local_env
