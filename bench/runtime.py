"""Runtime benchmark: promotions that do not wait for drains, and healing against a cold deploy, on a real
`rhone local up` on loopback.

    .venv/bin/python bench/runtime.py [--rounds R] [--connections N] [--python PATH]

It starts Rhone Local with `rhone local up` on ports it binds in a temporary HOME, config dir and data dir,
copies examples/hello with one more route (`/hold`, a chunked answer that lasts up to a minute), deploys and promotes
it, then:

a. Promotion with N open connections on the previous owner vs with none, R rounds interleaved: each round deploys the
   next version (not timed), opens N `/hold` streams through the edge to the current owner (or none), and promotes
   (`rhone promote`). Request → healthy is read from the operation's stage `entered_at` timestamps (stamped by the
   server). The figure is the median with N open as a ratio of the median with none (target ≤ 1.2×): the route moves
   and the command returns while the previous owner still holds its streams. Every stream must end complete (the
   drain kept them) — a cut stream fails the check.
b. Healing vs a cold deploy, R rounds: kill -9 of the only production instance → the first 200 from the edge again
   (polled every 10 ms, no command run), as a ratio of `rhone deploy` of the same app, end to end (target ≤ 1.0×).

Every request goes to 127.0.0.1; counts and waits are bounded; `rhone local down` runs in a finally block. A check that
fails prints FAIL and the script exits 1 (2 when the setup itself fails). Run it on a quiet machine: the figures are
ratios measured in one run, but the apps, the edge and the clients share the same cores.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _harness import Checks, Rhone, SetupError, isolated_environment, linked_hello, local_up, parse_ts, rhone_script

ROUTE_HOST = "hello--production.localhost"
HOLD_ROUTE = """
        elif self.path == "/hold":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(120):
                self.wfile.write(b"2\\r\\n.\\n\\r\\n")
                self.wfile.flush()
                time.sleep(0.5)
                if os.path.exists(os.environ["HOLD_RELEASE"]):
                    break
            self.wfile.write(b"0\\r\\n\\r\\n")
