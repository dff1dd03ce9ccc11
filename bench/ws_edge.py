"""WebSocket benchmark: round trips through the edge vs straight to the app, and idle WebSockets held by the edge.

    .venv/bin/python bench/ws_edge.py [--rounds R] [--messages M] [--idle N] [--python PATH]

It starts Rhone Local with `rhone local up` on ports it binds in a temporary HOME, config dir and data dir, and
deploys and promotes a standard-library WebSocket echo app (written into the temporary directory), then:

a. Round trip: one WebSocket straight to the allocation's port and one through the edge
   (`echo--production.localhost`), M small messages each, R rounds interleaved; the figure is the p50 through the
   edge minus the p50 direct, in milliseconds (target ≤ 0.2 ms).
b. Idle WebSockets: N WebSockets opened through the edge and left idle; the edge's memory growth (the resident set of
   the process that runs it, read from /proc) per connection, and that every one of them still echoes afterwards.

Every connection goes to 127.0.0.1; counts are bounded; `rhone local down` runs in a finally block. A failed check
prints FAIL and the script exits 1 (2 when the setup fails). Run it on a quiet machine (`uptime` load < 1).
"""

from __future__ import annotations

import argparse
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from _harness import Checks, Rhone, SetupError, isolated_environment, local_up, rhone_script

# Idle connections are held open in a list, not in `with` blocks, which the newest websockets warns about.
warnings.filterwarnings("ignore", message=r"connect\(\) must be used as a context manager", category=DeprecationWarning)

ECHO_APP = r"""
import base64, hashlib, os, socket, struct, threading

def serve(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return conn.close()
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    headers = dict(l.split(": ", 1) for l in head.split("\r\n")[1:] if ": " in l)
    key = {k.lower(): v for k, v in headers.items()}.get("sec-websocket-key")
    if not key:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        return conn.close()
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    file = conn.makefile("rb")
    while True:
        head = file.read(2)
        if len(head) < 2:
            return conn.close()
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack(">H", file.read(2))[0]
        mask = file.read(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(file.read(length)))
        if head[0] & 0x0F == 8:
            return conn.close()
        conn.sendall(bytes([0x80 | (head[0] & 0x0F), len(payload)]) + payload)

listener = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

RHONE_TOML = """[project]
name = "echo"

[app]
name = "echo"

[process]
start = "python3 app.py"
readiness = "tcp"
readiness_timeout = 30

[runtime]
server_sessions = false

[environments.production]
approval_required = false
"""


def open_ws(port: int, host: str):
    """A WebSocket to 127.0.0.1:port whose Host is `host` (the edge routes by it; no name resolution needed)."""
    from websockets.sync.client import connect

    return connect(f"ws://{host}/", sock=socket.create_connection(("127.0.0.1", port)), compression=None)


def round_trips(port: int, count: int, host: str) -> list[float]:
    with open_ws(port, host) as ws:
        times = []
        for i in range(count):
            started = time.perf_counter()
            ws.send(f"m{i}")
            assert ws.recv() == f"m{i}"
            times.append(time.perf_counter() - started)
    return times


def allocation_port(data_dir: Path) -> int:
    """The port of production's one ready allocation (read from the store: the API does not publish ports)."""
    with sqlite3.connect(f"file:{data_dir / 'rhone.db'}?mode=ro", uri=True) as db:
        [(port,)] = db.execute(
            "SELECT a.port FROM allocations a JOIN environments e ON e.id = a.environment_id "
            "WHERE a.state = 'ready' AND e.name = 'production'"
        ).fetchall()
    return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SetupError(f"no VmRSS for pid {pid}")


def edge_pid(data_dir: Path) -> int:
    """The process that runs the edge: a dedicated edge process when there is one, else Rhone Local's server."""
    server = int((data_dir / "rhone-local.pid").read_text())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"rhone_local" in argv and b"edge" in argv and str(data_dir).encode() in b" ".join(argv):
                return int(entry.name)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="rhone-bench-ws-") as tmp:
        env, work, data_dir = isolated_environment(Path(tmp))
        rhone = Rhone(rhone_script(args.python), env, work)
        try:
            edge_port = local_up(rhone)["edge_port"]
            app_dir = work / "echo"
            app_dir.mkdir()
            (app_dir / "app.py").write_text(ECHO_APP)
            (app_dir / "rhone.toml").write_text(RHONE_TOML)
            rhone("init", "--link", "--json", cwd=app_dir)
            rhone.json("deploy", "--promote", cwd=app_dir)
            direct_port = allocation_port(data_dir)
            host = f"echo--production.localhost:{edge_port}"
            direct, edge = [], []
            for _ in range(args.rounds):
                direct += round_trips(direct_port, args.messages, f"127.0.0.1:{direct_port}")[50:]
                edge += round_trips(edge_port, args.messages, host)[50:]
            p50_direct, p50_edge = statistics.median(direct) * 1000, statistics.median(edge) * 1000
            overhead = p50_edge - p50_direct
            print(f"a. round trip p50: direct {p50_direct:.3f} ms, through the edge {p50_edge:.3f} ms")
            print(f"   overhead {overhead:.3f} ms (target <= 0.2 ms)")
            checks(overhead <= 0.2, "edge round-trip overhead <= 0.2 ms")

            pid = edge_pid(data_dir)
            before = rss_kib(pid)
            held = [open_ws(edge_port, host) for _ in range(args.idle)]
            time.sleep(1.0)
            after = rss_kib(pid)
            per = (after - before) * 1024 / args.idle
            echoed = 0
            for i, ws in enumerate(held):
                ws.send(f"i{i}")
                echoed += ws.recv(timeout=10) == f"i{i}"
                ws.close()
            print(f"b. {args.idle} idle WebSockets through the edge: edge RSS {before} → {after} KiB")
            print(f"   {per:.0f} bytes per connection; {echoed} of {args.idle} still echoed")
            checks(echoed == args.idle, "every idle WebSocket still answered")
        except SetupError as error:
            print(f"setup failed: {error}", file=sys.stderr)
            return 2
        finally:
            rhone("local", "down", check=False)
    return checks.verdict()


if __name__ == "__main__":
    sys.exit(main())
