"""End-to-end fixtures: a real Rhone Local started by the real `rhone local up --port 0 --edge-port 0` (the server
binds any free loopback ports and reports them in server.json), with a temporary HOME, config dir and data dir,
stopped (and checked stopped) after the test.

Everything under tests/e2e/ starts real processes: it is the `slow` tier (`pytest -m "not slow"` leaves it out)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rhone_cli.services.local import process_alive
from tests.conftest import RHONE_BIN, Result

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.slow)


@dataclass
class LocalServer:
    home: Path
    environ: dict[str, str]
    data_dir: Path
    cwd: Path
    started: list[int] = field(default_factory=list)
    up_options: tuple[str, ...] = ()  # more `rhone local up` options, for every start (restarts included)
    # The ports the server reported in server.json, kept once it stopped (a restart asks for them again); 0 (any
    # free port) until it first started.
    ports: dict[str, int] = field(default_factory=lambda: {"port": 0, "edge_port": 0})

    def _reported(self, name: str) -> int:
        try:
            state = json.loads((self.data_dir / "server.json").read_text())
        except (OSError, ValueError):
            return self.ports[name]
        if isinstance(state.get("port"), int) and isinstance(state.get("edge_port"), int):  # not a test's stale record
            self.ports.update(port=state["port"], edge_port=state["edge_port"])
        return self.ports[name]

    @property
    def port(self) -> int:
        return self._reported("port")

    @property
    def edge_port(self) -> int:
        return self._reported("edge_port")

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
        self._reported("port")  # a command that stops the server removes server.json: its ports are remembered first
        proc = subprocess.run(
            [str(RHONE_BIN), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or self.cwd,
            env={**self.environ, **(environ or {})},
        )
        self._reported("port")  # the ports of a server this command started
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def up(self, environ: dict[str, str] | None = None) -> Result:
        """`rhone local up` on the ports this server had (any free ones the first time). A restart that cannot have
        them back — once the server stopped they were free for anyone on the machine: an outgoing connection's
        ephemeral port, another test's app — binds any free ones, as the first start did (tests read the ports from
        the server's report, never from before a restart)."""
        result = self._up(environ)
        taken = result.exit_code != 0 and any(self.ports.values()) and _port_taken(result.stdout)
        if taken and not any(process_alive(pid) for pid in self.started):  # (else a server of this test holds it)
            self.ports.update(port=0, edge_port=0)
            retried = self._up(environ)  # what the first attempt said (a stale pid file it cleared) is kept
            result = Result(retried.exit_code, retried.stdout, result.stderr + retried.stderr)
        if result.exit_code == 0:
            self.started.append(result.json()["pid"])
        return result

    def _up(self, environ: dict[str, str] | None) -> Result:
        return self.rhone(
            "local", "up", "--port", str(self.port), "--edge-port", str(self.edge_port), "--json", *self.up_options,
            environ=environ,
        )  # fmt: skip

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


def _port_taken(stdout: str) -> bool:
    try:
        return json.loads(stdout)["error"]["code"] in ("port_in_use", "local_port_in_use")
    except (ValueError, KeyError, TypeError):
        return False


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
    server = LocalServer(home, environ, tmp_path / "data", work)
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
