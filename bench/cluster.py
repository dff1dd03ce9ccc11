"""Cluster benchmark: a route change until both nodes' edges serve the new owner, and a long-poll on one node
answering a change made through the other (docs/multi-node.md, "Nodes").

    .venv/bin/python bench/cluster.py [--changes 20] [--longpolls 10] [--runs 1]

Per run: a throw-away PostgreSQL cluster (tests/engines.py, unix socket only), node `a` (every role) and node `b`
(`--role api,edge`: its edge follows its own API, its allocations are a's, so no shared blob store is needed), both
`rhone local up --store … --port 0 --edge-port 0` with their own HOME and data directory. Two deployments of
examples/hello are built on a; then `--changes` times the route moves (`rhone promote` and `rhone rollback` alternately,
`--no-wait`). One probe thread per edge polls `/` on a kept-alive connection with no pause (the app names its
deployment); the delay of a change on an edge is the time the probe first saw the new owner minus the route event's
`created_at` (written in the route compare-and-swap's transaction, on this machine's clock). A probe answer's own
latency is part of the figure: it errs on the slow side. Then, probes stopped, `--longpolls` more moves, each operation
followed to its end by long-polls on node b's API (`GET /v1/operations/ID?wait=10&after_version=V`, the next one sent
as soon as one answers) while node a's workers advance it. A third listener, the benchmark's own PostgreSQL connection
(`LISTEN rhone_changes`), notes when each operation version's commit is announced (the notification is sent at commit;
one per version). Per answer: the time from the commit of the first version new to that long-poll (as the third listener
heard it) to the answer on node b, both on this process's clock — node b hears the same notification, wakes its
long-polls and reads the row again; an answer may carry a later version as well. Long-polls sent after that commit are
answered without a wait (typically the first stage, recorded while `rhone promote --no-wait` is still exiting): they are
not wake-ups, are left out, and counted. (The operation's `updated_at` is stamped before its transaction commits and a
new poll may be sent after the change: measured from it, the figure counted the CLI's exit and the client's own
turn-around.) Prints p50/p95/max per edge, over both and of the long-polls, min–max over `--runs`, and the load average
(the machine may be shared: the figure is rough). Targets: p95 ≤ 50 ms for both. Bounded: each change waits at most
30 s, the whole run a few minutes.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _harness import (  # noqa: E402
    Checks,
    Rhone,
    SetupError,
    isolated_environment,
    linked_hello,
    local_up,
    parse_ts,
    percentile,
    rhone_script,
)

from rhone_local.domain.operations import TERMINAL_STATES  # noqa: E402
from tests.engines import postgres_cluster  # noqa: E402

HOST = "hello--production.localhost"
CHANGE_TIMEOUT = 30.0


class Probe(threading.Thread):
    """Polls one edge; `first_seen(deployment, after)` is when it first answered with that owner after `after`."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, threading.Event()
        self.seen: list[tuple[float, str | None]] = []  # (time, owner) at each change of owner
        self.lock = threading.Lock()

    def run(self) -> None:
        conn, last = None, object()
        while not self.stop.is_set():
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/", headers={"Host": HOST})
                answer = conn.getresponse()
                body = answer.read()
                owner = json.loads(body).get("deployment") if answer.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):
                conn, owner = None, None
                time.sleep(0.01)
            if owner != last:
                with self.lock:
                    self.seen.append((time.time(), owner))
                last = owner

    def first_seen(self, deployment: str, after: float) -> float | None:
        with self.lock:
            return next((t for t, owner in self.seen if owner == deployment and t >= after), None)


def node(root: Path, name: str, python: str) -> Rhone:
    directory = root / name
    directory.mkdir()
    env, work, _ = isolated_environment(directory)
    return Rhone(rhone_script(python), env, work)


