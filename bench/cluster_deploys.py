"""Cluster benchmark: whole-deploy throughput on SQLite, on PostgreSQL with one worker node, and with two
(docs/multi-node.md, "Nodes"), ratios measured in the same run.

    .venv/bin/python bench/cluster_deploys.py [--deploys 8] [--clients 4] [--runs 1]

Per run and setup, a fresh server in a temporary HOME and data directory, blobs in one S3-API server (moto's, on
127.0.0.1 port 0, in this process) for every setup, so only the store and the number of worker nodes differ:

- `sqlite`: `rhone local up` (the default store);
- `pg-1`: `rhone local up --store postgresql://…` (a throw-away cluster, tests/engines.py), node `a`;
- `pg-2`: the same plus node `b` (`--role api,worker,runner`, data directory of its own): half the clients deploy
  through its API (as a load balancer in front of both would send them), its workers claim deploys from the shared
  store, its runner starts the previews placed on it.

Then `--clients` threads each run `rhone deploy --json` as fresh processes, one after the other, from their own copy
of examples/hello (all linked to one app; each deploy changes the source so it really builds), `--deploys` in all.
Throughput is deploys that reached `preview_ready` per second of wall time, and the share of the machine's CPUs busy
meanwhile (/proc/stat: the servers, PostgreSQL, the S3 server and the clients together). Prints each setup's
figures, the ratios pg-2 / pg-1 (target ≥ 1.6) and pg-1 / sqlite (target ≥ 0.7), min–max over `--runs`, the load
average, and the ceiling this machine puts on any number of nodes (one node's rate over the share of the CPUs it
keeps busy). Bounded: each deploy at most 300 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _harness import Checks, Rhone, SetupError, isolated_environment, linked_hello, local_up, rhone_script  # noqa: E402

from tests.engines import S3_CLIENT_ARGS, S3_ENVIRON, postgres_cluster, s3_api_server  # noqa: E402


@contextlib.contextmanager
def s3_bucket():
    """(endpoint, bucket) of a loopback S3-API server with one bucket."""
    import logging

    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request would bury the figures
    with s3_api_server() as endpoint:
        boto3.client("s3", endpoint_url=endpoint, **S3_CLIENT_ARGS).create_bucket(Bucket="rhone")
        yield endpoint, "rhone"


def node(root: Path, name: str, python: str) -> Rhone:
    directory = root / name
    directory.mkdir()
    env, work, _ = isolated_environment(directory)
    return Rhone(rhone_script(python), {**env, **S3_ENVIRON}, work)


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc (a server's edge processes, app processes, builds)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(current := todo.pop())
        todo.extend(children.get(current, []))
    return found


@contextlib.contextmanager
def cpu_limit(name: str, cpus: float | None):
    """A cgroup (v1 `cpu` controller) allowing `cpus` CPUs: what a node would have on a machine of its own. Yields a
    function that moves a process tree into it; what the tree starts later is born inside."""
    if cpus is None:
        yield lambda pid: None
        return
    group = Path("/sys/fs/cgroup/cpu") / f"rhone-bench-{name}-{os.getpid()}"
    group.mkdir()
    try:
        period = int((group / "cpu.cfs_period_us").read_text())
        (group / "cpu.cfs_quota_us").write_text(str(int(period * cpus)))

        def confine(pid: int) -> None:
            for member in descendants(pid):
                with contextlib.suppress(OSError):  # it may have exited meanwhile
                    (group / "cgroup.procs").write_text(str(member))

        yield confine
    finally:
        for _ in range(50):  # a stopped server's last children may take a moment to go
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of every CPU since boot, from /proc/stat: the machine's own accounting, which counts the
    servers (daemons, not this process's children), PostgreSQL, the S3 server and the clients alike."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def deploy_all(apis: list[Rhone], app: Path, deploys: int, clients: int) -> tuple[float, float]:
    """(deploys per second, share of the machine's CPUs busy meanwhile): `clients` threads running `rhone deploy`
    from their own copy of `app`, client i through the API of `apis[i % len(apis)]` (as a load balancer would)."""
    copies = []
    for index in range(clients):
        copy = app.parent / f"client-{index}"
        shutil.copytree(app, copy)
        copies.append(copy)
    counter, lock, failures = iter(range(deploys)), threading.Lock(), []

    def client(copy: Path, rhone: Rhone) -> None:
        while True:
            with lock:
                number = next(counter, None)
            if number is None:
                return
            source = copy / "app.py"
            source.write_text(re.sub(r'VERSION = "[^"]*"', f'VERSION = "2.0.{number}"', source.read_text()))
            result = rhone.json("deploy", cwd=copy, timeout=300)
            if result.get("state") != "preview_ready":
                failures.append(result.get("state"))

    threads = [
        threading.Thread(target=client, args=(copy, apis[index % len(apis)])) for index, copy in enumerate(copies)
    ]
    started, (busy_before, total_before) = time.perf_counter(), machine_cpu()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    elapsed = time.perf_counter() - started
    busy_after, total_after = machine_cpu()
    if failures:
        raise SetupError(f"deploys ended {failures}")
    return deploys / elapsed, (busy_after - busy_before) / max(1.0, total_after - total_before)


def one_setup(
    setup: str, deploys: int, clients: int, python: str, blobs: tuple[str, ...], node_cpus: float | None
) -> tuple[float, float]:
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rhone-bench-")))
        env: dict[str, str] = {}
        if setup != "sqlite":
            cluster = stack.enter_context(postgres_cluster())
            import psycopg

            with psycopg.connect(cluster.url, autocommit=True) as admin:
                admin.execute("CREATE DATABASE rhone")
            env["RHONE_LOCAL_STORE"] = cluster.url.replace("/postgres?", "/rhone?")
        a = node(root, "a", python)
        up: list[Rhone] = []
        try:
            names = () if setup == "sqlite" else ("--node", "a")
            status = local_up(a, *names, "--sandbox", "none", *blobs, env=env)
            up.append(a)
            stack.enter_context(cpu_limit("a", node_cpus))(status["pid"])
            if setup == "pg-2":
                b = node(root, "b", python)
                data_b = Path(b.env["RHONE_LOCAL_DATA_DIR"])
                data_b.mkdir(mode=0o700)
                shutil.copy2(Path(a.env["RHONE_LOCAL_DATA_DIR"]) / "owner.token", data_b / "owner.token")
                status = local_up(b, "--node", "b", "--role", "api,worker,runner", "--sandbox", "none", *blobs, env=env)
                up.append(b)
                stack.enter_context(cpu_limit("b", node_cpus))(status["pid"])
            app = linked_hello(a, a.cwd)
            return deploy_all(up, app, deploys, clients)
        finally:
            for server in reversed(up):
                server("local", "down", check=False, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploys", type=int, default=8)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--node-cpus",
        type=float,
        help="confine each node (its server and everything it starts) to this many CPUs with a cgroup, as if each "
        "ran on a machine of its own (needs root and cgroup v1's cpu controller)",
    )
    args = parser.parse_args()
    os.environ.update(S3_ENVIRON)
    print(f"whole deploys (examples/hello, `rhone deploy`): {args.deploys} per setup from {args.clients} clients")
    if args.node_cpus:
        print(f"each node confined to {args.node_cpus} CPUs (cgroup); PostgreSQL, S3 and the clients unconfined")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rates: dict[str, list[float]] = {"sqlite": [], "pg-1": [], "pg-2": []}
    busy: dict[str, list[float]] = {setup: [] for setup in rates}
    with s3_bucket() as (endpoint, bucket):
        blobs = ("--blobs", f"s3://{bucket}/run", "--blobs-endpoint", endpoint)
        for run in range(args.runs):
            for setup in rates:
                run_blobs = (blobs[0], f"{blobs[1]}-{run}-{setup}", *blobs[2:])
                rate, share = one_setup(setup, args.deploys, args.clients, args.python, run_blobs, args.node_cpus)
                rates[setup].append(rate)
                busy[setup].append(share)
                print(f"  run {run + 1} {setup:<6} {rate:.3f} deploys/s, CPUs {share:.0%} busy", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    two = [b / a for a, b in zip(rates["pg-1"], rates["pg-2"], strict=True)]
    pg = [p / s for s, p in zip(rates["sqlite"], rates["pg-1"], strict=True)]
    print(f"pg-2 / pg-1 (two worker nodes / one): {min(two):.2f}-{max(two):.2f}x")
    print(f"pg-1 / sqlite (PostgreSQL / SQLite, one node): {min(pg):.2f}-{max(pg):.2f}x")
    # Both nodes, PostgreSQL, the S3 server and the clients share this machine's CPUs: no number of nodes can go
    # faster than one node's rate divided by the share of the CPUs it already keeps busy.
    ceiling = [1 / share for share in busy["pg-1"]]
    print(
        f"ceiling for any number of nodes on these {os.cpu_count()} CPUs (1 / pg-1's busy share): "
        f"{min(ceiling):.2f}-{max(ceiling):.2f}x"
    )
    check = Checks()
    check(min(two) >= 1.6, "two worker nodes >= 1.6x one")
    check(min(pg) >= 0.7, "PostgreSQL >= 0.7x SQLite")
    return check.verdict()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as error:
        print(f"setup failed: {error}", file=sys.stderr)
        sys.exit(2)
