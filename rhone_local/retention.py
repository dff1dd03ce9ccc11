"""Retention: removing what no deployment will run again, and keeping everything one might.

Kept (every file they need: work folders aside, their artifact's and source's blobs):
- deployments that own a route, and the one each route would roll back to (its previous owner), whatever their age;
- deployments that owned a route within `history_days`;
- the newest `keep_last` deployments of each app, and the newest preview of each app environment;
- deployments still in progress, with live allocations, or targeted by an unfinished promotion or rollback.

Removed: the work folders (source copy, build tree, private HOME) of every finished build; the folders of the other
deployments (build log included) and the materialized trees of stopped and failed allocations (their logs stay while
their deployment is kept); blobs no kept deployment references, once they are older than `UPLOAD_GRACE_SECONDS` (a
client uploads blobs before it creates the deployment that references them). Rows stay in the database: a removed
deployment is still listed, but promoting or rolling back to it is refused (`artifact_absent`).

One run at a time (a lock); a run after each finished deploy and hourly (`Retention.start`), and on request
(`rhone local gc`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rhone_local.artifacts import load_manifest
from rhone_local.pipeline import DeployPipeline, tree_size
from rhone_local.stopping import Deadline, join_all

log = logging.getLogger("rhone_local.retention")

KEEP_LAST = 10
HISTORY_DAYS = 30
UPLOAD_GRACE_SECONDS = 3600.0
INTERVAL_SECONDS = 3600.0
WORK_FOLDERS = ("source", "build", "home")  # of a deployment; build.log stays while the deployment is kept
ALLOCATION_TREES = ("app", "home")  # of an allocation; alloc.log stays while its deployment is kept


@dataclass
class Plan:
    kept: set[str] = field(default_factory=set)  # deployment ids
    paths: dict[str, list[Path]] = field(default_factory=lambda: {"builds": [], "allocations": [], "blobs": []})
    bytes: dict[str, int] = field(default_factory=lambda: {"builds": 0, "allocations": 0, "blobs": 0})

    def add(self, kind: str, path: Path) -> None:
        size = tree_size(path) if path.is_dir() else _size(path)
        self.paths[kind].append(path)
        self.bytes[kind] += size

    def summary(self, *, dry_run: bool) -> dict[str, Any]:
        return {
            "dry_run": dry_run,
            "kept_deployments": len(self.kept),
            "removed": {kind: len(paths) for kind, paths in self.paths.items()},
            "bytes": dict(self.bytes),
            "total_bytes": sum(self.bytes.values()),
        }


class Retention:
    def __init__(
        self,
        pipeline: DeployPipeline,
        *,
        keep_last: int = KEEP_LAST,
        history_days: int = HISTORY_DAYS,
        grace_seconds: float | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.store = pipeline.store
        self.keep_last = keep_last
        self.history_days = history_days
        # A test knob (like RHONE_LOCAL_STAGE_DELAY): end-to-end tests cannot wait an hour for uploads to age.
        default_grace = float(os.environ.get("RHONE_LOCAL_UPLOAD_GRACE", UPLOAD_GRACE_SECONDS) or UPLOAD_GRACE_SECONDS)
        self.grace_seconds = default_grace if grace_seconds is None else grace_seconds
        self.lock = threading.Lock()
        self.wanted = threading.Event()  # set when a deploy finishes: the background thread runs soon after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what to keep ---------------------------------------------------------------------------------------------
    def kept_deployments(self) -> set[str]:
        cutoff = (datetime.now(UTC) - timedelta(days=self.history_days)).isoformat(timespec="milliseconds")
        return self.store.retained_deployments(cutoff.replace("+00:00", "Z"), self.keep_last)

    def plan(self) -> Plan:
        plan = Plan(kept=self.kept_deployments())
        deployments = self.store.deployment_digests()
        finished = {d["id"] for d in deployments if d["state"] in ("preview_ready", "failed")}
        root = self.pipeline.root
        for deployment in deployments:
            folder = root / deployment["id"]
            if not folder.is_dir():
                continue
            if deployment["id"] not in plan.kept and deployment["id"] in finished:
                plan.add("builds", folder)
            elif deployment["id"] in finished:
                for name in WORK_FOLDERS:
                    if (folder / name).exists():
                        plan.add("builds", folder / name)
        for alloc in self.store.finished_allocations():
            folder = self.pipeline.runner.root / alloc["id"]
            if not folder.is_dir():
                continue
            if alloc["deployment_id"] not in plan.kept:
                plan.add("allocations", folder)
            else:
                for name in ALLOCATION_TREES:
                    if (folder / name).exists():
                        plan.add("allocations", folder / name)
        referenced = self._referenced_blobs(d for d in deployments if d["id"] in plan.kept)
        for path in self._old_blobs():
            if "sha256:" + path.parent.name + path.name not in referenced:
                plan.add("blobs", path)
        return plan

    def _referenced_blobs(self, deployments: Any) -> set[str]:
        referenced: set[str] = set()
        for deployment in deployments:
            for digest in (deployment["source_digest"], deployment["artifact_digest"]):
                if not digest or digest in referenced or not self.pipeline.blobs.has(digest):
                    continue
                referenced.add(digest)
                manifest = load_manifest(self.pipeline.blobs, digest)
                referenced.update("sha256:" + f["sha256"] for f in manifest["files"])
        return referenced

    def _old_blobs(self) -> list[Path]:
        """Stored blobs (and abandoned temporary files) older than the upload grace period."""
        horizon = time.time() - self.grace_seconds
        found = []
        blobs = self.pipeline.blobs.root
        for directory in (blobs / "sha256").glob("??"):
            for path in directory.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < horizon:
                        found.append(path)
        return found

    # -- removing -----------------------------------------------------------------------------------------------------
    def run(self, *, dry_run: bool = False) -> dict[str, Any]:
        with self.lock:
            plan = self.plan()
            if not dry_run:
                for paths in plan.paths.values():
                    for path in paths:
                        _remove(path)
                self._remove_stale_temporaries()
        summary = plan.summary(dry_run=dry_run)
        if not dry_run and summary["total_bytes"]:
            log.info("retention removed %s", summary["removed"])
        return summary

    def _remove_stale_temporaries(self) -> None:
        horizon = time.time() - self.grace_seconds
        for path in (self.pipeline.blobs.root / "tmp").iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < horizon:
                    path.unlink()

    # -- automatic runs ---------------------------------------------------------------------------------------------
    def start(self, interval: float = INTERVAL_SECONDS) -> None:
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="retention", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """No further run; one under way finishes (what it left is removed by a later run)."""
        self._stop.set()
        self.wanted.set()

    def join(self, deadline: Deadline) -> list[threading.Thread]:
        return join_all([self._thread], deadline)

    def stop(self, timeout: float = 30.0) -> None:
        self.request_stop()
        self.join(Deadline(timeout))

    def _loop(self, interval: float) -> None:
        try:
            while not self._stop.is_set():
                self.wanted.wait(interval)
                self.wanted.clear()
                if self._stop.is_set():
                    return
                try:
                    self.run()
                except Exception:  # a failed run must not stop the next ones; the log says why
                    log.exception("retention run failed")
        finally:
            self.store.close()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0