"""


def prepare(app_dir: Path, release: Path) -> None:
    source = app_dir / "app.py"
    text = source.read_text().replace("import os\n", "import os\nimport time\n", 1)
    fallback = "        else:\n            self._send(404"
    text = text.replace(fallback, HOLD_ROUTE + fallback, 1)
    # The release flag's path reaches the app through its source (an app receives no variables of ours).
    text = text.replace('os.environ["HOLD_RELEASE"]', repr(str(release)))
    source.write_text(text)
    toml = app_dir / "rhone.toml"
    toml.write_text(toml.read_text().replace("readiness_timeout = 30", "readiness_timeout = 30\ndrain_timeout = 120"))


def set_version(app_dir: Path, version: str) -> None:
    source = app_dir / "app.py"
    lines = [f'VERSION = "{version}"' if s.startswith("VERSION = ") else s for s in source.read_text().split("\n")]
    source.write_text("\n".join(lines))


def hold(edge_port: int, count: int, release: Path) -> tuple[list[threading.Thread], list[str]]:
    """`count` streams through the edge, each read to its end; returns the threads and their outcomes."""
    outcomes: list[str] = []
    opened = threading.Semaphore(0)

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", edge_port, timeout=90)
        try:
            conn.request("GET", "/hold", headers={"Host": ROUTE_HOST})
            response = conn.getresponse()
            response.read(2)  # the first chunk: the stream is open on the app
            opened.release()
            response.read()
            outcomes.append("complete" if response.status == 200 else f"status {response.status}")
        except (OSError, http.client.HTTPException) as error:
            opened.release()
            outcomes.append(f"cut: {type(error).__name__}")
        finally:
            conn.close()

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for _ in range(count):
        opened.acquire(timeout=30)
    return threads, outcomes


def promote_seconds(rhone: Rhone, app_dir: Path, deployment_id: str) -> float:
    op = rhone.json("promote", deployment_id, "--env", "production", cwd=app_dir)
    stages = rhone.json("op", "show", op["operation_id"], cwd=app_dir)["stages"]
    return parse_ts(stages[-1]["entered_at"]) - parse_ts(stages[0]["entered_at"])


def answering(edge_port: int) -> str | None:
    """The allocation that answered `GET /` through the edge with a 200, or None."""
    import json

    conn = http.client.HTTPConnection("127.0.0.1", edge_port, timeout=2)
    try:
        conn.request("GET", "/", headers={"Host": ROUTE_HOST})
        response = conn.getresponse()
        body = response.read()
        return json.loads(body)["allocation"] if response.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def owner_pid(data_dir: Path) -> int:
    with sqlite3.connect(f"file:{data_dir / 'rhone.db'}?mode=ro", uri=True) as db:
        row = db.execute(
            "SELECT a.pid FROM allocations a JOIN route_owners o ON o.deployment_id = a.deployment_id "
            "AND o.environment_id = a.environment_id WHERE a.state = 'ready'"
        ).fetchone()
    if row is None:
        raise SetupError("no ready production allocation")
    return row[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rhone-bench-runtime-") as tmp:
        env, work, data_dir = isolated_environment(Path(tmp))
        rhone = Rhone(rhone_script(args.python), env, work)
        try:
            edge_port = local_up(rhone)["edge_port"]
            app_dir = linked_hello(rhone, work)
            release = Path(tmp) / "release"
            prepare(app_dir, release)
            rhone.json("deploy", "--promote", cwd=app_dir)
            with_open, without = [], []
            outcomes: list[str] = []
            version = 1
            for _ in range(args.rounds):
                for count, into in ((args.connections, with_open), (0, without)):
                    version += 1
                    set_version(app_dir, f"{version}.0.0")
                    deployment = rhone.json("deploy", cwd=app_dir)
                    release.unlink(missing_ok=True)
                    threads, ends = hold(edge_port, count, release) if count else ([], [])
                    into.append(promote_seconds(rhone, app_dir, deployment["id"]))
                    release.write_text("")
                    for thread in threads:
                        thread.join(90)
                    outcomes += ends
            heal, cold = [], []
            for _ in range(args.rounds):
                victim = answering(edge_port)
                pid = owner_pid(data_dir)
                started = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                deadline = started + 60
                while answering(edge_port) in (None, victim) and time.perf_counter() < deadline:
                    time.sleep(0.01)
                heal.append(time.perf_counter() - started)
                version += 1
                set_version(app_dir, f"{version}.0.0")
                started = time.perf_counter()
                rhone.json("deploy", cwd=app_dir)
                cold.append(time.perf_counter() - started)
        finally:
            rhone("local", "down", "--json", check=False)
    check = Checks()
    a = statistics.median(with_open) / statistics.median(without)
    b = statistics.median(heal) / statistics.median(cold)
    print(f"a. promotion request → healthy, median of {args.rounds}: {statistics.median(with_open):.3f} s with "
          f"{args.connections} open connections on the previous owner, {statistics.median(without):.3f} s with none "
          f"→ {a:.2f}×")  # fmt: skip
    print(f"b. kill -9 of the only instance → 200 again, median {statistics.median(heal):.3f} s; a cold `rhone deploy` "
          f"{statistics.median(cold):.3f} s → {b:.2f}×")  # fmt: skip
    check(a <= 1.2, "a. promotion with open connections ≤ 1.2× without")
    held = args.rounds * args.connections
    complete = outcomes.count("complete")
    check(complete == held == len(outcomes), f"a. every held stream completed ({complete} of {held})")
    check(b <= 1.0, "b. healing ≤ 1.0× a cold deploy")
    return check.verdict()


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except SetupError as error:
        print(f"setup failed: {error}", file=sys.stderr)
        raise SystemExit(2) from None
