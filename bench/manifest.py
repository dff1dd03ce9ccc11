"""Manifest benchmark: `build_manifest` throughput against `sha256sum`, and the stat cache's warm rerun.

    .venv/bin/python bench/manifest.py [--runs N] [--files N] [--megabytes N]

Generates a deterministic tree (~5,000 files, ~100 MB, mixed sizes, a few directory levels) in a temporary
directory, then measures in interleaved rounds (one run of each case per round, so machine noise hits all alike;
one untimed warm-up round first, so every case reads from the page cache):

- cold: `build_manifest(root, use_cache=False)` plus its digest, every file read and hashed;
- sha256sum: `xargs -0 sha256sum` over the same files (the reference: C, one process per few thousand files);
- warm: `build_manifest(root)` with the stat cache on the unchanged tree (the files' mtimes are an hour old, so no
  entry is "racy"), plus its digest;
- floor: only `os.scandir` of every directory and `lstat` of every file, the least a stat cache must do (shown for
  context: when the floor alone is over 0.1 × cold, no single-threaded stat cache meets the warm target here).

Targets: cold throughput ≥ 0.8 × sha256sum's; warm time ≤ 0.1 × cold time. A target missed prints OVER but the
script still exits 0: this is a measurement, not a test (tests/test_manifest.py is the test).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rhone_cli.artifacts.manifest import build_manifest


def generate(root: Path, files: int, total_bytes: int, seed: int = 20240601) -> tuple[list[Path], int]:
    """A deterministic tree: mostly small files, some medium, a few large, scaled to about `total_bytes`."""
    rng = random.Random(seed)
    weights = []
    for _ in range(files):
        bucket = rng.random()
        if bucket < 0.70:
            weights.append(rng.randint(100, 8_000))  # source files, templates
        elif bucket < 0.97:
            weights.append(rng.randint(8_000, 120_000))  # assets
        else:
            weights.append(rng.randint(400_000, 2_000_000))  # bundles, images, binaries
    scale = total_bytes / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    paths = []
    for index, size in enumerate(sizes):
        directory = root / f"pkg{index % 23}" / f"mod{index % 7}" / ("deep" if index % 3 == 0 else "")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"file{index:05d}.{('py', 'js', 'css', 'png', 'bin')[index % 5]}"
        path.write_bytes(rng.randbytes(size))
        if index % 41 == 0:
            path.chmod(0o755)
        paths.append(path)
    an_hour_ago = time.time() - 3600
    for path in paths:
        os.utime(path, (an_hour_ago, an_hour_ago))
    return paths, sum(sizes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--files", type=int, default=5000, help="number of files (default 5000)")
    parser.add_argument("--megabytes", type=float, default=100, help="total size in MB (default 100)")
    options = parser.parse_args(argv)
    if options.runs < 1:
        parser.error("--runs must be at least 1")
    sha256sum = shutil.which("sha256sum")

    with tempfile.TemporaryDirectory(prefix="rhone-bench-manifest-") as tmp:
        root = Path(tmp) / "tree"
        started = time.perf_counter()
        paths, total = generate(root, options.files, int(options.megabytes * 1_000_000))
        generated_in = time.perf_counter() - started
        file_list = Path(tmp) / "files.nul"
        file_list.write_bytes(b"".join(os.fsencode(p) + b"\0" for p in paths))
        megabytes = total / 1_000_000

        def cold() -> float:
            t = time.perf_counter()
            result = build_manifest(root, use_cache=False)
            result.digest  # noqa: B018 (computing it is part of the work)
            elapsed = time.perf_counter() - t
            assert result.hashed_count == len(paths), result.hashed_count
            return elapsed

        def warm() -> float:
            t = time.perf_counter()
            result = build_manifest(root)
            result.digest  # noqa: B018
            elapsed = time.perf_counter() - t
            assert result.hashed_count == 0, f"warm run hashed {result.hashed_count} files"
            return elapsed

        def floor() -> float:
            """What any stat cache must do at least: list every directory and lstat every file (no Python work)."""
            t = time.perf_counter()
            stack = [str(root)]
            while stack:
                with os.scandir(stack.pop()) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            entry.stat(follow_symlinks=False)
            return time.perf_counter() - t

        def reference() -> float:
            t = time.perf_counter()
            with open(file_list, "rb") as stdin:
                subprocess.run(["xargs", "-0", str(sha256sum)], stdin=stdin, stdout=subprocess.DEVNULL, check=True)
            return time.perf_counter() - t

        cases: dict[str, tuple] = {"cold": (cold, []), "warm": (warm, []), "floor": (floor, [])}
        if sha256sum:
            cases["sha256sum"] = (reference, [])
        # Warm-up round: fills the page cache, writes the stat cache, and checks every case works.
        build_manifest(root)
        cold_digest = build_manifest(root, use_cache=False).digest
        assert build_manifest(root).digest == cold_digest, "the cached manifest differs from the cold one"
        for run, _samples in cases.values():
            run()
        for _ in range(options.runs):
            for run, samples in cases.values():
                samples.append(run())

    median = {name: statistics.median(samples) for name, (_run, samples) in cases.items()}
    best = {name: min(samples) for name, (_run, samples) in cases.items()}
    print(
        f"rhone manifest: {len(paths)} files, {megabytes:.1f} MB (generated in {generated_in:.1f} s); "
        f"{options.runs} interleaved rounds, medians; python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print()
    print(f"{'case':<36} {'median ms':>9} {'min ms':>7} {'MB/s':>7}  {'ratio':>8}  {'target':>7}  result")
    print(f"{'-' * 36} {'-' * 9} {'-' * 7} {'-' * 7}  {'-' * 8}  {'-' * 7}  ------")
    over = []

    def row(label: str, name: str, ratio: str = "", target: str = "", verdict: str = "") -> None:
        mbps = megabytes / median[name]
        line = (
            f"{label:<36} {median[name] * 1000:>9.1f} {best[name] * 1000:>7.1f} {mbps:>7.0f}  {ratio:>8}  {target:>7}"
        )
        print(f"{line}  {verdict}".rstrip())

    if sha256sum:
        row("sha256sum (xargs -0)", "sha256sum", verdict="(reference)")
        throughput_ratio = median["sha256sum"] / median["cold"]  # = cold MB/s ÷ sha256sum MB/s
        verdict = "PASS" if throughput_ratio >= 0.8 else "OVER"
        if verdict == "OVER":
            over.append("cold throughput")
        row("cold build_manifest(use_cache=False)", "cold", f"{throughput_ratio:.2f}×", "≥0.8×", verdict)
    else:
        row("cold build_manifest(use_cache=False)", "cold", verdict="(no sha256sum on PATH: no reference)")
    warm_ratio = median["warm"] / median["cold"]
    verdict = "PASS" if warm_ratio <= 0.1 else "OVER"
    if verdict == "OVER":
        over.append("warm rerun")
    row("warm build_manifest() (stat cache)", "warm", f"{warm_ratio:.3f}×", "≤0.1×", verdict)
    row("floor: scandir + lstat only", "floor", f"{median['floor'] / median['cold']:.3f}×", verdict="(lower bound)")
    print()
    print("ratios: cold is its throughput over sha256sum's; warm and floor are their times over the cold run's time")
    print("(the floor is the least a single-threaded stat cache does; over 0.1× puts the warm target out of reach)")
    print(f"over target: {', '.join(over)}" if over else "all targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
