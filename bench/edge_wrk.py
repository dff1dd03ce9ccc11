"""Edge benchmark with a real load generator: wrk against the app directly, through Rhone's edge, and through nginx.

    .venv/bin/python bench/edge_wrk.py [--duration S] [--rounds R] [--slices K] [--connections 1,8,64] [--floor]
                                       [--told] [--app nginx|python|gunicorn] [--python PATH]

Needs Debian's `wrk` and `nginx` (`apt-get install wrk nginx-light`); nothing else in the repository does.

Setup: `rhone local up` on ports it binds in a temporary HOME and data dir; an app deployed and promoted through
the real CLI (`rhone deploy --promote`) whose allocation is an nginx (one worker, `return 200` of a 13-byte body,
unlimited keep-alive requests) — the cheapest keep-alive upstream this machine can run, so the app is never the
bottleneck and what differs between the three targets is the proxy (`--app python`: a tiny uvloop + httptools
server instead, a Python app's cost per request; `--app gunicorn`: a WSGI app served by gunicorn's threaded worker, a
real Python app server; either can be the bottleneck, which is the point: how much of a Python app's throughput each
proxy keeps). Python apps run on --python's environment, exposed read-only to the sandbox (`--sandbox-ro`). A second
nginx is the anchor: one worker, `proxy_pass` to the same allocation port with a keep-alive upstream pool (HTTP/1.1,
`Connection: ""`), access log off, run as the current user with its config, pid and logs in the temporary directory.
It sends the app the client's Host and the same forwarding headers as the edge (`X-Forwarded-For`, `-Proto`): the
same job, since a Python app server pays for each header it is sent.

Each round runs, for every connection count, `wrk -t1 -cN --latency` against the three targets (direct to the
allocation's port, the edge with `Host: <app>--production.localhost`, the nginx anchor with the same Host) for S
seconds each (default 10), in K slices of S/K whole seconds (`--slices`, default 5) taken in turn, so that all
targets see the same moments of a machine whose speed drifts (on a shared 2-core VM, from one 8 s run to the next, by
up to a third). The order rotates by one from one turn to the next (direct, edge, nginx; then edge, nginx, direct; …),
so every target takes every place in a round, and the one that opens a turn follows another than in the last turn
(within a turn the cycle is kept: with three targets the edge follows direct in 3 of 5 turns). A target's round
pools its slices: requests and CPU seconds summed. R rounds (default 3).

Reported per connection count, min–max over the rounds:
- throughput as a ratio to direct in the same round (edge, nginx);
- p50 overhead: the target's p50 latency minus direct's in the same turn (wrk's own latency distribution), in ms,
  the median over the round's turns (the upper middle one for an even K);
- CPU per request: utime+stime of the edge process(es) (resp. the nginx anchor's worker), read from
  /proc/<pid>/stat before the slice and once it has stopped growing after wrk exits (closing wrk's connections is
  part of the work), divided by the requests wrk completed; and the edge's as a multiple of nginx's;
- the edge's read and write system calls per request (/proc/<pid>/io: the read(2)/write(2) families, which uvloop's
  streams use).
With `--told`, another target runs in the same rounds: the app directly, sent the edge's two forwarding headers
(`X-Forwarded-For`, `-Proto`) as well as the Host. Its p50 minus direct's is what the app itself pays for being told
who the client is — part of any proxy's overhead, not work the proxy does (a Python app server parses each header).
With `--floor`, a fourth target runs in the same rounds: `bench/_floor_proxy.py`, the least a Python proxy can do
(uvloop and httptools parsing both ways, bytes copied unchanged, one upstream connection per client). Between it and
direct is what the Python event loop and two more loopback hops cost; between it and the edge, what the edge's HTTP
semantics (routing, header rewriting, pooling, deadlines) cost.
Targets (issue 15): ≥ 0.85× direct at 8 connections, ≥ 0.7× at 1, p50 overhead ≤ 0.1 ms, CPU per request ≤ 2×
nginx's. The load average at start and end is printed: figures from a machine busy with other work are not figures.
So is the share of CPU time the hypervisor took from this VM while the rounds ran (`steal` in /proc/stat): a VM's
neighbours slow everything in it, the anchor included.
Every process it starts is stopped in a finally block; every wait is bounded.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _harness import Checks, Rhone, SetupError, isolated_environment, local_up, production_port, rhone_script

from rhone_local.allocation_ports import PortReservations

APP = "wrkapp"
ROUTE_HOST = f"{APP}--production.localhost"
TARGETS = ("direct", "edge", "nginx")
FLOOR_PROXY = Path(__file__).with_name("_floor_proxy.py")
TICKS = os.sysconf("SC_CLK_TCK")

APP_START = r"""#!/bin/sh
# The allocation: one nginx worker answering every request with 13 bytes, on $PORT, in the foreground.
set -e
cat > "$PWD/nginx.conf" <<EOF
worker_processes 1;
pid $PWD/nginx.pid;
error_log $PWD/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    # The sandbox hides /var/lib/nginx, nginx's compiled-in temporary directories: every one lives in the app.
    client_body_temp_path $PWD/tmp/body;
    proxy_temp_path $PWD/tmp/proxy;
    fastcgi_temp_path $PWD/tmp/fastcgi;
    uwsgi_temp_path $PWD/tmp/uwsgi;
    scgi_temp_path $PWD/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {
        listen 127.0.0.1:$PORT;
        location / { default_type text/plain; return 200 "hello, world\n"; }
    }
}
EOF
mkdir -p "$PWD/tmp"
exec $NGINX_BIN -p "$PWD" -c "$PWD/nginx.conf" -g 'daemon off;'
"""

PYTHON_APP = r"""# The allocation: a tiny uvloop + httptools server answering every request with 13 bytes, kept alive.
import asyncio, os
import httptools, uvloop

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n"


