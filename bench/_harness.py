"""What the benchmarks share: Rhone Local on ports it binds, an isolated environment for `rhone`, the runner, stats.

Each benchmark runs as a script (`python bench/NAME.py`), so this directory is on sys.path and `from _harness import …`
works without packaging.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


class SetupError(Exception):
    """The benchmark could not set itself up (not a measurement)."""


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def rhone_script(python: str) -> Path:
    """The `rhone` console script installed beside `python` (the venv being measured)."""
    exe = Path(python).parent / "rhone"
    if not exe.exists():
        raise SetupError(f"no rhone console script beside {python}")
    return exe


def isolated_environment(root: Path) -> tuple[dict[str, str], Path, Path]:
    """(environment, work dir, data dir) for a `rhone` that touches nothing of the user's: a temporary HOME and
    config dir, a keyring that always fails, Rhone Local's data under `root`."""
    home, work, data_dir = root / "home", root / "work", root / "data"
    home.mkdir()
    work.mkdir()
    env = {
        "HOME": str(home),
        "RHONE_CONFIG_DIR": str(home / ".config" / "rhone"),
        "RHONE_LOCAL_DATA_DIR": str(data_dir),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
    }
    return env, work, data_dir


@dataclass
class Rhone:
    """The `rhone` console script in an isolated environment."""

    exe: Path
    env: dict[str, str]
    cwd: Path

    def __call__(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(self.exe), *args],
            env={**self.env, **(env or {})},
            cwd=cwd or self.cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise SetupError(f"`rhone {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self(*args, "--json", **kw).stdout)


def local_up(rhone: Rhone, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`rhone local up --port 0 --edge-port 0 ARGS`: the server binds free ports itself and reports them. Its status
    document (`api_url`, `edge_port`, `pid`, …) with `port`, the API's port."""
    from urllib.parse import urlsplit

    status = rhone.json("local", "up", "--port", "0", "--edge-port", "0", *args, env=env)
    return {**status, "port": urlsplit(status["api_url"]).port}


# -- bounded load from a second process, and the checks a benchmark reports ---------------------------------------
WARMUP = 10


def threaded_load(
    port: int, threads: int, per_thread: int, request_once: Callable[[Any], tuple[str | None, str | None]]
) -> dict[str, Any]:
    """K threads, each on its own kept-alive connection to 127.0.0.1:`port`: WARMUP untimed requests, then
    `per_thread` timed ones, all threads released together. `request_once(conn)` makes one request and returns
    (what went wrong or None, a label of who answered or None). A JSON-able summary."""
    import http.client
    import threading
    import time

    latencies: list[float] = []
    errors: list[str] = []
    labels: set[str] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1, timeout=60)

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, failures, seen = [], [], set()
        for _ in range(WARMUP):
            request_once(conn)
        barrier.wait()
        for _ in range(per_thread):
            t0 = time.perf_counter()
            error, label = request_once(conn)
            mine.append((time.perf_counter() - t0) * 1000)
            if error:
                failures.append(error)
            elif label is not None:
                seen.add(label)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(failures)
            labels.update(seen)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join(300)
    elapsed = time.perf_counter() - started
    done = len(latencies)
    return {
        "requests": done,
        "seconds": elapsed,
        "rps": (done - len(errors)) / elapsed,
        "p50_ms": percentile(latencies, 50) if done else float("nan"),
        "p99_ms": percentile(latencies, 99) if done else float("nan"),
        "errors": len(errors) + threads * per_thread - done,  # a stuck thread counts too
        "first_errors": errors[:3],
        "answered_by": len(labels),
    }


class Checks:
    """The pass/fail lines a benchmark ends with; `verdict()` prints the summary and returns the exit status."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, ok: bool, name: str) -> None:
        if not ok:
            self.failed.append(name)
        print(f"  {'ok' if ok else 'FAIL':<4} {name}")

    def verdict(self) -> int:
        print()
        print(f"failed: {', '.join(self.failed)}" if self.failed else "all checks passed")
        return 1 if self.failed else 0


HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"


def linked_hello(rhone: Rhone, work: Path) -> Path:
    """A copy of examples/hello under `work` (without any link or cache of the checkout's), linked to the server
    `rhone` talks to; its directory."""
    import shutil

    app_dir = work / "hello"
    shutil.copytree(HELLO, app_dir, ignore=shutil.ignore_patterns(".rhone", "__pycache__"))
    rhone("init", "--link", "--json", cwd=app_dir)
    return app_dir


def production_port(data_dir: Path, deployment_id: str) -> int:
    """The deployment's ready production allocation's port (read from the control database, read-only)."""
    import sqlite3

    with sqlite3.connect(f"file:{data_dir / 'rhone.db'}?mode=ro", uri=True, timeout=10) as db:
        rows = db.execute(
            "SELECT a.port FROM allocations a JOIN environments e ON e.id = a.environment_id "
            "WHERE a.deployment_id = ? AND e.name = 'production' AND a.state = 'ready'",
            (deployment_id,),
        ).fetchall()
    if len(rows) != 1:
        raise SetupError(f"{deployment_id} has {len(rows)} ready production allocations, not 1")
    return rows[0][0]


def time_process(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> tuple[float, int]:
    """(wall seconds, exit status) of one process, output discarded. It is waited for by a blocking waitpid:
    `subprocess.run(..., timeout=...)` without pipes polls with sleeps that grow to 50 ms, so what it times comes out
    in steps of up to 50 ms (64, 114, 164 ms, ...). Killed past `timeout`, which then shows in the status."""
    import threading
    import time

    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        status = proc.wait()
    except BaseException:  # interrupted: the process must not outlive the benchmark
        proc.kill()
        proc.wait()
        raise
    finally:
        killer.cancel()
    return time.perf_counter() - started, status
