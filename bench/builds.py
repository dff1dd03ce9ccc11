"""Sealed builds benchmark: build reuse, the build cache, and the sandbox's overhead, as ratios from one run.

    .venv/bin/python bench/builds.py [--python PATH] [--rounds 5] [--requests 500]

1. Redeploys of a small pip app (Flask in a virtualenv) against a real `rhone local up` in a temporary HOME and data
   dir: the first deploy (downloads everything), an unchanged redeploy (the artifact is reused: no build), and a
   redeploy after a one-line change of app.py (a build that finds its wheels in the app's build cache). Figures are
   the wall time of `rhone deploy --json` as a fresh process; targets: unchanged ≤ 0.2× and one-line change ≤ 0.5×
   of the first. The build keeps its virtualenv in the app's build cache, keyed by requirements.txt's digest
   (README, "Caches"): pip's own HTTP cache is only as good as the index's cache headers, and creating a venv
   (ensurepip) alone takes seconds.
2. The sandbox's overhead on an app (examples/hello, standard library): time from spawning it to the first 200 of
   `/healthz`, and the median latency of sequential requests on a kept-alive connection, with and without the
   sandbox (`rhone_local.sandbox`), in interleaved rounds; targets ≤ 1.1× for both.

Needs bubblewrap, and PyPI for part 1 (skipped, saying so, when it cannot be reached). Every process it starts is
stopped in a finally block; a failed check prints FAIL and exits 1 (2 when the setup fails).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _harness import HELLO, Checks, Rhone, SetupError, isolated_environment, local_up, rhone_script

FLASK_APP = """\
import os
from flask import Flask

app = Flask(__name__)
VERSION = "1"


@app.get("/healthz")
def health():
    return "ok"


