"""Rhone Local API benchmark: one run against a real `rhone local up` on loopback, figures as ratios to baselines
measured in the same run.

    .venv/bin/python bench/local_api.py [--runs N] [--ops N] [--threads K] [--requests M]

It starts Rhone Local with `rhone local up` on ports it binds, in a temporary HOME, config dir and data dir, with
`RHONE_LOCAL_STAGE_DELAY` (default 0.2 s) so that every operation stage takes a while, and creates a project and an
app with the CLI. Then:

a. CLI overhead: `rhone app ls --json` end to end vs a bare `httpx.get` of the same URL with the same token from a
   fresh `python -c` process; medians over N interleaved runs after an untimed warm-up round (target ≤ 1.3×).
b. Long-poll delivery: for N operations, `GET /v1/operations/{id}?wait=10&after_version=v` until terminal; for each
   state change, (client receive time − the stage's `entered_at`, stamped by the server as it records the stage).
   Median and p95 (target median ≤ 50 ms), as a ratio to a plain `GET /v1/operations/{id}` round trip on the same
   connection, and requests per operation, which must equal its state changes (not grow with wall time).
c. Load from a second process (this script with --load-worker): K threads × M requests each of `GET /v1/health`
   (the baseline: no auth, no database), `GET /v1/operations/{id}`, and an idempotent `POST .../projects` whose
   Idempotency-Key was used once before, so that every request is a replay; requests/s, p50, p99, errors (target 0;
   a replay without `Idempotent-Replayed: true` counts as an error, and so does a second project).

Every request goes to 127.0.0.1; every count is bounded; `rhone local down` runs in a finally block. A figure over
target prints OVER, and the script exits 1 (2 when the setup itself fails).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import Rhone, SetupError, local_up, parse_ts, percentile, rhone_script, time_process

WORKSPACE = "local"
PROJECT, APP = "bench", "web"
LOAD_PROJECT, LOAD_KEY = "load", "bench-load-replay"
CLI_RATIO_TARGET = 1.3  # `rhone app ls --json` against one httpx GET process (README, "Performance")
LONG_POLL_MEDIAN_TARGET_MS = 50.0

BARE_GET = """\
import os, sys, httpx