class App(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.parser = transport, httptools.HttpRequestParser(self)

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_complete(self):
        self.transport.write(ANSWER)


async def main():
    server = await asyncio.get_running_loop().create_server(App, "127.0.0.1", int(os.environ["PORT"]))
    await server.serve_forever()

uvloop.run(main())
"""

WSGI_APP = r"""# The allocation: a WSGI app under gunicorn (gthread workers keep connections alive), 13 bytes an answer.
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"hello, world\n"]
"""
# gunicorn: one worker process, 8 threads (one per connection of the 8-connection runs), connections kept alive.
GUNICORN_START = "{bin}/gunicorn -w 1 -k gthread --threads 8 --keep-alive 75 -b 127.0.0.1:$PORT app:app"

ANCHOR_CONF = """{user}
worker_processes 1;
pid {root}/anchor.pid;
error_log {root}/anchor-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    keepalive_requests 1000000;
    upstream app {{ server 127.0.0.1:{app_port}; keepalive 128; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The app gets what the edge gives it (docs/security.md, "Headers an app can rely on"): the client's Host
            # as sent and the same two forwarding headers. Each costs a Python app server real work (gunicorn spends
            # about 10 µs a request on each), so an anchor sending fewer would not do the same job.
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto http;
            proxy_buffering off;
        }}
    }}
}}
"""


def nginx_user_line() -> str:
    # As root nginx would hand its workers to `nobody`, who cannot write the temporary directory: stay this user.
    return f"user {getpass.getuser()};" if os.geteuid() == 0 else ""


def nginx_binary() -> str:
    # Allocations run in the sandbox with a plain user PATH (no /usr/sbin, where Debian puts nginx): name it in full.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise SetupError("nginx is not installed (apt-get install nginx-light)")
    return found


def python_environment_options(python: str) -> list[str]:
    """`rhone local up` options that let the sandbox see --python's environment (its prefix and the interpreter's)."""
    prefixes = subprocess.run(
        [python, "-c", "import sys; print(sys.prefix); print(sys.base_prefix)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    return [arg for prefix in sorted(set(prefixes)) for arg in ("--sandbox-ro", prefix)]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, from their own accounting."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def io_calls(pids: list[int]) -> tuple[int, int]:
    """The processes' read and write system calls so far (/proc/<pid>/io: syscr, syscw). Only the read(2)/write(2)
    families count, not recv(2)/send(2): right for the edge on uvloop, whose streams use read and write."""
    reads = writes = 0
    for pid in pids:
        fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        reads += int(fields["syscr"])
        writes += int(fields["syscw"])
    return reads, writes


def settled_cpu_seconds(pids: list[int], interval: float = 0.03, bound: float = 1.0) -> float:
    """`cpu_seconds` once it reads the same twice `interval` apart (the proxies close wrk's connections after it
    exits), or after `bound` seconds."""
    deadline = time.monotonic() + bound
    last = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = cpu_seconds(pids)
        if now == last:
            return now
        last = now
    return last


def machine_ticks() -> list[int]:
    """The machine's CPU time by kind (/proc/stat's first line: user, nice, system, idle, iowait, irq, softirq,
    steal, …), in clock ticks."""
    return [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def cpu_shares(before: list[int], after: list[int]) -> str:
    """What the hypervisor stole, and how busy the machine was, between two `machine_ticks`."""
    spent = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(spent[:8]) or 1  # (guest time is counted in user time already)
    busy = 1 - (spent[3] + spent[4]) / total
    return f"CPU time stolen by the hypervisor meanwhile {spent[7] / total:.1%}, busy {busy:.1%} (stolen included)"


def children(parent: int, marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and marker in cmdline:
            found.append(int(entry.name))
    return found


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class Run:
    requests: int
    seconds: float
    p50_ms: float
    errors: int
    cpu: float  # seconds of the proxy's processes (0 for direct)
    p50s: list[float] = field(default_factory=list)  # a pooled round's: each turn's p50, in turn order
    reads: int = 0  # read and write system calls of the proxy's processes (/proc/<pid>/io: syscr, syscw)
    writes: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @classmethod
    def pooled(cls, slices: list[Run]) -> Run:
        """One target's round from its slices: counts summed, p50 the median slice's (the upper one of an even
        count)."""
        p50s = [r.p50_ms for r in slices]
        return cls(
            sum(r.requests for r in slices),
            sum(r.seconds for r in slices),
            median_high(p50s),
            sum(r.errors for r in slices),
            sum(r.cpu for r in slices),
            p50s,
            sum(r.reads for r in slices),
            sum(r.writes for r in slices),
        )

    def overhead_ms(self, direct: Run) -> float:
        """This target's p50 minus direct's, turn by turn; the median of those differences."""
        return median_high([mine - theirs for mine, theirs in zip(self.p50s, direct.p50s, strict=True)])


def median_high(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def parse_wrk(output: str) -> tuple[int, float, float, int]:
    """(requests, seconds, p50 ms, errors) from `wrk --latency` output."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    p50 = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s)", output, re.M)
    if done is None or p50 is None:
        raise SetupError(f"cannot read wrk's output:\n{output}")
    seconds = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return int(done.group(1)), seconds, float(p50.group(1)) * UNITS[p50.group(2)], errors