@app.get("/")
def index():
    return {"version": VERSION}


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]))
"""
# The dependency layer kept in the build cache, keyed by the requirements' digest (README, "Caches"): builds and
# allocations both run at /app, so a virtualenv copied back from the cache is exactly the one `pip` made.
BUILD = (
    'layer="$XDG_CACHE_HOME/venvs/$(sha256sum requirements.txt | cut -c1-16)"; '
    'if [ -d "$layer" ]; then cp -a "$layer" .venv; else python3 -m venv .venv && '
    '.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt && mkdir -p "$layer" && '
    'cp -a .venv/. "$layer"; fi'
)


def flask_app(work: Path) -> Path:
    app_dir = work / "flasky"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(FLASK_APP)
    (app_dir / "requirements.txt").write_text("flask\n")
    (app_dir / "rhone.toml").write_text(
        '[project]\nname = "flasky"\n\n[app]\nname = "flasky"\n\n'
        f"[build]\ncommand = '{BUILD}'\ntimeout = 600\n\n"
        '[process]\nstart = ".venv/bin/python app.py"\nhealth_path = "/healthz"\nreadiness_timeout = 60\n'
    )
    return app_dir


def timed_deploy(rhone: Rhone, app_dir: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    document = rhone.json("deploy", cwd=app_dir, timeout=900)
    return time.perf_counter() - started, document


def redeploys(python: str, checks: Checks) -> None:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        print("part 1 skipped: PyPI cannot be reached from here")
        return
    with tempfile.TemporaryDirectory(prefix="rhone-bench-builds-") as tmp:
        env, work, _data_dir = isolated_environment(Path(tmp))
        rhone = Rhone(rhone_script(python), env, work)
        local_up(rhone, "--sandbox", "bubblewrap")
        try:
            app_dir = flask_app(work)
            first, deployed = timed_deploy(rhone, app_dir)
            unchanged, same = timed_deploy(rhone, app_dir)
            (app_dir / "app.py").write_text(FLASK_APP.replace('VERSION = "1"', 'VERSION = "2"'))
            changed, rebuilt = timed_deploy(rhone, app_dir)
        finally:
            rhone("local", "down", check=False)
    print(f"first deploy          {first:7.2f} s   (artifact {deployed['artifact_digest'][:19]}…)")
    print(f"unchanged redeploy    {unchanged:7.2f} s   {unchanged / first:.2f}x  (target <= 0.2x)")
    print(f"one-line change       {changed:7.2f} s   {changed / first:.2f}x  (target <= 0.5x)")
    checks(same["artifact_digest"] == deployed["artifact_digest"], "an unchanged source reuses the artifact")
    checks(rebuilt["artifact_digest"] != deployed["artifact_digest"], "a changed source is a new artifact")
    checks(unchanged / first <= 0.2, "unchanged redeploy <= 0.2x the first deploy")
    checks(changed / first <= 0.5, "one-line change <= 0.5x the first deploy")


# -- the sandbox's overhead on an app ------------------------------------------------------------------------------
def start_and_measure(sandbox, tree: Path, requests: int) -> tuple[float, float]:
    """(seconds from spawn to the first 200 of /healthz, median seconds of one request on a kept-alive connection)."""
    from rhone_local.allocation_ports import PortReservations
    from rhone_local.sandbox import base_environment

    probe = PortReservations().hold()  # the port the app is told to listen on, held until the spawn (as the runner)
    port = probe.getsockname()[1]
    home = tree.parent / "home"
    home.mkdir(exist_ok=True)
    env = {**base_environment(sandbox, tree, home=home), "PORT": str(port)}
    with open(tree.parent / "app.log", "ab") as log:
        started = time.perf_counter()
        probe.close()
        child, leader = sandbox.spawn("python3 app.py", root=tree, env=env, log=log)
    try:
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    ready = time.perf_counter() - started
                    break
            except OSError:
                if child.poll() is not None or time.perf_counter() - started > 30:
                    raise SetupError("the app did not start") from None
                time.sleep(0.002)
        latencies = []
        for _ in range(requests):
            begin = time.perf_counter()
            conn.request("GET", "/")
            conn.getresponse().read()
            latencies.append(time.perf_counter() - begin)
        conn.close()
        return ready, statistics.median(latencies)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, signal.SIGKILL)
        child.wait(timeout=10)


def overhead(rounds: int, requests: int, checks: Checks) -> None:
    from rhone_local.sandbox import Sandbox, detect

    with tempfile.TemporaryDirectory(prefix="rhone-bench-sandbox-") as tmp:
        sealed = detect("bubblewrap", state_dir=Path(tmp) / "state")
        unsealed = Sandbox("none", reason="benchmark baseline")
        starts: dict[str, list[float]] = {"none": [], "bubblewrap": []}
        latency: dict[str, list[float]] = {"none": [], "bubblewrap": []}
        for index in range(rounds):
            for sandbox in (unsealed, sealed) if index % 2 == 0 else (sealed, unsealed):
                root = Path(tmp) / f"{sandbox.mode}-{index}"
                shutil.copytree(HELLO, root / "app", ignore=shutil.ignore_patterns(".rhone", "__pycache__"))
                ready, median = start_and_measure(sandbox, root / "app", requests)
                starts[sandbox.mode].append(ready)
                latency[sandbox.mode].append(median)
    start_ratio = statistics.median(starts["bubblewrap"]) / statistics.median(starts["none"])
    latency_ratio = statistics.median(latency["bubblewrap"]) / statistics.median(latency["none"])
    print(
        f"app start             {statistics.median(starts['none']) * 1000:6.1f} ms unsealed, "
        f"{statistics.median(starts['bubblewrap']) * 1000:6.1f} ms sealed: {start_ratio:.2f}x (target <= 1.1x)"
    )
    print(
        f"request latency       {statistics.median(latency['none']) * 1e6:6.0f} us unsealed, "
        f"{statistics.median(latency['bubblewrap']) * 1e6:6.0f} us sealed: {latency_ratio:.2f}x (target <= 1.1x)"
    )
    checks(start_ratio <= 1.1, "sandboxed app start <= 1.1x unsealed")
    checks(latency_ratio <= 1.1, "sandboxed request latency <= 1.1x unsealed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the venv whose rhone is measured")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the overhead measurement")
    parser.add_argument("--requests", type=int, default=500, help="requests per round")
    parser.add_argument("--skip-deploys", action="store_true", help="only measure the sandbox's overhead")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    checks = Checks()
    try:
        if not args.skip_deploys:
            redeploys(args.python, checks)
        overhead(args.rounds, args.requests, checks)
    except (SetupError, ValueError) as error:
        print(f"setup failed: {error}", file=sys.stderr)
        return 2
    return checks.verdict()


if __name__ == "__main__":
    raise SystemExit(main())