class CommitClock(threading.Thread):
    """A third listener (the bench's own connection): when each operation version's commit was announced. PostgreSQL
    sends the notification (`rhone_changes`, payload: the operation id) at commit, one per version, in order, so the
    n-th one of an operation is its version n's commit — on this process's clock, like the answers."""

    def __init__(self, url: str) -> None:
        import psycopg

        super().__init__(daemon=True)
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("LISTEN rhone_changes")
        self.stop = threading.Event()
        self.received: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def run(self) -> None:
        with self.conn:
            while not self.stop.is_set():
                for note in self.conn.notifies(timeout=0.5):
                    with self.lock:
                        self.received.setdefault(note.payload, []).append(time.time())

    def count(self, op_id: str, version: int) -> int:
        """How many notifications of `op_id` arrived, once its `version`'s did."""
        self.commit_of(op_id, version)
        with self.lock:
            return len(self.received[op_id])

    def commit_of(self, op_id: str, version: int) -> float:
        deadline = time.monotonic() + CHANGE_TIMEOUT
        while time.monotonic() < deadline:
            with self.lock:
                received = self.received.get(op_id, [])
                if len(received) >= version:
                    return received[version - 1]
            time.sleep(0.01)
        raise SetupError(f"no notification of {op_id} version {version} in {CHANGE_TIMEOUT}s")


def follow_on_other_node(port: int, token: str, operation: dict, commits: CommitClock) -> tuple[list[float], int]:
    """Long-polls node b's API for `operation` (advanced by node a's workers) until it ends. Per answer whose long-poll
    was waiting when the first version new to it committed: the time from that commit (`CommitClock`) to the answer,
    in ms (an answer may carry a later version too); and how many answers were to long-polls sent after that commit
    (answered without waiting: not a wake-up, left out)."""
    import httpx

    answers: list[tuple[int, float, float]] = []  # (first version new to it, long-poll sent, answered)
    op_id, version = operation["id"], operation["version"]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}) as client:
        deadline = time.monotonic() + CHANGE_TIMEOUT
        while time.monotonic() < deadline:
            sent = time.time()
            answer = client.get(f"/v1/operations/{op_id}", params={"wait": 10, "after_version": version}, timeout=20)
            answered = time.time()
            answer.raise_for_status()
            op = answer.json()
            if op["version"] > version:
                answers.append((version + 1, sent, answered))
                version = op["version"]
            if op["state"] in TERMINAL_STATES:
                break
        else:
            raise SetupError(f"{op_id} did not end in {CHANGE_TIMEOUT}s")
    if commits.count(op_id, version) != version:
        raise SetupError(f"{op_id}: not one notification per version; the commit times would be wrong")
    delays, already = [], 0
    for first_new, sent, answered in answers:
        committed = commits.commit_of(op_id, first_new)
        if sent >= committed:
            already += 1
        else:
            delays.append((answered - committed) * 1000)
    return delays, already


