"""Ctrl-C and SIGTERM before any operation exists: the real `rhone` in a subprocess, stuck on an API that accepts
connections and never answers, is interrupted. It exits 130 with a message saying no operation of it runs on the
server — never a traceback, never silence (typer used to turn Ctrl-C into a silent 130, and SIGTERM killed it)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO, RHONE_BIN, SIGNALLED_CHILD


class SilentApi:
    """Accepts connections on loopback and never answers; `accepted` is set once rhone's request arrived."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def silent_api():
    api = SilentApi()
    yield api
    api.close()


@pytest.mark.parametrize(("signum", "name"), [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
@pytest.mark.parametrize("command", ["whoami", "deploy"])
def test_an_interrupt_before_any_operation_is_a_message_and_exit_130(
    tmp_path: Path, base_environ, silent_api, signum, name, command
):
    project = tmp_path / "hello"
    shutil.copytree(REPO / "examples" / "hello", project, ignore=shutil.ignore_patterns(".rhone", "__pycache__"))
    toml = project / "rhone.toml"
    toml.write_text(
        toml.read_text().replace('[project]\nname = "hello"\n', '[project]\nname = "hello"\nworkspace = "local"\n')
    )
    environ = {
        **base_environ,
        "RHONE_API_URL": f"http://127.0.0.1:{silent_api.port}",
        "RHONE_TOKEN": "rht_sig_0a1b2c3d",
    }
    proc = subprocess.Popen(
        [str(RHONE_BIN), command],
        cwd=project,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **SIGNALLED_CHILD,
    )
    try:
        assert silent_api.accepted.wait(30), "rhone never sent its request"
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 130, stderr
    assert f"error: interrupted ({name}) before rhone saw an operation start" in stderr
    assert "no operation of this command is running on the server" in stderr
    assert "Traceback" not in stderr and stdout == ""
