"""`rhone deploy` benchmark: one run of examples/hello against a real `rhone local up` on loopback.

    .venv/bin/python bench/deploy.py [--stage-delay 1] [--python PATH]

It starts Rhone Local with `rhone local up` on ports it binds, in a temporary HOME, config dir and data dir,
copies examples/hello into the temporary directory and links it (`rhone init --link`). Then, each deploy being
`rhone --verbose --progress jsonl deploy --json` run as a fresh process:

1. first deploy: wall time of the whole command, the time spent in each pipeline stage (from the operation's stage
   `entered_at` timestamps, stamped by the server), the blobs and bytes uploaded, and the number of HTTP requests the
   CLI made while waiting (`debug: → GET …/operations/…` lines on stderr);
2. redeploy after changing one file (app.py's version): the same figures; exactly one blob must be uploaded;
3. an unchanged redeploy: zero blobs;
4. the server restarted with `RHONE_LOCAL_STAGE_DELAY` (default 1 s before every stage) and one more deploy: its
   wait takes several seconds, yet it must not make more requests than there were state changes — waiting is a
   long poll, not a timed loop, so the request count does not grow with wall time.

Each deploy is also fetched through the edge (`Host: dep-….localhost`) to check it answers as itself. Every request
goes to 127.0.0.1, every wait is bounded, and `rhone local down` runs in a finally block. A check that fails prints
FAIL and the script exits 1 (2 when the setup itself fails).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _harness import Rhone, SetupError, isolated_environment, linked_hello, local_up, parse_ts, rhone_script

STAGES = ("queued", "cloning", "building", "validating", "preview_ready")
DEPLOY_TIMEOUT = 120.0


@dataclass
class DeployRun:
    label: str
    wall: float
    deployment: dict[str, Any]
    operation: dict[str, Any]
    polls: int  # GET …/operations/… requests made while waiting
    changes: int  # state changes the CLI saw after the operation was created
    upload: dict[str, Any]
    edge_status: int
    edge_deployment: str | None

    @property
    def stage_seconds(self) -> dict[str, float]:
        """Seconds spent in each state before the next was entered (the terminal state has none)."""
        stages = self.operation["stages"]
        times = [parse_ts(s["entered_at"]) for s in stages]
        return {stages[i]["state"]: times[i + 1] - times[i] for i in range(len(stages) - 1)}


def deploy(rhone: Rhone, app_dir: Path, label: str, token: str, api_url: str, edge_port: int) -> DeployRun:
    import httpx

    started = time.perf_counter()
    proc = subprocess.run(
        [str(rhone.exe), "--verbose", "--progress", "jsonl", "deploy", "--json"],
        env=rhone.env,
        cwd=app_dir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEPLOY_TIMEOUT,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SetupError(f"{label}: `rhone deploy` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    deployment = json.loads(proc.stdout)
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    uploads = [e for e in events if e["type"] == "upload"]
    if len(uploads) != 1:
        raise SetupError(f"{label}: expected one upload event, got {uploads}")
    polls = sum(1 for line in proc.stderr.splitlines() if "→ GET" in line and "/operations/" in line)
    changes = sum(1 for e in events if e["type"] == "op_state") - 1  # the first announces the new operation
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        operation = client.get(f"{api_url}/v1/operations/{deployment['operation_id']}").json()
        host = urlsplit(deployment["url"]).netloc
        answer = client.get(f"http://127.0.0.1:{edge_port}/", headers={"Host": host})
    edge_deployment = answer.json().get("deployment") if answer.status_code == 200 else None
    return DeployRun(
        label, wall, deployment, operation, polls, changes, uploads[0], answer.status_code, edge_deployment
    )


def report(runs: list[DeployRun], stage_delay: float) -> int:
    failed: list[str] = []

    def check(ok: bool, name: str) -> str:
        if not ok:
            failed.append(name)
        return "ok" if ok else "FAIL"

    print()
    header = (
        f"{'deploy':<34} {'wall s':>7} "
        + " ".join(f"{s + ' s':>12}" for s in STAGES[:-1])
        + f" {'blobs':>5} {'bytes':>7} {'polls':>5} {'changes':>7} {'edge':>5}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        seconds = run.stage_seconds
        print(
            f"{run.label:<34} {run.wall:>7.2f} "
            + " ".join(f"{seconds.get(s, float('nan')):>12.3f}" for s in STAGES[:-1])
            + f" {run.upload['blobs']:>5} {run.upload['bytes']:>7} {run.polls:>5} {run.changes:>7}"
            f" {run.edge_status:>5}"
        )
    print()
    first, changed, unchanged, slow = runs
    rows = [
        ("every deploy reached preview_ready", all(r.deployment["state"] == "preview_ready" for r in runs)),
        ("every deploy answers through the edge as itself", all(r.edge_deployment == r.deployment["id"] for r in runs)),
        ("stages recorded in order", all([s["state"] for s in r.operation["stages"]] == list(STAGES) for r in runs)),
        (f"first deploy uploads every file ({first.upload['blobs']} blobs)", first.upload["known"] == 0),
        (
            f"one changed file uploads exactly one blob ({changed.upload['blobs']}, {changed.upload['bytes']} bytes)",
            changed.upload["blobs"] == 1,
        ),
        (f"unchanged redeploy uploads nothing ({unchanged.upload['blobs']} blobs)", unchanged.upload["blobs"] == 0),
        (
            f"polls never exceed state changes (normal: {first.polls} for {first.changes}; "
            f"delay {stage_delay:g} s: {slow.polls} for {slow.changes})",
            all(r.polls <= r.changes for r in runs),
        ),
        (
            f"polls do not grow with wall time ({first.polls} in {first.wall:.2f} s vs {slow.polls} in "
            f"{slow.wall:.2f} s)",
            slow.polls <= len(STAGES) - 1,
        ),
    ]
    for label, ok in rows:
        print(f"  {check(ok, label):<4} {label}")
    print()
    print(f"failed: {', '.join(failed)}" if failed else "all checks passed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage-delay", type=float, default=1.0, help="seconds per stage for run 4 (default 1)")
    parser.add_argument("--python", default=sys.executable, help="the venv python (default: this interpreter)")
    options = parser.parse_args(argv)
    if not 0 < options.stage_delay <= 5:
        parser.error("--stage-delay must be in (0, 5]")
    try:
        exe = rhone_script(options.python)
    except SetupError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="rhone-bench-deploy-") as tmp:
        root = Path(tmp)
        env, work, data_dir = isolated_environment(root)
        rhone = Rhone(exe, env, work)
        runs: list[DeployRun] = []
        try:
            status = local_up(rhone)
            api_url, edge_port = status["api_url"], status["edge_port"]
            token = (data_dir / "owner.token").read_text().strip()
            app_dir = linked_hello(rhone, work)
            print(
                f"Rhone Local {status.get('version')} (pid {status.get('pid')}) at {api_url}, edge :{edge_port}; "
                f"python {sys.version.split()[0]}; {os.cpu_count()} CPUs; app: a copy of examples/hello",
                flush=True,
            )
            runs.append(deploy(rhone, app_dir, "1. first deploy", token, api_url, edge_port))
            source = app_dir / "app.py"
            source.write_text(source.read_text().replace('VERSION = "1.0.0"', 'VERSION = "1.0.1"'))
            runs.append(deploy(rhone, app_dir, "2. redeploy, app.py changed", token, api_url, edge_port))
            runs.append(deploy(rhone, app_dir, "3. redeploy, unchanged", token, api_url, edge_port))
            rhone("local", "down")
            status = local_up(rhone, env={"RHONE_LOCAL_STAGE_DELAY": str(options.stage_delay)})
            api_url, edge_port = status["api_url"], status["edge_port"]
            label = f"4. redeploy, stage delay {options.stage_delay:g} s"
            runs.append(deploy(rhone, app_dir, label, token, api_url, edge_port))
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
    return report(runs, options.stage_delay)


if __name__ == "__main__":
    raise SystemExit(main())