# What `--told` adds to a direct request: the forwarding headers the edge sends every app (docs/security.md).
FORWARDING = ("X-Forwarded-For: 127.0.0.1", "X-Forwarded-Proto: http")


def wrk(port: int, connections: int, duration: int, host: str | None, pids: list[int], extra: tuple = ()) -> Run:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if host:
        command += ["-H", f"Host: {host}"]
    for header in extra:
        command += ["-H", header]
    before, calls_before = cpu_seconds(pids), io_calls(pids)
    proc = subprocess.run(
        [*command, f"http://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=duration + 60
    )
    cpu = settled_cpu_seconds(pids) - before
    calls = io_calls(pids)
    if proc.returncode != 0:
        raise SetupError(f"wrk exited {proc.returncode}: {proc.stderr}")
    requests, seconds, p50, errors = parse_wrk(proc.stdout)
    reads, writes = calls[0] - calls_before[0], calls[1] - calls_before[1]
    return Run(requests, seconds, p50, errors, cpu, reads=reads, writes=writes)


def wait_for(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SetupError(f"nothing listens on {port} after {timeout:g} s")


def fmt_range(values: list[float], spec: str, suffix: str = "") -> str:
    low, high = min(values), max(values)
    return f"{low:{spec}}{suffix}" if f"{low:{spec}}" == f"{high:{spec}}" else f"{low:{spec}}–{high:{spec}}{suffix}"


def report_floor(results: dict[int, list[dict[str, Run]]]) -> None:
    """The floor proxy's row: where a Python proxy that understands no HTTP beyond parsing it stands."""
    print(f"\n{'conns':>5} {'floor / direct':>15} {'floor p50 +ms':>14} {'floor µs/req':>13} {'edge − floor ms':>16}")
    for connections, rounds in results.items():
        ratio = [r["floor"].rps / r["direct"].rps for r in rounds]
        p50 = [r["floor"].overhead_ms(r["direct"]) for r in rounds]
        cpu = [r["floor"].cpu / r["floor"].requests * 1e6 for r in rounds]
        beyond = [r["edge"].overhead_ms(r["floor"]) for r in rounds]
        print(
            f"{connections:>5} {fmt_range(ratio, '.2f', '×'):>15} {fmt_range(p50, '+.3f'):>14} "
            f"{fmt_range(cpu, '.1f'):>13} {fmt_range(beyond, '+.3f'):>16}"
        )


def report_told(results: dict[int, list[dict[str, Run]]]) -> None:
    """What the app pays for the edge's forwarding headers: part of any proxy's overhead, not the proxy's work."""
    print(f"\n{'conns':>5} {'told / direct':>14} {'told p50 +ms':>13} {'edge − told ms':>15}")
    for connections, rounds in results.items():
        ratio = [r["told"].rps / r["direct"].rps for r in rounds]
        p50 = [r["told"].overhead_ms(r["direct"]) for r in rounds]
        beyond = [r["edge"].overhead_ms(r["told"]) for r in rounds]
        print(
            f"{connections:>5} {fmt_range(ratio, '.2f', '×'):>14} {fmt_range(p50, '+.3f'):>13} "
            f"{fmt_range(beyond, '+.3f'):>15}"
        )


def report(results: dict[int, list[dict[str, Run]]], edge_processes: int) -> int:
    check = Checks()
    if all("floor" in r for rounds in results.values() for r in rounds):
        report_floor(results)
    if all("told" in r for rounds in results.values() for r in rounds):
        report_told(results)
    print(
        f"\n{'conns':>5} {'direct req/s':>14} {'edge / direct':>14} {'nginx / direct':>15} {'edge p50 +ms':>13} "
        f"{'nginx p50 +ms':>14} {'edge µs/req':>12} {'nginx µs/req':>13} {'edge/nginx CPU':>15}"
    )
    ratio_targets = {1: 0.7, 8: 0.85}
    for connections, rounds in results.items():
        direct = [r["direct"].rps for r in rounds]
        edge_ratio = [r["edge"].rps / r["direct"].rps for r in rounds]
        nginx_ratio = [r["nginx"].rps / r["direct"].rps for r in rounds]
        edge_p50 = [r["edge"].overhead_ms(r["direct"]) for r in rounds]
        nginx_p50 = [r["nginx"].overhead_ms(r["direct"]) for r in rounds]
        edge_cpu = [r["edge"].cpu / r["edge"].requests * 1e6 for r in rounds]
        nginx_cpu = [r["nginx"].cpu / r["nginx"].requests * 1e6 for r in rounds]
        cpu_ratio = [e / n for e, n in zip(edge_cpu, nginx_cpu, strict=True)]
        print(
            f"{connections:>5} {fmt_range(direct, '.0f'):>14} {fmt_range(edge_ratio, '.2f', '×'):>14} "
            f"{fmt_range(nginx_ratio, '.2f', '×'):>15} {fmt_range(edge_p50, '+.3f'):>13} "
            f"{fmt_range(nginx_p50, '+.3f'):>14} {fmt_range(edge_cpu, '.1f'):>12} {fmt_range(nginx_cpu, '.1f'):>13} "
            f"{fmt_range(cpu_ratio, '.2f', '×'):>15}"
        )
        errors = sum(run.errors for r in rounds for run in r.values())
        check(errors == 0, f"{connections} connection(s): every response a 2xx, no socket error ({errors})")
        if connections in ratio_targets:
            target = ratio_targets[connections]
            check(min(edge_ratio) >= target, f"{connections} connection(s): edge ≥ {target}× direct in every round")
        if connections == 1:
            check(max(edge_p50) <= 0.1, "1 connection: edge p50 overhead ≤ 0.1 ms in every round")
        check(max(cpu_ratio) <= 2.0, f"{connections} connection(s): edge CPU per request ≤ 2× nginx's in every round")
    # The edge's system calls per request: what holding a small answer until it is whole saves (docs/architecture.md,
    # "The edge"): an answer the app wrote as a head and a body apart is read twice and still written once. (uvloop
    # reads and writes with read(2)/write(2), which /proc/<pid>/io counts; nginx's recv(2) is not counted there.)
    print("\nconns  edge system calls per request: reads   writes")
    for connections, rounds in results.items():
        reads = [r["edge"].reads / r["edge"].requests for r in rounds]
        writes = [r["edge"].writes / r["edge"].requests for r in rounds]
        print(f"{connections:>5}  {'':>30}{fmt_range(reads, '.2f'):>9} {fmt_range(writes, '.2f'):>9}")
    print(f"\n(edge: {edge_processes} process(es); nginx anchor: 1 worker; wrk: 1 thread)")
    return check.verdict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every target (default 3)")
    parser.add_argument(
        "--slices", type=int, default=5, help="each target's seconds in a round, cut in this many turns (default 5)"
    )
    parser.add_argument("--connections", default="1,8,64", help="connection counts (default 1,8,64)")
    parser.add_argument("--edge-processes", type=int, default=1, help="edge processes (default 1)")
    parser.add_argument(
        "--app",
        choices=("nginx", "python", "gunicorn"),
        default="nginx",
        help="the allocation: nginx returning 200 (default), a tiny uvloop+httptools server, or gunicorn (WSGI)",
    )
    parser.add_argument("--python", default=sys.executable, help="the venv python (default: this interpreter)")
    parser.add_argument(
        "--floor", action="store_true", help="also measure bench/_floor_proxy.py: the least a Python proxy can do"
    )
    parser.add_argument(
        "--told",
        action="store_true",
        help="also measure the app directly with the edge's forwarding headers: what the app pays to be told",
    )
    options = parser.parse_args(argv)
    counts = [int(c) for c in options.connections.split(",")]
    bounded = 1 <= options.duration <= 120 and 1 <= options.rounds <= 9 and all(1 <= c <= 1024 for c in counts)
    if not bounded or not 1 <= options.slices <= options.duration:
        parser.error("bounds: 1 ≤ --duration ≤ 120, 1 ≤ --rounds ≤ 9, 1 ≤ connections ≤ 1024, 1 ≤ --slices ≤ duration")
    if options.duration % options.slices:
        parser.error("--duration must be a multiple of --slices (wrk takes whole seconds)")
    slice_seconds = options.duration // options.slices
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"bench: needs `{tool}` (apt-get install wrk nginx-light)", file=sys.stderr)
            return 2
    try:
        exe = rhone_script(options.python)
    except SetupError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="rhone-bench-wrk-") as tmp:
        root = Path(tmp)
        env, work, data_dir = isolated_environment(root)
        env["RHONE_LOCAL_EDGE_PROCESSES"] = str(options.edge_processes)
        rhone = Rhone(exe, env, work)
        anchor: subprocess.Popen | None = None
        floor: subprocess.Popen | None = None
        try:
            status = local_up(rhone, *python_environment_options(options.python) if options.app != "nginx" else ())
            edge_port = status["edge_port"]
            app_dir = work / APP
            app_dir.mkdir()
            if options.app == "nginx":
                (app_dir / "start.sh").write_text(APP_START.replace("$NGINX_BIN", nginx_binary()))
                start = "sh start.sh"
            elif options.app == "python":
                (app_dir / "app.py").write_text(PYTHON_APP)
                # The venv's python itself (not the interpreter it links to): it has uvloop and httptools.
                start = f"{Path(options.python).absolute()} app.py"
            else:
                (app_dir / "app.py").write_text(WSGI_APP)
                start = GUNICORN_START.format(bin=Path(options.python).absolute().parent)
            (app_dir / "rhone.toml").write_text(
                f'[project]\nname = "{APP}"\n\n[app]\nname = "{APP}"\n\n[process]\nstart = "{start}"\n'
                'health_path = "/healthz"\nreadiness_timeout = 30\n'
            )
            rhone("init", "--link", "--json", cwd=app_dir)
            promoted = rhone.json("deploy", "--promote", cwd=app_dir)
            if promoted["promotion"]["state"] != "healthy":
                raise SetupError(f"the promotion ended {promoted['promotion']['state']}")
            app_port = production_port(data_dir, promoted["deployment"]["id"])
            (root / "tmp").mkdir()
            conf = root / "anchor.conf"
            probe = PortReservations().hold()  # held until nginx starts; a port taken after is nginx's clear failure
            anchor_port = probe.getsockname()[1]
            conf.write_text(ANCHOR_CONF.format(user=nginx_user_line(), root=root, app_port=app_port, port=anchor_port))
            probe.close()
            anchor = subprocess.Popen(
                ["nginx", "-p", str(root), "-c", str(conf), "-g", "daemon off;"], stdin=subprocess.DEVNULL
            )
            wait_for(anchor_port)
            edge_pids = children(status["pid"], "rhone_local edge")
            nginx_workers = children(anchor.pid, "nginx")
            if len(edge_pids) != options.edge_processes or len(nginx_workers) != 1:
                raise SetupError(f"edge processes {edge_pids}, nginx workers {nginx_workers}")
            print(
                f"Rhone Local {status.get('version')} (edge pid(s) {edge_pids}), nginx anchor worker "
                f"{nginx_workers[0]}, app: {options.app} on :{app_port}; {os.cpu_count()} CPUs; load average "
                f"{os.getloadavg()[0]:.2f} at start; python {sys.version.split()[0]}",
                flush=True,
            )
            ports = {"direct": (app_port, None, [], ())}
            if options.told:  # right after direct: the pair the app's cost of the headers is read from
                ports["told"] = (app_port, ROUTE_HOST, [], FORWARDING)
            ports["edge"] = (edge_port, ROUTE_HOST, edge_pids, ())
            ports["nginx"] = (anchor_port, ROUTE_HOST, nginx_workers, ())
            if options.floor:
                floor = subprocess.Popen(
                    [options.python, str(FLOOR_PROXY), str(app_port)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    text=True,
                    restore_signals=True,
                )
                floor_port = int(floor.stdout.readline() or 0)  # it binds port 0 and says which it got
                if not floor_port:
                    raise SetupError(f"the floor proxy did not start (exit {floor.poll()})")
                ports["floor"] = (floor_port, ROUTE_HOST, [floor.pid], ())
            for target_port, host, pids, extra in ports.values():  # warm up every path once
                wrk(target_port, 8, 1, host, pids, extra)
            results: dict[int, list[dict[str, Run]]] = {c: [] for c in counts}
            ticks_before = machine_ticks()
            for round_number in range(1, options.rounds + 1):
                for connections in counts:
                    slices: dict[str, list[Run]] = {n: [] for n in ports}
                    names = list(ports)
                    for turn in range(options.slices):  # in turn: every target sees the same moments of the machine
                        start = turn % len(names)  # and each turn opens with the next target
                        for name in names[start:] + names[:start]:
                            target_port, *rest = ports[name]
                            slices[name].append(wrk(target_port, connections, slice_seconds, *rest))
                    runs = {name: Run.pooled(taken) for name, taken in slices.items()}
                    results[connections].append(runs)
                    direct = runs["direct"]
                    print(
                        f"  round {round_number}, {connections:>3} conns: "
                        + ", ".join(
                            f"{n} {r.rps:,.0f} req/s p50 {r.p50_ms:.3f} ms"
                            + ("" if r is direct else f" ({r.rps / direct.rps:.2f}×, {r.overhead_ms(direct):+.3f} ms)")
                            for n, r in runs.items()
                        ),
                        flush=True,
                    )
            print(f"load average at end {os.getloadavg()[0]:.2f}; {cpu_shares(ticks_before, machine_ticks())}")
        except (SetupError, subprocess.SubprocessError, OSError, ValueError, KeyError) as error:
            print(f"bench: {error}", file=sys.stderr)
            log = data_dir / "rhone-local.log"
            if log.exists():
                print("last server log lines:\n" + "\n".join(log.read_text().splitlines()[-15:]), file=sys.stderr)
            return 2
        finally:
            if floor is not None:
                floor.kill()
                floor.wait(10)
            if anchor is not None:
                anchor.send_signal(signal.SIGQUIT)  # graceful: workers finish, the master removes its pid file
                try:
                    anchor.wait(10)
                except subprocess.TimeoutExpired:
                    anchor.kill()
                    anchor.wait(5)
            rhone("--json", "local", "down", check=False, timeout=60)
    return report(results, options.edge_processes)


if __name__ == "__main__":
    raise SystemExit(main())