def one_run(changes: int, longpolls: int, python: str) -> dict[str, list[float]]:
    import psycopg

    delays: dict[str, list[float]] = {"a": [], "b": [], "longpoll": [], "already": []}
    with postgres_cluster() as cluster, tempfile.TemporaryDirectory(prefix="rhone-bench-") as tmp:
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE rhone")
        store = {"RHONE_LOCAL_STORE": cluster.url.replace("/postgres?", "/rhone?")}
        root = Path(tmp)
        a, b = node(root, "a", python), node(root, "b", python)
        up: list[Rhone] = []
        probes: list[Probe] = []
        commits: CommitClock | None = None
        try:
            status_a = local_up(a, "--node", "a", "--sandbox", "none", env=store)
            up.append(a)
            data_b = Path(b.env["RHONE_LOCAL_DATA_DIR"])
            data_b.mkdir(mode=0o700)
            shutil.copy2(Path(a.env["RHONE_LOCAL_DATA_DIR"]) / "owner.token", data_b / "owner.token")
            status_b = local_up(b, "--node", "b", "--role", "api,edge", env=store)
            up.append(b)
            app = linked_hello(a, a.cwd)
            first = a.json("deploy", "--promote", cwd=app, timeout=300)["deployment"]["id"]
            source = app / "app.py"  # a second deployment: another source (the same one would be the same artifact)
            source.write_text(source.read_text().replace('VERSION = "1.0.0"', 'VERSION = "1.0.1"'))
            second = a.json("deploy", cwd=app, timeout=300)["id"]
            probes = [Probe(status_a["edge_port"]), Probe(status_b["edge_port"])]
            for probe in probes:
                probe.start()
            with psycopg.connect(store["RHONE_LOCAL_STORE"], autocommit=True) as db:
                for index in range(changes):
                    target = second if index % 2 == 0 else first
                    command = ("promote", second) if target == second else ("rollback", "--to", first)
                    before = time.time()
                    a(*command, "--no-wait", "--json", cwd=app)
                    deadline = time.monotonic() + CHANGE_TIMEOUT
                    while not all(p.first_seen(target, before) for p in probes):
                        if time.monotonic() > deadline:
                            raise SetupError(f"change {index}: {target} not served by both edges in {CHANGE_TIMEOUT}s")
                        time.sleep(0.01)
                    (created,) = db.execute(
                        "SELECT created_at FROM route_events WHERE deployment_id = %s ORDER BY seq DESC LIMIT 1",
                        (target,),
                    ).fetchone()
                    for name, probe in zip("ab", probes, strict=True):
                        delays[name].append((probe.first_seen(target, before) - parse_ts(created)) * 1000)
            for probe in probes:
                probe.stop.set()
            token = (Path(a.env["RHONE_LOCAL_DATA_DIR"]) / "owner.token").read_text().strip()
            commits = CommitClock(store["RHONE_LOCAL_STORE"])
            commits.start()
            for index in range(longpolls):
                command = ("promote", second) if (changes + index) % 2 == 0 else ("rollback", "--to", first)
                operation = a.json(*command, "--no-wait", cwd=app)
                answered, already = follow_on_other_node(status_b["port"], token, operation, commits)
                delays["longpoll"] += answered
                delays["already"].append(already)
        finally:
            if commits is not None:
                commits.stop.set()
                commits.join(5)
            for probe in probes:
                probe.stop.set()
            for server in reversed(up):
                server("local", "down", check=False, timeout=120)
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--longpolls", type=int, default=10, help="operations followed by a long-poll on node b")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    print(
        f"route change -> served by both edges (node a: all roles, node b: api,edge), {args.changes} changes; "
        f"long-poll on node b for {args.longpolls} operations advanced by node a"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    summaries: dict[str, list[tuple[float, float, float]]] = {"a": [], "b": [], "both": [], "longpoll": []}
    for run in range(args.runs):
        delays = one_run(args.changes, args.longpolls, args.python)
        delays["both"] = [max(x, y) for x, y in zip(delays["a"], delays["b"], strict=True)]
        already = int(sum(delays.pop("already")))
        print(f"  run {run + 1} long-polls: {len(delays['longpoll'])} woken by a change; {already} asked after it")
        for name, values in delays.items():
            stats = (percentile(values, 50), percentile(values, 95), max(values))
            summaries[name].append(stats)
            print(f"  run {run + 1} {name:<8} p50 {stats[0]:7.1f} ms  p95 {stats[1]:7.1f} ms  max {stats[2]:7.1f} ms")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("min-max over runs (both = the later of the two edges; longpoll = commit on a -> answer on b):")
    for name, runs in summaries.items():
        cols = [
            f"{label} {min(r[i] for r in runs):.1f}-{max(r[i] for r in runs):.1f} ms"
            for i, label in enumerate(("p50", "p95", "max"))
        ]
        print(f"  {name:<8} " + "  ".join(cols))
    check = Checks()
    check(max(r[1] for r in summaries["both"]) <= 50, "p95 of a change served by both edges <= 50 ms")
    check(
        max(r[1] for r in summaries["longpoll"]) <= 50, "p95 of a long-poll on node b answering a commit on a <= 50 ms"
    )
    return check.verdict()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as error:
        print(f"setup failed: {error}", file=sys.stderr)
        sys.exit(2)
