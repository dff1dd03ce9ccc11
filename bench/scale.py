"""Scale benchmark: examples/hello scaled out behind the local edge, against a real `rhone local up` on loopback.

    .venv/bin/python bench/scale.py [--instances N] [--rounds R] [--threads K] [--requests M] [--python PATH]

It starts Rhone Local with `rhone local up` on ports it binds in a temporary HOME, config dir and data dir,
copies examples/hello, deploys and promotes it (`rhone deploy --promote`), binds the runtime services hello needs to
run more than one instance (`rhone env services production --bind session --bind broadcast`; Rhone Local's own
implementations), then:

a. Scale-up latency, R rounds: `rhone app scale --instances 2` (the baseline: one allocation to start) and
   `--instances N` (N − 1 to start), each from one instance and back to one in between. Request → scaled is read from
   the operation's stage `entered_at` timestamps (stamped by the server). The figure is the time to N as a ratio of
   the time to 2: with allocations started in parallel it stays near 1 however large N is, where one at a time it
   would approach N − 1. Per allocation = (request → scaled) / (allocations started).
b. Edge throughput with 1 and with N ready allocations, K threads × M `GET /` each through the edge from a second
   process (this script with --load-worker); requests/s, p50, p99, errors (a response that is not 200 from the route
   owner counts as one), and how many distinct allocations answered. The figure is N-allocation requests/s as a ratio
   of 1-allocation requests/s. Read it with the machine in mind: the edge, the load generator and every app process
   share the same cores. One hello process (the standard library's thread-per-connection server, holding Python's
   GIL) is itself a bottleneck, so more instances help — but on 2 cores they compete with the edge and the load
   generator for the same CPU, so the gain stays well below N×.

Every request goes to 127.0.0.1; counts and waits are bounded; `rhone local down` runs in a finally block. A check that
fails prints FAIL and the script exits 1 (2 when the setup itself fails).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _harness import (
    Checks,
    Rhone,
    SetupError,
    isolated_environment,
    linked_hello,
    local_up,
    parse_ts,
    rhone_script,
    threaded_load,
)

ROUTE_HOST = "hello--production.localhost"


# -- the load process ------------------------------------------------------------------------------------------------
def load_worker(edge_port: int, deployment: str, threads: int, per_thread: int) -> dict[str, Any]:
    def one(conn: http.client.HTTPConnection) -> tuple[str | None, str | None]:
        """One GET / through the edge; (what went wrong, None) or (None, the allocation that answered)."""
        try:
            conn.request("GET", "/", headers={"Host": ROUTE_HOST})
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            return f"{type(error).__name__}: {error}", None
        if response.status != 200:
            return f"{response.status}: {body[:100]!r}", None
        document = json.loads(body)
        if document.get("deployment") != deployment:
            return f"answered by {document.get('deployment')}", None
        return None, document.get("allocation")

    return threaded_load(edge_port, threads, per_thread, one)


def run_load(python: str, edge_port: int, deployment: str, threads: int, per_thread: int) -> dict[str, Any]:
    proc = subprocess.run(
        [
            python,
            __file__,
            "--load-worker",
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


# -- the driver ------------------------------------------------------------------------------------------------------
def scale(rhone: Rhone, app_dir: Path, instances: int) -> dict[str, Any]:
    """One scale operation; its request → scaled seconds and how many allocations it started."""
    op = rhone.json("app", "scale", "--env", "production", "--instances", str(instances), cwd=app_dir)
    if op["state"] != "scaled":
        raise SetupError(f"scale to {instances} ended {op['state']}: {op.get('error')}")
    entered = {s["state"]: parse_ts(s["entered_at"]) for s in op["stages"]}
    scaling = next(s["evidence"] for s in op["stages"] if s["state"] == "scaled")
    ready = [a for a in scaling["allocations"] if a["state"] == "ready"]
    if len(ready) != instances:
        raise SetupError(f"scale to {instances}: {len(ready)} ready allocations")
    return {"seconds": entered["scaled"] - entered["requested"], "instances": instances}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=3, help="N (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="a: scale-ups per size (default 3)")
    parser.add_argument("--threads", type=int, default=8, help="b: client threads (default 8)")
    parser.add_argument("--requests", type=int, default=300, help="b: requests per thread and phase (default 300)")
    parser.add_argument("--python", default=sys.executable, help="the venv python (default: this interpreter)")
    parser.add_argument("--load-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--edge-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--deployment", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if not (
        2 <= options.instances <= 8
        and 1 <= options.rounds <= 10
        and 1 <= options.threads <= 64
        and 1 <= options.requests <= 5000
    ):
        parser.error("bounds: 2 ≤ --instances ≤ 8, 1 ≤ --rounds ≤ 10, 1 ≤ --threads ≤ 64, 1 ≤ --requests ≤ 5000")
    if options.load_worker:
        print(json.dumps(load_worker(options.edge_port, options.deployment, options.threads, options.requests)))
        return 0
    try:
        exe = rhone_script(options.python)
    except SetupError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2

    n = options.instances
    with tempfile.TemporaryDirectory(prefix="rhone-bench-scale-") as tmp:
        root = Path(tmp)
        env, work, _ = isolated_environment(root)
        rhone = Rhone(exe, env, work)
        try:
            status = local_up(rhone)
            edge_port = status["edge_port"]
            app_dir = linked_hello(rhone, work)
            print(
                f"Rhone Local {status.get('version')} (pid {status.get('pid')}), edge :{edge_port}; python "
                f"{sys.version.split()[0]}; {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.2f}); "
                "app: a copy of examples/hello",
                flush=True,
            )
            deployment = rhone.json("deploy", "--promote", cwd=app_dir)["deployment"]["id"]
            rhone.json("env", "services", "production", "--bind", "session", "--bind", "broadcast", cwd=app_dir)

            to_two, to_n = [], []
            for _ in range(options.rounds):
                to_two.append(scale(rhone, app_dir, 2))
                scale(rhone, app_dir, 1)
                to_n.append(scale(rhone, app_dir, n))
                scale(rhone, app_dir, 1)

            one = run_load(options.python, edge_port, deployment, options.threads, options.requests)
            scale(rhone, app_dir, n)
            many = run_load(options.python, edge_port, deployment, options.threads, options.requests)
        except SetupError as error:
            print(f"bench: setup failed: {error}", file=sys.stderr)
            return 2
        finally:
            rhone("local", "down", "--json", check=False)
    return report(n, to_two, to_n, one, many, options.threads, options.requests)


def report(n: int, to_two: list[dict], to_n: list[dict], one: dict, many: dict, threads: int, per_thread: int) -> int:
    check = Checks()
    two = statistics.median(r["seconds"] for r in to_two)
    big = statistics.median(r["seconds"] for r in to_n)
    print(f"\na. scale-up latency, request → scaled (median of {len(to_two)}; from 1 instance each time)")
    print(f"  1 → 2: {two:.3f} s ({two:.3f} s per allocation started)")
    print(f"  1 → {n}: {big:.3f} s ({big / (n - 1):.3f} s per allocation started)")
    print(f"  1 → {n} / 1 → 2: {big / two:.2f}× (one at a time would be ~{n - 1}×)")

    print(f"\nb. GET / through the edge from a second process, {threads} threads × {per_thread} requests")
    header = f"  {'allocations':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'answered by':>12}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for label, r in (("1", one), (str(n), many)):
        print(
            f"  {label:<12} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>6} "
            f"{r['answered_by']:>12}"
        )
    ratio = many["rps"] / one["rps"]
    print(f"  {n} / 1 allocations: {ratio:.2f}× requests/s ({os.cpu_count()} CPUs shared by edge, load and apps)")

    print()
    check(one["errors"] == 0 and many["errors"] == 0, "every request answered 200 by the route owner")
    check(many["answered_by"] == n, f"requests spread over all {n} allocations")
    check(big / two < (n - 1), f"allocations start in parallel (1 → {n} faster than {n - 1} × 1 → 2)")
    return check.verdict()


if __name__ == "__main__":
    sys.exit(main())
