"""Start-up benchmark: medians of whole-process runs, as a ratio to `python -c "import typer"` measured in the same run.

    .venv/bin/python bench/startup.py [--runs N]

Every case is a fresh process (that is what a user waits for). The cases run round-robin, one run of each per round,
so that machine noise (other jobs, CPU frequency, caches) hits all of them alike; one untimed warm-up round first
checks that every command works and lets Python write bytecode caches. A target over budget prints OVER but still
exits 0: this is a measurement, not a test (tests/test_startup_imports.py is the test).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _harness import time_process

VALID_TOML = """\
[project]
name = "hello"

[app]
name = "web"

[process]
start = "python app.py"
"""


@dataclass
class Case:
    name: str
    argv: list[str]
    target: float | None = None  # maximum ratio to the baseline
    environ: dict[str, str] = field(default_factory=dict)
    expect_stdout: str = ""  # the warm-up run's stdout must contain this
    samples: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000

    def round_ratios(self, baseline: Case) -> list[float]:
        """This case's time over the baseline's in the same round (paired, so machine noise hits both alike)."""
        return [mine / theirs for mine, theirs in zip(self.samples, baseline.samples, strict=True)]


def run_once(case: Case, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """One untimed run, its output captured (a warm-up must do what the timed runs do)."""
    return subprocess.run(
        case.argv,
        env={**env, **case.environ},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each case (default 15)")
    parser.add_argument("--python", default=sys.executable, help="the venv python (default: this interpreter)")
    options = parser.parse_args(argv)
    if options.runs < 1:
        parser.error("--runs must be at least 1")

    python = Path(options.python)
    rhone = python.parent / "rhone"
    if not rhone.exists():
        print(f"bench: no rhone console script beside {python} (install rhone into that venv)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="rhone-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "home").mkdir()
        (workdir / "rhone.toml").write_text(VALID_TOML)
        # A clean, fixed environment: a temporary HOME (no profiles or credentials), a keyring that fails instead of
        # probing D-Bus, and deliberately no PYTHONDONTWRITEBYTECODE, so rhone's own modules get .pyc files in the
        # warm-up round (without them start-up roughly doubles and the numbers mean nothing).
        env = {
            "HOME": str(workdir / "home"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        }
        baseline = Case("python -c 'import typer'", [str(python), "-c", "import typer"])
        cases = [
            baseline,
            Case("rhone --version", [str(rhone), "--version"], 1.3, expect_stdout="rhone "),
            Case("rhone --help", [str(rhone), "--help"], 2.0, expect_stdout="Usage: rhone"),
            Case(
                "rhone de<TAB> (bash)",
                [str(rhone)],
                2.0,
                {"_RHONE_COMPLETE": "complete_bash", "COMP_WORDS": "rhone\nde", "COMP_CWORD": "1"},
                expect_stdout="deploy",
            ),
            Case("rhone config validate", [str(rhone), "config", "validate"], 2.0, expect_stdout="valid"),
        ]
        gh = shutil.which("gh")
        if gh:
            cases.append(Case("gh --version (reference)", [gh, "--version"], expect_stdout="gh version"))

        for case in cases:  # warm-up round: untimed, and every command must do what it is measured doing
            proc = run_once(case, env, workdir)
            if proc.returncode != 0 or case.expect_stdout not in proc.stdout:
                detail = f"{proc.stdout}{proc.stderr}"
                print(f"bench: `{case.name}` failed (exit {proc.returncode}):\n{detail}", file=sys.stderr)
                return 2

        for _ in range(options.runs):
            for case in cases:
                elapsed, status = time_process(case.argv, env={**env, **case.environ}, cwd=workdir, timeout=60)
                if status != 0:  # a failed or killed run is no sample
                    print(f"bench: `{case.name}` failed in a timed run (exit {status})", file=sys.stderr)
                    return 2
                case.samples.append(elapsed)

    base = baseline.median_ms
    version = sys.version.split()[0]
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"rhone start-up: {options.runs} runs of each command, interleaved; ratios of medians, and min–max of the "
        f"ratios paired per round; python {version}; load average {load} at end"
    )
    print()
    print(
        f"{'command':<28} {'median ms':>9} {'min ms':>7} {'× typer':>8} {'rounds min–max':>15}  {'target':>6}  result"
    )
    print(f"{'-' * 28} {'-' * 9} {'-' * 7} {'-' * 8} {'-' * 15}  {'-' * 6}  ------")
    over = []
    for case in cases:
        ratio = case.median_ms / base
        if case is baseline:
            target, verdict = "", "(baseline)"
        elif case.target is None:
            target, verdict = "", ""
        else:
            target = f"≤{case.target:g}×"
            verdict = "PASS" if ratio <= case.target else "OVER"
            if verdict == "OVER":
                over.append(case.name)
        ratios = case.round_ratios(baseline)
        spread = f"{min(ratios):.2f}–{max(ratios):.2f}×"
        line = (
            f"{case.name:<28} {case.median_ms:>9.1f} {min(case.samples) * 1000:>7.1f} {ratio:>7.2f}× {spread:>15}  "
            f"{target:>6}"
        )
        print(f"{line}  {verdict}".rstrip())
    if not gh:
        print("(gh is not on PATH: no `gh --version` reference)")
    print()
    print(f"over target: {', '.join(over)}" if over else "all targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
