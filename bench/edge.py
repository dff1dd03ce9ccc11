"""Edge benchmark: one run of examples/hello behind the local edge, against a real `rhone local up` on loopback.

    .venv/bin/python bench/edge.py [--threads K] [--requests M] [--rounds R] [--promotions N] [--python PATH]

It starts Rhone Local with `rhone local up` on ports it binds, in a temporary HOME, config dir and data dir,
copies examples/hello into the temporary directory, links it, deploys and promotes it (`rhone deploy --promote`: the
first deployment, A, owns `hello--production`), then deploys a second version (B, preview only). Then:

a. Proxy overhead, from a second process (this script with --load-worker): K threads × M `GET /` each (after a few
   untimed warm-up requests per thread), first straight to A's production allocation port, then through the edge with
   `Host: hello--production.localhost`; requests/s, p50 and p99, and errors — a response that is not 200 or does not
   name A counts as one. R rounds (default 3), each direct then edge, so both see the same moment of a noisy
   machine; the figure is the median over rounds of the edge's requests/s as a ratio to the direct ones (target
   ≥ 0.8×).
b. Promotion latency: N promotions alternating B and A (`rhone promote --no-wait`, then `rhone op wait`): request →
   healthy from the operation's stage `entered_at` timestamps (stamped by the server), with the time in each stage
   (policy_check includes starting the target's production allocation: the previous promotion drained it).
c. Route switch: while each promotion runs, a thread polls the edge back to back; the time from the route commit
   (the route event's `created_at`, written in the CAS transaction; the route_cas stage's `entered_at` is shown
   too) to the first edge answer naming the new owner. Every answer during a promotion must be a 200 from the old
   owner and then from the new one — no errors, no flapping back.

Server timestamps and this script's clock are the same host's wall clock (`time.time()`), millisecond resolution.
Every request goes to 127.0.0.1; every count and wait is bounded; `rhone local down` runs in a finally block. A check
that fails (including the ratio below target) prints FAIL and the script exits 1 (2 when the setup itself fails).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import (
    WARMUP,
    Checks,
    Rhone,
    SetupError,
    isolated_environment,
    linked_hello,
    local_up,
    parse_ts,
    production_port,
    rhone_script,
    threaded_load,
)

ROUTE_HOST = "hello--production.localhost"
RATIO_TARGET = 0.8
PROMOTION_STAGES = ("requested", "policy_check", "route_cas", "edge_propagating", "healthy")


# -- the load process ------------------------------------------------------------------------------------------------
def load_worker(direct_port: int, edge_port: int, deployment: str, threads: int, per_thread: int) -> dict:
    """Runs in the second process: the direct phase, then the edge phase; a JSON-able summary of each."""
    expect = f'"deployment": "{deployment}"'.encode()

    def getter(host: str | None) -> Callable[[http.client.HTTPConnection], tuple[str | None, None]]:
        def get(conn: http.client.HTTPConnection) -> tuple[str | None, None]:
            """One GET /; None if it answered 200 naming the expected deployment, else what went wrong."""
            try:
                conn.request("GET", "/", headers={"Host": host} if host else {})
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as error:
                conn.close()
                return f"{type(error).__name__}: {error}", None
            if response.status != 200 or expect not in body:
                return f"{response.status}: {body[:120]!r}", None
            return None, None

        return get

    return {
        "direct": threaded_load(direct_port, threads, per_thread, getter(None)),
        "edge": threaded_load(edge_port, threads, per_thread, getter(ROUTE_HOST)),
    }


# -- the driver ------------------------------------------------------------------------------------------------------
def route_event(data_dir: Path, operation_id: str) -> dict[str, Any]:
    with sqlite3.connect(f"file:{data_dir / 'rhone.db'}?mode=ro", uri=True, timeout=10) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM route_events WHERE operation_id = ?", (operation_id,))]
    if len(rows) != 1:
        raise SetupError(f"{operation_id} has {len(rows)} route events, not 1")
    return rows[0]


class EdgeWatcher(threading.Thread):
    """Polls the production URL through the edge back to back; records (receive time, status, deployment) changes."""

    def __init__(self, edge_port: int, new_owner: str, timeout: float = 60) -> None:
        super().__init__(daemon=True)
        self.edge_port, self.new_owner, self.timeout = edge_port, new_owner, timeout
        self.seen: list[tuple[float, int, str | None]] = []  # only when the answer changes
        self.requests = 0
        self.bad: list[str] = []
        self.first_new: float | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.edge_port, timeout=10)
        deadline = time.monotonic() + self.timeout
        extra = 0  # keep watching a little after the switch: a flap back would show there
        while time.monotonic() < deadline and extra < 50:
            try:
                conn.request("GET", "/", headers={"Host": ROUTE_HOST})
                response = conn.getresponse()
                body = response.read()
                received = time.time()
                deployment = json.loads(body).get("deployment") if response.status == 200 else None
                status = response.status
            except (OSError, http.client.HTTPException, ValueError) as error:
                conn.close()
                received, status, deployment = time.time(), 0, None
                self.bad.append(f"{type(error).__name__}: {error}")
            self.requests += 1
            if status != 200:
                self.bad.append(f"{status}")
            if not self.seen or self.seen[-1][1:] != (status, deployment):
                self.seen.append((received, status, deployment))
            if deployment == self.new_owner and self.first_new is None:
                self.first_new = received
            if self.first_new is not None:
                extra += 1
            self.ready.set()
        conn.close()


@dataclass
class Promotion:
    target: str
    previous: str
    operation: dict[str, Any]
    event: dict[str, Any]
    watcher: EdgeWatcher

    def entered(self, state: str) -> float:
        return next(parse_ts(s["entered_at"]) for s in self.operation["stages"] if s["state"] == state)

    @property
    def total(self) -> float:
        return self.entered("healthy") - self.entered("requested")

    @property
    def stage_seconds(self) -> dict[str, float]:
        return {a: self.entered(b) - self.entered(a) for a, b in itertools.pairwise(PROMOTION_STAGES)}

    @property
    def switch(self) -> float:
        """Route commit (the event's created_at) → first edge answer naming the new owner."""
        return (self.watcher.first_new or math.nan) - parse_ts(self.event["created_at"])

    @property
    def answers(self) -> list[str]:
        return [f"{status}:{deployment}" for _, status, deployment in self.watcher.seen]


def promote(rhone: Rhone, app_dir: Path, data_dir: Path, edge_port: int, target: str, previous: str) -> Promotion:
    watcher = EdgeWatcher(edge_port, target)
    watcher.start()
    if not watcher.ready.wait(10):
        raise SetupError("the edge watcher got no answer within 10 s")
    op = rhone.json("promote", target, "--env", "production", "--no-wait", cwd=app_dir)
    final = rhone.json("op", "wait", op["id"], "--wait-timeout", "60", cwd=app_dir)
    watcher.join(70)
    if final["state"] != "healthy":
        raise SetupError(f"promotion {op['id']} of {target} ended {final['state']}: {final.get('error')}")
    return Promotion(target, previous, final, route_event(data_dir, op["id"]), watcher)


def run_load(python: str, direct_port: int, edge_port: int, deployment: str, threads: int, per_thread: int) -> dict:
    proc = subprocess.run(
        [
            python,
            __file__,
            "--load-worker",
            "--direct-port",
            str(direct_port),
            "--edge-port",
            str(edge_port),
            "--deployment",
            deployment,
            "--threads",
            str(threads),
            "--requests",
            str(per_thread),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise SetupError(f"the load process exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout)


def report(loads: list[dict], promotions: list[Promotion], names: dict[str, str], threads: int, per_thread: int) -> int:
    check = Checks()
    print(
        f"\na. GET / from a second process, {threads} threads × {per_thread} requests (after {WARMUP} warm-up each), "
        f"{len(loads)} rounds of direct then edge"
    )
    header = (
        f"  {'#':>2} {'target':<52} {'requests':>8} {'seconds':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    labels = {"direct": "direct to the allocation's port", "edge": f"through the edge (Host: {ROUTE_HOST})"}
    ratios = []
    for i, load in enumerate(loads, 1):
        for key, label in labels.items():
            r = load[key]
            print(
                f"  {i:>2} {label:<52} {r['requests']:>8} {r['seconds']:>8.2f} {r['rps']:>8.0f} {r['p50_ms']:>8.2f}"
                f" {r['p99_ms']:>8.2f} {r['errors']:>6}"
            )
        ratios.append(load["edge"]["rps"] / load["direct"]["rps"])
    ratio = statistics.median(ratios)
    p50_extra = statistics.median(load["edge"]["p50_ms"] - load["direct"]["p50_ms"] for load in loads)
    p99_extra = statistics.median(load["edge"]["p99_ms"] - load["direct"]["p99_ms"] for load in loads)
    print(
        f"  edge / direct per round: {', '.join(f'{r:.2f}×' for r in ratios)}; median {ratio:.2f}× requests/s "
        f"(target ≥ {RATIO_TARGET}×); median p50 {p50_extra:+.2f} ms, p99 {p99_extra:+.2f} ms"
    )

    print(f"\nb/c. {len(promotions)} promotions alternating two deployments (seconds; stage = time spent in it)")
    header = (
        f"  {'#':>2} {'promote':<10} {'request→healthy':>15} "
        + " ".join(f"{s:>16}" for s in PROMOTION_STAGES[:-1])
        + f" {'cas→commit':>10} {'commit→edge':>11} {'edge polls':>10}  answers seen"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for i, p in enumerate(promotions, 1):
        stages = p.stage_seconds
        cas_to_commit = parse_ts(p.event["created_at"]) - p.entered("route_cas")
        answers = " → ".join(f"{status} {names.get(d, d)}" for _, status, d in p.watcher.seen)
        print(
            f"  {i:>2} {names[p.previous] + ' → ' + names[p.target]:<10} {p.total:>15.3f} "
            + " ".join(f"{stages[s]:>16.3f}" for s in PROMOTION_STAGES[:-1])
            + f" {cas_to_commit:>10.3f} {p.switch:>11.3f} {p.watcher.requests:>10}  {answers}"
        )
    totals = [p.total for p in promotions]
    switches = [p.switch for p in promotions]
    print(
        f"  request→healthy: median {statistics.median(totals):.3f} s, max {max(totals):.3f} s; "
        f"commit→edge serving the new owner: median {statistics.median(switches) * 1000:.0f} ms, "
        f"max {max(switches) * 1000:.0f} ms"
    )

    print()
    check(
        all(load["direct"]["errors"] == 0 and load["edge"]["errors"] == 0 for load in loads),
        "every load request answered 200 as A",
    )
    check(ratio >= RATIO_TARGET, f"edge throughput {ratio:.2f}× direct (target ≥ {RATIO_TARGET}×)")
    check(
        all([s["state"] for s in p.operation["stages"]] == list(PROMOTION_STAGES) for p in promotions),
        "every promotion went requested → policy_check → route_cas → edge_propagating → healthy",
    )
    check(all(not math.isnan(p.switch) for p in promotions), "the edge served every new owner")
    check(
        all(not p.watcher.bad and p.answers == [f"200:{p.previous}", f"200:{p.target}"] for p in promotions),
        "during every promotion the edge answered 200 from the old owner, then the new one: no error, no flap back",
    )
    check(
        all(p.event["epoch"] == i + 2 for i, p in enumerate(promotions)),
        f"route epochs 2..{len(promotions) + 1}, one event per promotion",
    )
    return check.verdict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=8, help="a: client threads (default 8)")
    parser.add_argument("--requests", type=int, default=300, help="a: requests per thread and target (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="a: rounds of direct then edge (default 3)")
    parser.add_argument("--promotions", type=int, default=5, help="b/c: promotions (default 5)")
    parser.add_argument("--python", default=sys.executable, help="the venv python (default: this interpreter)")
    parser.add_argument("--load-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--direct-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--edge-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--deployment", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if not (
        1 <= options.threads <= 64
        and 1 <= options.requests <= 5000
        and 1 <= options.promotions <= 20
        and 1 <= options.rounds <= 9
    ):
        parser.error("bounds: 1 ≤ --threads ≤ 64, 1 ≤ --requests ≤ 5000, 1 ≤ --promotions ≤ 20, 1 ≤ --rounds ≤ 9")
    if options.load_worker:
        result = load_worker(
            options.direct_port, options.edge_port, options.deployment, options.threads, options.requests
        )
        print(json.dumps(result))
        return 0
    try:
        exe = rhone_script(options.python)
    except SetupError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="rhone-bench-edge-") as tmp:
        root = Path(tmp)
        env, work, data_dir = isolated_environment(root)
        rhone = Rhone(exe, env, work)
        try:
            status = local_up(rhone)
            edge_port = status["edge_port"]
            app_dir = linked_hello(rhone, work)
            print(
                f"Rhone Local {status.get('version')} (pid {status.get('pid')}) at {status['api_url']}, edge "
                f":{edge_port}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs (load average "
                f"{os.getloadavg()[0]:.2f}); app: a copy of examples/hello",
                flush=True,
            )
            first = rhone.json("deploy", "--promote", cwd=app_dir)
            a = first["deployment"]["id"]
            if first["promotion"]["state"] != "healthy":
                raise SetupError(f"the first promotion ended {first['promotion']['state']}")
            source = app_dir / "app.py"
            source.write_text(source.read_text().replace('VERSION = "1.0.0"', 'VERSION = "1.0.1"'))
            b = rhone.json("deploy", cwd=app_dir)["id"]
            print(f"A = {a} (owns {ROUTE_HOST}), B = {b} (preview_ready)", flush=True)

            direct_port = production_port(data_dir, a)
            loads = [
                run_load(options.python, direct_port, edge_port, a, options.threads, options.requests)
                for _ in range(options.rounds)
            ]

            promotions = []
            owner, other = a, b
            for _ in range(options.promotions):
                promotions.append(promote(rhone, app_dir, data_dir, edge_port, other, owner))
                owner, other = other, owner
        except (SetupError, subprocess.SubprocessError, OSError, ValueError, KeyError) as error:
            print(f"bench: {error}", file=sys.stderr)
            log = data_dir / "rhone-local.log"
            if log.exists():
                print("last server log lines:\n" + "\n".join(log.read_text().splitlines()[-15:]), file=sys.stderr)
            return 2
        finally:
            down = rhone("--json", "local", "down", check=False, timeout=60)
            stopped = down.returncode == 0 and json.loads(down.stdout or "{}").get("stopped")
            print(f"`rhone local down`: {'stopped the server' if stopped else down.stdout + down.stderr}".rstrip())
    return report(loads, promotions, {a: "A", b: "B"}, options.threads, options.requests)


if __name__ == "__main__":
    raise SystemExit(main())