token = os.environ["RHONE_BENCH_TOKEN"]
r = httpx.get(sys.argv[1], params={"limit": 200}, headers={"Authorization": "Bearer " + token})
r.raise_for_status()
sys.stdout.write(r.text)
"""


# -- a. CLI vs bare httpx --------------------------------------------------------------------------------------------
@dataclass
class Timed:
    name: str
    argv: list[str]
    env: dict[str, str]
    samples: list[float] = field(default_factory=list)

    def run(self, cwd: Path) -> subprocess.CompletedProcess:
        """One untimed run, its output captured (the timed runs: `time_process`)."""
        return subprocess.run(
            self.argv,
            env=self.env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000


def bench_cli(rhone: Rhone, python: Path, api_url: str, token: str, runs: int) -> dict[str, Any]:
    url = f"{api_url}/v1/workspaces/{WORKSPACE}/projects/{PROJECT}/apps"
    cli = Timed("rhone app ls --json", [str(rhone.exe), "app", "ls", "--json", "--project", PROJECT], rhone.env)
    bare = Timed("python -c httpx.get", [str(python), "-c", BARE_GET, url], {**rhone.env, "RHONE_BENCH_TOKEN": token})
    for case, names in (
        (cli, lambda out: [a["name"] for a in json.loads(out)]),
        (bare, lambda out: [a["name"] for a in json.loads(out)["items"]]),
    ):
        proc = case.run(rhone.cwd)  # warm-up: untimed, and it must do what it is measured doing
        if proc.returncode != 0 or names(proc.stdout) != [APP]:
            raise SetupError(f"`{case.name}` failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    for _ in range(runs):
        for case in (cli, bare):
            elapsed, status = time_process(case.argv, env=case.env, cwd=rhone.cwd, timeout=60)
            case.samples.append(elapsed)
            if status != 0:
                raise SetupError(f"`{case.name}` failed in a timed run (exit {status})")
    return {"cli": cli, "bare": bare, "ratio": cli.median_ms / bare.median_ms}


# -- b. long-poll delivery -------------------------------------------------------------------------------------------
def bench_long_poll(api_url: str, token: str, ops: int) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    requests_per_op: list[int] = []
    changes_per_op: list[int] = []
    bundled = 0  # responses that carried more than one new stage (a change the client was not woken for)
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for index in range(ops):
            started = client.post(f"/v1/workspaces/{WORKSPACE}/projects", json={"name": f"poll-{index}"})
            if started.status_code != 202:
                raise SetupError(f"project create answered {started.status_code}: {started.text}")
            op = started.json()
            requests = changes = 0
            deadline = time.monotonic() + 60
            while not op["terminal"]:
                if time.monotonic() > deadline:
                    raise SetupError(f"operation {op['id']} still {op['state']} after 60 s")
                response = client.get(f"/v1/operations/{op['id']}", params={"wait": 10, "after_version": op["version"]})
                received = time.time()
                response.raise_for_status()
                requests += 1
                new = response.json()
                fresh = new["stages"][len(op["stages"]) :]
                bundled += len(fresh) > 1
                latencies.extend((received - parse_ts(stage["entered_at"])) * 1000 for stage in fresh)
                changes += new["version"] - op["version"]
                op = new
            if op["state"] != "succeeded":
                raise SetupError(f"operation {op['id']} ended {op['state']}: {op['error']}")
            requests_per_op.append(requests)
            changes_per_op.append(changes)
        # Baseline: a plain read of the same resource on the same keep-alive connection.
        plain = []
        for _ in range(200):
            t0 = time.perf_counter()
            client.get(f"/v1/operations/{op['id']}").raise_for_status()
            plain.append((time.perf_counter() - t0) * 1000)
    return {
        "ops": ops,
        "samples": len(latencies),
        "median_ms": statistics.median(latencies),
        "p95_ms": percentile(latencies, 95),
        "max_ms": max(latencies),
        "plain_get_ms": statistics.median(plain),
        "requests_per_op": statistics.mean(requests_per_op),
        "changes_per_op": statistics.mean(changes_per_op),
        "extra_requests": sum(r - c for r, c in zip(requests_per_op, changes_per_op, strict=True)),
        "bundled": bundled,
    }


# -- c. load from a second process -----------------------------------------------------------------------------------
@dataclass
class Phase:
    method: str
    path: str
    body: dict | None
    headers: dict[str, str]
    expected: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _load_thread(phase: Phase, api_url: str, token: str, count: int, barrier: threading.Barrier) -> None:
    import httpx

    latencies, errors = [], []
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}", **phase.headers}) as client:
        client.get("/v1/health")  # connect before the clock starts
        barrier.wait()
        for _ in range(count):
            t0 = time.perf_counter()
            try:
                response = client.request(phase.method, phase.path, json=phase.body, timeout=30)
                if response.status_code != phase.expected:
                    errors.append(f"{response.status_code}: {response.text[:200]}")
                elif phase.method == "POST" and response.headers.get("idempotent-replayed") != "true":
                    errors.append("a POST was not a replay")
            except httpx.HTTPError as error:
                errors.append(f"{type(error).__name__}: {error}")
            latencies.append((time.perf_counter() - t0) * 1000)
    with phase.lock:
        phase.latencies.extend(latencies)
        phase.errors.extend(errors)


def load_worker(api_url: str, threads: int, per_thread: int, op_id: str) -> dict[str, Any]:
    """Runs in the second process: three phases of `threads` × `per_thread` requests; returns a JSON-able summary."""
    token = os.environ["RHONE_BENCH_TOKEN"]
    replay = {"Idempotency-Key": LOAD_KEY}
    phases = {
        "GET /v1/health": Phase("GET", "/v1/health", None, {}, 200),
        "GET /v1/operations/{id}": Phase("GET", f"/v1/operations/{op_id}", None, {}, 200),
        "POST projects (replay)": Phase(
            "POST", f"/v1/workspaces/{WORKSPACE}/projects", {"name": LOAD_PROJECT}, replay, 202
        ),
    }
    results: dict[str, Any] = {}
    for label, phase in phases.items():
        barrier = threading.Barrier(threads + 1, timeout=60)
        workers = [
            threading.Thread(target=_load_thread, args=(phase, api_url, token, per_thread, barrier), daemon=True)
            for _ in range(threads)
        ]
        for worker in workers:
            worker.start()
        barrier.wait()
        started = time.perf_counter()
        for worker in workers:
            worker.join(120)
        elapsed = time.perf_counter() - started
        results[label] = {
            "requests": len(phase.latencies),
            "seconds": elapsed,
            "rps": len(phase.latencies) / elapsed,
            "p50_ms": percentile(phase.latencies, 50),
            "p99_ms": percentile(phase.latencies, 99),
            "errors": len(phase.errors) + threads * per_thread - len(phase.latencies),  # a stuck thread counts too
            "first_errors": phase.errors[:3],
        }
    return results


def bench_load(python: Path, api_url: str, token: str, threads: int, per_thread: int, env: dict[str, str]) -> dict:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        first = client.post(
            f"/v1/workspaces/{WORKSPACE}/projects", json={"name": LOAD_PROJECT}, headers={"Idempotency-Key": LOAD_KEY}
        )
        if first.status_code != 202 or first.headers.get("idempotent-replayed"):
            raise SetupError(f"the first idempotent create answered {first.status_code}: {first.text}")
        op_id = first.json()["id"]
        proc = subprocess.run(
            [
                str(python),
                __file__,
                "--load-worker",
                "--api-url",
                api_url,
                "--op-id",
                op_id,
                "--threads",
                str(threads),
                "--requests",
                str(per_thread),
            ],
            env={**env, "RHONE_BENCH_TOKEN": token},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise SetupError(f"the load process exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        results = json.loads(proc.stdout)
        projects = client.get(f"/v1/workspaces/{WORKSPACE}/projects", params={"limit": 200}).json()["items"]
        created = sum(project["name"] == LOAD_PROJECT for project in projects)
        health = client.get("/v1/health").status_code
    return {"op_id": op_id, "phases": results, "load_projects": created, "health_after": health}


# -- the run ---------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="a: timed runs of each process (default 15)")
    parser.add_argument("--ops", type=int, default=15, help="b: operations waited for (default 15)")
    parser.add_argument("--threads", type=int, default=8, help="c: client threads (default 8)")
    parser.add_argument("--requests", type=int, default=250, help="c: requests per thread and phase (default 250)")
    parser.add_argument("--stage-delay", type=float, default=0.2, help="seconds per operation stage (default 0.2)")
    parser.add_argument("--python", default=sys.executable, help="the venv python (default: this interpreter)")
    parser.add_argument("--load-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--op-id", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    for name in ("runs", "ops", "threads", "requests"):
        if not 1 <= getattr(options, name) <= 10_000:
            parser.error(f"--{name} must be between 1 and 10000")

    if options.load_worker:
        if not (options.api_url or "").startswith("http://127.0.0.1:"):
            parser.error("--load-worker only targets http://127.0.0.1")
        print(json.dumps(load_worker(options.api_url, options.threads, options.requests, options.op_id)))
        return 0

    python = Path(options.python)
    try:
        exe = rhone_script(options.python)
    except SetupError as error:
        print(f"bench: {error} (install rhone[dev] into that venv)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="rhone-bench-api-") as tmp:
        root = Path(tmp)
        home, work, data_dir = root / "home", root / "work", root / "data"
        home.mkdir()
        work.mkdir()
        env = {
            "HOME": str(home),
            "RHONE_CONFIG_DIR": str(home / ".config" / "rhone"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            "RHONE_LOCAL_STAGE_DELAY": str(options.stage_delay),  # inherited by the server `local up` starts
        }
        rhone = Rhone(exe, env, work)
        try:
            started = time.perf_counter()
            status = local_up(rhone, "--data-dir", str(data_dir))
            up_seconds = time.perf_counter() - started
            api_url = status["api_url"]
            token = (data_dir / "owner.token").read_text().strip()
            rhone("project", "create", PROJECT)
            rhone("app", "create", APP, "--project", PROJECT)

            print(
                f"Rhone Local {status.get('version')} (pid {status.get('pid')}) at {api_url}; `rhone local up` took "
                f"{up_seconds:.2f} s; stage delay {options.stage_delay:g} s; python {sys.version.split()[0]}; "
                f"{os.cpu_count()} CPUs",
                flush=True,
            )
            cli = bench_cli(rhone, python, api_url, token, options.runs)
            print("a. done", flush=True)
            poll = bench_long_poll(api_url, token, options.ops)
            print("b. done", flush=True)
            load = bench_load(python, api_url, token, options.threads, options.requests, env)
            print("c. done", flush=True)
        except (SetupError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as error:
            print(f"bench: {error}", file=sys.stderr)
            log = data_dir / "rhone-local.log"
            if log.exists():
                print("last server log lines:\n" + "\n".join(log.read_text().splitlines()[-15:]), file=sys.stderr)
            return 2
        finally:
            down = rhone("--json", "local", "down", "--data-dir", str(data_dir), check=False, timeout=60)
            stopped = down.returncode == 0 and json.loads(down.stdout or "{}").get("stopped")
            print(f"`rhone local down`: {'stopped the server' if stopped else down.stdout + down.stderr}".rstrip())

    return report(options, cli, poll, load)


def report(options: argparse.Namespace, cli: dict, poll: dict, load: dict) -> int:
    over: list[str] = []

    def verdict(ok: bool, name: str) -> str:
        if not ok:
            over.append(name)
        return "PASS" if ok else "OVER"

    print()
    print(f"a. CLI end to end: {options.runs} interleaved runs of each fresh process (after a warm-up round)")
    print(f"   {'process':<26} {'median ms':>9} {'min ms':>7} {'max ms':>7}")
    for case in (cli["bare"], cli["cli"]):
        print(
            f"   {case.name:<26} {case.median_ms:>9.1f} {min(case.samples) * 1000:>7.1f} "
            f"{max(case.samples) * 1000:>7.1f}"
        )
    print()
    print(
        f"b. long-poll delivery: {poll['ops']} project-create operations, {poll['samples']} state changes "
        f"(stage entered_at → client receive)"
    )
    print(
        f"   median {poll['median_ms']:.1f} ms, p95 {poll['p95_ms']:.1f} ms, max {poll['max_ms']:.1f} ms; "
        f"plain GET of the operation {poll['plain_get_ms']:.2f} ms; "
        f"{poll['bundled']} responses carried more than one change"
    )
    print()
    print(f"c. load from a second process: {options.threads} threads × {options.requests} requests per phase")
    print(f"   {'phase':<26} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    phases = load["phases"]
    for label, phase in phases.items():
        figures = f"{phase['rps']:>7.0f} {phase['p50_ms']:>7.2f} {phase['p99_ms']:>7.2f} {phase['errors']:>6}"
        print(f"   {label:<26} {figures}")
        for message in phase["first_errors"]:
            print(f"      error: {message}")
    print(
        f"   projects named {LOAD_PROJECT!r} after the replays: {load['load_projects']}; "
        f"/v1/health afterwards: {load['health_after']}"
    )

    health = phases["GET /v1/health"]
    errors = sum(phase["errors"] for phase in phases.values())
    rows = [
        (
            "a. rhone app ls --json ÷ bare httpx GET",
            f"{cli['ratio']:.2f}× ({cli['cli'].median_ms:.0f}/{cli['bare'].median_ms:.0f} ms)",
            f"≤{CLI_RATIO_TARGET:g}×",
            verdict(cli["ratio"] <= CLI_RATIO_TARGET, "a"),
        ),
        (
            "b. long-poll latency median",
            f"{poll['median_ms']:.1f} ms ({poll['median_ms'] / poll['plain_get_ms']:.1f}× plain GET)",
            f"≤{LONG_POLL_MEDIAN_TARGET_MS:g} ms",
            verdict(poll["median_ms"] <= LONG_POLL_MEDIAN_TARGET_MS, "b median"),
        ),
        (
            "b. long-poll latency p95",
            f"{poll['p95_ms']:.1f} ms ({poll['p95_ms'] / poll['plain_get_ms']:.1f}× plain GET)",
            "",
            "",
        ),
        (
            "b. requests per waited operation",
            f"{poll['requests_per_op']:.2f} for {poll['changes_per_op']:.2f} changes",
            "= changes",
            verdict(poll["extra_requests"] == 0, "b requests"),
        ),
    ]
    for label, phase in phases.items():
        if label == "GET /v1/health":
            continue
        rows.append(
            (
                f"c. {label}",
                f"{phase['rps']:.0f} req/s ({phase['rps'] / health['rps']:.2f}× health), p50 {phase['p50_ms']:.1f} ms "
                f"({phase['p50_ms'] / health['p50_ms']:.1f}×), p99 {phase['p99_ms']:.1f} ms",
                "",
                "",
            )
        )
    rows.append(("c. errors (all phases)", f"{errors}", "0", verdict(errors == 0, "c errors")))
    rows.append(
        (
            "c. projects created by replays",
            f"{load['load_projects']}",
            "1",
            verdict(load["load_projects"] == 1, "c replays"),
        )
    )
    print()
    print(f"{'measure':<42} {'value':<58} {'target':<10} result")
    print(f"{'-' * 42} {'-' * 58} {'-' * 10} ------")
    for label, value, target, result in rows:
        print(f"{label:<42} {value:<58} {target:<10} {result}".rstrip())
    print()
    print(f"over target: {', '.join(over)}" if over else "all targets met")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
