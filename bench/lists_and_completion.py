"""Lists and completion at scale: `rhone deploy ls --json` with 1,000 deployments against the same command with 20,
and a TAB on a deployment id with the API up and down, as ratios to `python -c "import typer"` measured in the same
run.

    .venv/bin/python bench/lists_and_completion.py [--runs N] [--deployments N]

It starts Rhone Local (`rhone local up`, ports it binds, temporary HOME and data dir), creates a project with two
apps, restarts it with `RHONE_LOCAL_STAGE_DELAY` so large that no deployment is ever built (the figures are about
listing, not building), and creates 20 deployments of one app and N (default 1,000) of the other through the API.
Then, in interleaved rounds after an untimed warm-up round:

- `rhone deploy ls --json` of the app with 20 and of the app with N (target: N ≤ 1.3× the 20);
- a TAB on `rhone deploy show ` (fish protocol) with the API up, the completion cache emptied before every run so each
  TAB asks the API (target ≤ 2.5× import typer), and with the cache kept (what a burst of TABs costs);
- the same TAB with the API down (a loopback port that refuses), cache emptied every run (target ≤ 2×).

Figures over target print OVER and the script exits 1 (2 when the setup fails). Run it on a quiet machine: the
ratios are only meaningful when nothing else competes for the cores (`uptime` load below 1).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import Checks, Rhone, SetupError, isolated_environment, local_up, rhone_script

LS_RATIO_TARGET = 1.3
COMPLETION_UP_TARGET = 2.5
COMPLETION_DOWN_TARGET = 2.0
RHONE_TOML = '[project]\nname = "bench"\nworkspace = "local"\n\n[app]\nname = "many"\n\n[process]\nstart = "x"\n'


def create_deployments(api_url: str, token: str, app: str, count: int) -> None:
    import httpx

    content = b"print('bench')\n"
    digest = hashlib.sha256(content).hexdigest()
    manifest = {"version": 1, "files": [{"path": "app.py", "size": len(content), "mode": "644", "sha256": digest}]}
    canonical = __import__("json").dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    body = {
        "environment": "preview",
        "manifest": manifest,
        "manifest_digest": "sha256:" + hashlib.sha256(canonical).hexdigest(),
        "config": {"build": {}, "process": {"start": "python app.py"}},
    }
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=60) as client:
        client.put(f"/v1/blobs/sha256:{digest}", content=content).raise_for_status()
        for _ in range(count):
            client.post(f"/v1/workspaces/local/projects/bench/apps/{app}/deployments", json=body).raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--deployments", type=int, default=1000)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"load average {load:.2f}" + ("  (NOT QUIET: ratios unreliable)" if load >= 1 else ""))
    rhone = Rhone(rhone_script(sys.executable), {}, Path("."))
    with tempfile.TemporaryDirectory(prefix="rhone-bench-lists-") as tmp:
        env, work, data_dir = isolated_environment(Path(tmp))
        rhone.env, rhone.cwd = env, work
        try:
            local_up(rhone)
            rhone("project", "create", "bench")
            for app in ("few", "many"):
                rhone("app", "create", app, "-p", "bench")
            rhone("local", "down")
            api_url = local_up(rhone, env={"RHONE_LOCAL_STAGE_DELAY": "86400"})["api_url"]
            token = (data_dir / "owner.token").read_text().strip()
            started = time.monotonic()
            create_deployments(api_url, token, "few", 20)
            create_deployments(api_url, token, "many", args.deployments)
            print(f"created 20 + {args.deployments} deployments in {time.monotonic() - started:.1f} s")
            (work / "rhone.toml").write_text(RHONE_TOML)
            return measure(rhone, work, args.runs, args.deployments)
        except SetupError as error:
            print(f"setup failed: {error}", file=sys.stderr)
            return 2
        finally:
            rhone("local", "down", check=False, timeout=60)


def measure(rhone: Rhone, work: Path, runs: int, deployments: int) -> int:
    cache = work / "cache"
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused while the bench runs
    tab = {
        "_RHONE_COMPLETE": "complete_fish",
        "_TYPER_COMPLETE_FISH_ACTION": "get-args",
        "_TYPER_COMPLETE_ARGS": "rhone deploy show ",
        "RHONE_CACHE_DIR": str(cache),
    }
    cases = {
        "import typer": ([sys.executable, "-c", "import typer"], {}, False),
        "deploy ls (20)": ([str(rhone.exe), "deploy", "ls", "--json", "-a", "few"], {}, False),
        f"deploy ls ({deployments})": ([str(rhone.exe), "deploy", "ls", "--json", "-a", "many"], {}, False),
        "TAB, API up": ([str(rhone.exe)], tab, True),
        "TAB, API up, cached": ([str(rhone.exe)], tab, False),
        "TAB, API down": (
            [str(rhone.exe)],
            {
                **tab,
                "RHONE_API_URL": f"http://127.0.0.1:{refusing.getsockname()[1]}",
                "RHONE_CACHE_DIR": str(cache) + "-down",
            },
            True,
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    outputs: dict[str, str] = {}
    try:
        for round_number in range(runs + 1):
            for name, (argv, extra, cold) in cases.items():
                if cold:
                    for directory in (cache, Path(str(cache) + "-down")):
                        (directory / "completion.json").unlink(missing_ok=True)
                t0 = time.perf_counter()
                proc = subprocess.run(
                    argv, env={**rhone.env, **extra}, cwd=work, capture_output=True, text=True, timeout=120
                )
                elapsed = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise SetupError(f"{name} exited {proc.returncode}: {proc.stderr[-500:]}")
                if round_number == 0:
                    outputs[name] = proc.stdout
                else:
                    samples[name].append(elapsed)
    finally:
        refusing.close()
    median = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    base = median["import typer"]
    print(f'\nmedians of {runs} interleaved runs (ms), ratio to `python -c "import typer"` ({base:.0f} ms):')
    for name, ms in median.items():
        print(f"  {name:<28} {ms:7.1f} ms  {ms / base:5.2f}x")
    checks = Checks()
    offered = outputs["TAB, API up"].splitlines()
    checks(len(offered) == 30 and offered[0].startswith("dep_"), "a TAB offers the 30 newest deployment ids")
    checks(outputs["TAB, API down"] == "", "with the API down a TAB offers nothing")
    ls_ratio = median[f"deploy ls ({deployments})"] / median["deploy ls (20)"]
    checks(
        ls_ratio <= LS_RATIO_TARGET,
        f"deploy ls at {deployments} is {ls_ratio:.2f}x at 20 (target ≤ {LS_RATIO_TARGET}x)",
    )
    up, down = median["TAB, API up"] / base, median["TAB, API down"] / base
    checks(up <= COMPLETION_UP_TARGET, f"TAB with the API up {up:.2f}x import typer (target ≤ {COMPLETION_UP_TARGET}x)")
    checks(down <= COMPLETION_DOWN_TARGET, f"TAB with the API down {down:.2f}x (target ≤ {COMPLETION_DOWN_TARGET}x)")
    return checks.verdict()


if __name__ == "__main__":
    sys.exit(main())
