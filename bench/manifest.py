"""Manifest benchmark: `rhone artifact manifest` as a whole process against `find` and `sha256sum` on the same tree.

    .venv/bin/python bench/manifest.py [--runs N] [--files 5000,50000] [--python PYTHON] [--installed]

For each size it generates a deterministic tree of small files (100 to 8,000 bytes, like a source tree: a few
directory levels, some executables) in a temporary directory, then runs every case as its own process, in
interleaved rounds (one run of each case per round, so machine noise hits all alike), after one untimed warm-up
round (the page cache holds the tree; Python's bytecode caches are written):

- find: `find ROOT -printf '%s %T@\\n'`, a stat walk that prints each file's size and mtime (the anchor of the warm
  rerun: what any stat cache must at least do);
- sha256sum: `find ROOT -type f -print0 | xargs -0 sha256sum` (the anchor of a cold run: every file read and
  hashed by C programs);
- warm: `rhone -C ROOT artifact manifest` with the stat cache on the unchanged tree (every mtime is an hour old, so
  no entry is "racy"), once with the human output and once with `--json` (the whole document, 50,000 entries at
  50k files, written compactly because stdout is not a terminal);
- cold: `rhone -C ROOT artifact manifest --no-cache --json`, every file read and hashed;
- start-up: `rhone -C EMPTY artifact manifest` in an empty directory, the fixed cost of the command (Python, the
  command line, the imports) that no per-file work can remove.

`rhone` is what a user runs: a wheel built from this checkout (`uv build`) and installed with its dependencies into
a scratch virtualenv (`uv venv` + `uv pip install`, from uv's cache when it can, as `uv tool install` does), so none
of a development install's start-up (an editable install's path hook, setuptools' `distutils-precedence.pth` in a
`python -m venv`) is measured; `--installed` measures the `rhone` console script beside --python instead.

Times are wall-clock seconds of each process (started in an isolated HOME), and its CPU time (user + system, from
the kernel's accounting of waited-for children), which barely moves when other work loads the machine. Ratios are
paired per round (warm ÷ find in the same round; sha256sum ÷ cold, i.e. cold's throughput over sha256sum's) and
shown as min–max over the rounds, with the median. Targets (judged on the median): warm ≤ 3× find, on wall time and
on CPU time (the figure to read on a shared machine); cold ≥ 1.0× sha256sum's throughput (at 50k files). A missed
target prints OVER; the script still exits 0 (this is a measurement: tests/test_manifest.py and
tests/test_manifest_equivalence.py are the tests). Run it on a quiet machine: the load average is printed before
and after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import SetupError, isolated_environment, rhone_script

WARM_TARGET = 3.0  # warm rerun ≤ 3 × the find stat walk
COLD_TARGET = 1.0  # cold throughput ≥ 1.0 × sha256sum's


def generate(root: Path, files: int, seed: int = 20240601) -> int:
    """A deterministic tree of `files` small files; their total size."""
    rng = random.Random(seed)
    total = 0
    an_hour_ago = time.time() - 3600
    for index in range(files):
        directory = root / f"pkg{index % 23}" / f"mod{index % 7}" / ("deep" if index % 3 == 0 else "")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"file{index:05d}.{('py', 'js', 'css', 'png', 'txt')[index % 5]}"
        size = rng.randint(100, 8_000)
        path.write_bytes(rng.randbytes(size))
        if index % 41 == 0:
            path.chmod(0o755)
        os.utime(path, (an_hour_ago, an_hour_ago))
        total += size
    return total


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds) of one process and the processes it waited for (stdout discarded); raises
    SetupError when it fails. The CPU time (user + system, from the kernel's accounting of waited-for children)
    barely moves when other work loads the machine, so it still compares versions when wall time cannot."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SetupError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def wheel_install(python: str, base: Path) -> Path:
    """The `rhone` console script of a wheel of this checkout installed (with its dependencies) into a fresh venv
    under `base`: what `pip install rhone` or `uv tool install rhone` gives a user."""
    uv = Path(python).parent / "uv"
    uv_command = str(uv) if uv.exists() else shutil.which("uv")
    if uv_command is None:
        raise SetupError("uv is needed to build and install the wheel (or pass --installed)")
    checkout, wheels, venv = Path(__file__).resolve().parent.parent, base / "wheel", base / "venv"
    steps = [
        [uv_command, "build", "--wheel", "-q", "-o", str(wheels), str(checkout)],
        [uv_command, "venv", "-q", "--python", python, str(venv)],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SetupError(f"{' '.join(step)} failed: {proc.stderr[-500:]}")
    install = [uv_command, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "--compile-bytecode"]
    wheel = [str(path) for path in wheels.glob("rhone-*.whl")]
    for offline in (["--offline"], []):  # from uv's cache when it holds every dependency
        proc = subprocess.run([*install, *offline, *wheel], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return rhone_script(str(venv / "bin" / "python"))
    raise SetupError(f"installing {wheel} failed: {proc.stderr[-500:]}")


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def spread(values: list[float], unit: str = "×", digits: int = 2) -> str:
    """min–max (median)."""
    return (
        f"{min(values):.{digits}f}–{max(values):.{digits}f}{unit} (median {statistics.median(values):.{digits}f}{unit})"
    )


def measure_tree(files: int, runs: int, rhone: Path, base: Path) -> dict:
    """Every case on a tree of `files` files; the samples and the checks."""
    root, empty = base / f"tree{files}", base / f"empty{files}"
    empty.mkdir()
    started = time.perf_counter()
    total = generate(root, files)
    generated_in = time.perf_counter() - started
    (base / f"env{files}").mkdir()
    env, _work, _data = isolated_environment(base / f"env{files}")
    find_stat = ["find", str(root), "-printf", "%s %T@\\n"]
    # The stat cache lives in ROOT/.rhone: sha256sum is not made to hash it.
    sha = f"find '{root}' -path '{root}/.rhone' -prune -o -type f -print0 | xargs -0 sha256sum"
    manifest = [str(rhone), "-C", str(root), "artifact", "manifest"]
    cases: dict[str, Callable[[], tuple[float, float]]] = {
        "find": lambda: timed(find_stat),
        "sha256sum": lambda: timed(["sh", "-c", sha]),
        "warm": lambda: timed(manifest, env),
        "warm_json": lambda: timed([*manifest, "--json"], env),
        "cold": lambda: timed([*manifest, "--no-cache", "--json"], env),
        "startup": lambda: timed([str(rhone), "-C", str(empty), "artifact", "manifest"], env),
    }
    # Untimed warm-up: writes the stat cache, fills the page cache, and checks the cached and cold manifests agree.
    first = json.loads(subprocess.run([*manifest, "--json"], env=env, capture_output=True, check=True).stdout)
    again = json.loads(subprocess.run([*manifest, "--json"], env=env, capture_output=True, check=True).stdout)
    cold = json.loads(subprocess.run([*manifest, "--no-cache", "--json"], env=env, capture_output=True).stdout)
    if (
        not (first["digest"] == again["digest"] == cold["digest"])
        or again["hashed"] != 0
        or first["file_count"] != files
    ):
        raise SetupError(f"inconsistent manifests: {first['digest']} {again['digest']} {cold['digest']}")
    for run in cases.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, run in cases.items():
            wall, used = run()
            samples[name].append(wall)
            cpu[name].append(used)
    return {"files": files, "bytes": total, "generated_in": generated_in, "samples": samples, "cpu": cpu}


def report(result: dict) -> list[str]:
    """Print one tree's table; the targets it missed."""
    samples, cpu, files = result["samples"], result["cpu"], result["files"]
    megabytes = result["bytes"] / 1_000_000
    print(f"\n{files:,} files, {megabytes:.1f} MB (generated in {result['generated_in']:.1f} s)")
    print(f"{'case':<44} {'wall min–max ms':>17} {'median':>7} {'CPU min–max ms':>17} {'median':>7}")
    labels = {
        "find": "find -printf '%s %T@' (stat walk)",
        "sha256sum": "find | xargs sha256sum",
        "warm": "rhone artifact manifest (warm)",
        "warm_json": "rhone artifact manifest --json (warm)",
        "cold": "rhone artifact manifest --no-cache --json",
        "startup": "rhone artifact manifest, empty directory",
    }
    for name, label in labels.items():
        wall, used = [s * 1000 for s in samples[name]], [s * 1000 for s in cpu[name]]
        print(
            f"{label:<44} {min(wall):>8.1f}–{max(wall):<8.1f} {statistics.median(wall):>7.1f}"
            f" {min(used):>8.1f}–{max(used):<8.1f} {statistics.median(used):>7.1f}"
        )
    missed = []

    def line(label: str, ratios: list[float], target: str = "", ok: Callable[[float], bool] | None = None) -> None:
        verdict = ""
        if ok is not None:
            verdict = "PASS" if ok(statistics.median(ratios)) else "OVER"
            if verdict == "OVER":
                missed.append(f"{label.split(' ÷')[0]}{' (CPU)' if '(CPU)' in label else ''} at {files:,} files")
        print(f"{label:<34} {spread(ratios):<34} {target:<8} {verdict}".rstrip())

    def paired(numerator: str, denominator: str, of: dict[str, list[float]] = samples) -> list[float]:
        return [a / b for a, b in zip(of[numerator], of[denominator], strict=True)]

    print("\nwhole-process wall-time ratios, paired per round (the targets; judged on the median):")
    line("warm ÷ find", paired("warm", "find"), f"≤ {WARM_TARGET:g}×", lambda r: r <= WARM_TARGET)
    line("warm --json ÷ find", paired("warm_json", "find"), f"≤ {WARM_TARGET:g}×", lambda r: r <= WARM_TARGET)
    if files >= 50_000:
        line("cold throughput ÷ sha256sum's", paired("sha256sum", "cold"), f"≥ {COLD_TARGET:g}×", lambda r: r >= 1)
    else:
        line("cold throughput ÷ sha256sum's", paired("sha256sum", "cold"), "(target at 50k files)")
    line("start-up alone ÷ find", paired("startup", "find"), "(no per-file work can remove it)")
    print("CPU-time ratios (user + system; comparable under load):")
    within = f"≤ {WARM_TARGET:g}×"
    line("warm ÷ find (CPU)", paired("warm", "find", cpu), within, lambda r: r <= WARM_TARGET)
    line("warm --json ÷ find (CPU)", paired("warm_json", "find", cpu), within, lambda r: r <= WARM_TARGET)
    line("cold ÷ sha256sum", paired("cold", "sha256sum", cpu))
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (default 5, at least 3)")
    parser.add_argument("--files", default="5000,50000", help="tree sizes, comma-separated (default 5000,50000)")
    parser.add_argument("--python", default=sys.executable, help="the Python (and uv) the scratch venv is made with")
    parser.add_argument(
        "--installed", action="store_true", help="measure the `rhone` beside --python (e.g. an editable install)"
    )
    options = parser.parse_args(argv)
    if options.runs < 3:
        parser.error("--runs must be at least 3 (figures are min–max over the rounds)")
    try:
        sizes = [int(part) for part in options.files.split(",")]
    except ValueError:
        parser.error("--files takes numbers separated by commas, e.g. 5000,50000")
    for tool in ("find", "xargs", "sha256sum"):
        if shutil.which(tool) is None:
            print(f"{tool} is not on PATH: it is the reference", file=sys.stderr)
            return 2
    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rhone-bench-manifest-") as tmp:
        try:
            rhone = rhone_script(options.python) if options.installed else wheel_install(options.python, Path(tmp))
        except SetupError as error:
            print(error, file=sys.stderr)
            return 2
        how = f"the rhone beside {options.python}" if options.installed else "a wheel installed in a scratch venv"
        print(
            f"rhone manifest benchmark: {options.runs} interleaved rounds per tree; python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs; {how}; {load()} at start"
        )
        for files in sizes:
            try:
                result = measure_tree(files, options.runs, rhone, Path(tmp))
            except SetupError as error:
                print(f"setup failed: {error}", file=sys.stderr)
                return 1
            missed += report(result)
    print(f"\n{load()} at end")
    print(f"over target: {', '.join(missed)}" if missed else "all targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
