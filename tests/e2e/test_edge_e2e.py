"""The edge end to end: what network clients of a real Rhone Local can and cannot do to it (and to the API beside it).

The server is started by the real `rhone local up`; its listeners, relay and connection cap are the ones `serve`
wires. See docs/security.md, "Network clients of the edge".
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from rhone_local.edge_relay import client_cap
from tests.conftest import RHONE_BIN
from tests.e2e.helpers import wait_until

pytestmark = pytest.mark.slow


def _open_file_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc/<pid>/limits")


def test_the_api_answers_while_more_clients_than_the_cap_hold_the_edge(local_env) -> None:
    """More idle connections than the edge accepts: the excess is refused with a 503, the API keeps answering.

    Rhone Local runs under a small open-file limit (soft 128, hard 256) so a few hundred loopback connections are
    enough to exhaust it: without a cap the edge would accept until the process has no descriptor left, and the API's
    own accept() would fail with it."""

    def small_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 256))

    ports = ["--port", str(local_env.port), "--edge-port", str(local_env.edge_port)]
    started = subprocess.run(
        [str(RHONE_BIN), "local", "up", *ports, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=local_env.cwd,
        env=local_env.environ,
        preexec_fn=small_file_limit,
    )
    assert started.returncode == 0, started.stderr
    pid = json.loads(started.stdout)["pid"]
    local_env.started.append(pid)
    assert _open_file_limits(pid) == (256, 256)  # the soft limit was raised to the hard one at start
    cap = client_cap(256)

    connections = 300
    clients = [socket.create_connection(("127.0.0.1", local_env.edge_port), timeout=10) for _ in range(connections)]
    try:
        health = httpx.get(f"{local_env.api_url}/v1/health", timeout=10)
        assert health.status_code == 200

        # Every connection past the cap got the refusal, then the end of the connection; the others got nothing.
        answers: dict[socket.socket, bytes] = {}
        selector = selectors.DefaultSelector()
        for sock in clients:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            answers[sock] = b""

        def read_refusals() -> bool:
            for key, _ in selector.select(timeout=0.2):
                sock = key.fileobj
                try:
                    chunk = sock.recv(65536)
                except (BlockingIOError, ConnectionResetError):
                    chunk = b""
                answers[sock] += chunk
                if not chunk:
                    selector.unregister(sock)
            return sum(a.startswith(b"HTTP/1.1 503") for a in answers.values()) >= connections - cap

        assert wait_until(read_refusals, timeout=30)
        refused = [a for a in answers.values() if a.startswith(b"HTTP/1.1 503")]
        assert len(refused) == connections - cap
        assert all(a.endswith(b"503 the edge is at its connection limit; retry later\n") for a in refused)
        assert all(a == b"" for a in answers.values() if not a.startswith(b"HTTP/1.1 503"))
        selector.close()
        assert httpx.get(f"{local_env.api_url}/v1/health", timeout=10).status_code == 200
    finally:
        for sock in clients:
            sock.close()

    # Once they are gone the edge accepts again, and the refusals were logged — a few lines, not one per refusal.
    answer = httpx.get(f"http://127.0.0.1:{local_env.edge_port}/", headers={"Host": "nowhere.localhost"}, timeout=10)
    assert answer.status_code == 404
    log = (local_env.data_dir / "rhone-local.log").read_text()
    lines = [line for line in log.splitlines() if "client connection(s): already serving its cap" in line]
    assert 1 <= len(lines) <= 3 and f"cap of {cap} concurrent" in lines[0]
