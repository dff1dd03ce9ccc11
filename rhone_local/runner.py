"""The runner: allocations as local processes.

Lifecycle (domain.md §2.4): planned → pulling → starting → ready → draining → stopped, or failed. Every state change
is a compare-and-swap on the allocation's version. Pulling materializes the artifact from blobs (re-verifying every
digest) into the allocation's own directory; starting launches the declared start command with PORT, the
environment's config and a runtime identity token, in its own session, logging to `alloc.log`; ready means the
readiness probe answered 200. Allocation health is recorded, never used to decide route ownership.

After a crash of Rhone Local, `reconcile()` adopts allocation processes that are still healthy and kills the rest, so
a restart leaves neither duplicates nor orphans.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rhone_local.artifacts import load_manifest, materialize
from rhone_local.blobs import BlobStore
from rhone_local.domain import limits
from rhone_local.domain.ids import new_id
from rhone_local.store import Store, _row, now_iso

log = logging.getLogger("rhone_local.runner")


class RunnerStopping(Exception):
    """Rhone Local is shutting down: the stage that asked for an allocation stops without a verdict and resumes after
    the next start (a shutdown is not a reason to fail a deployment or a promotion)."""


LIVE_STATES = ("planned", "pulling", "starting", "ready", "draining")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True
    return state not in ("Z", "X")


def probe(port: int, path: str, timeout: float = 1.0) -> tuple[bool, str]:
    """GET `path` from the app on loopback; ready means status 200. The whole exchange has one deadline (an app that
    trickles its answer a byte at a time cannot hold the worker), only the status line is read, and no redirect is
    followed (it could point anywhere)."""
    if not path.startswith("/") or not path.isprintable() or " " in path:
        return False, f"invalid health path {path!r}"
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            head = b""
            while b"\n" not in head and len(head) < 256:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(256)
                if not chunk:
                    break
                head += chunk
    except OSError as error:
        return False, f"{type(error).__name__}: {error}"
    status = head.split(b"\n", 1)[0].split()
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        return False, "no HTTP status line"
    return status[1] == b"200", f"HTTP {status[1].decode()}"


class Runner:
    def __init__(self, store: Store, blobs: BlobStore, data_dir: Path) -> None:
        self.store = store
        self.blobs = blobs
        self.root = data_dir / "allocations"
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Set by stop_all: from then on nothing starts, and a readiness probe under way gives up, so no allocation
        # process is launched by a worker that outlives the server's shutdown.
        self.closing = threading.Event()
        # Requests, answers and tunnels the edge has open to a port (`Relay.open_connections`, wired by server.py):
        # what a draining allocation still serves. Without an edge there are none.
        self.open_connections: Callable[[int], int] = lambda port: 0

    def _lock_for(self, deployment_id: str, environment_id: str) -> threading.Lock:
        """One lock per deployment and environment: "never two live allocations" is a per-pair rule, and a slow
        readiness probe of one deployment must not hold up every other."""
        with self._locks_guard:
            return self._locks.setdefault((deployment_id, environment_id), threading.Lock())

    # -- state ----------------------------------------------------------------------------------------------------
    def _move(self, alloc: dict[str, Any], state: str, **columns: Any) -> dict[str, Any] | None:
        sets = ", ".join(f"{name} = ?" for name in columns)
        values = [json.dumps(v) if name == "health" else v for name, v in columns.items()]
        row = self.store.conn.execute(
            f"UPDATE allocations SET state = ?, version = version + 1, updated_at = ?{', ' + sets if sets else ''} "
            "WHERE id = ? AND version = ? RETURNING *",
            (state, now_iso(), *values, alloc["id"], alloc["version"]),
        ).fetchone()
        return _row(row)

    def allocations_of(self, deployment_id: str) -> list[dict[str, Any]]:
        return self.store.all("SELECT * FROM allocations WHERE deployment_id = ? ORDER BY id", deployment_id)

    def log_path(self, alloc_id: str) -> Path:
        return self.root / alloc_id / "alloc.log"

    # -- start ----------------------------------------------------------------------------------------------------
    def ensure_running(
        self, deployment: dict[str, Any], environment: dict[str, Any], *, token: Callable[[str], str]
    ) -> dict[str, Any]:
        """The deployment's one allocation in the environment, in the primary region (a preview): its ready one, or
        a new one (ready or failed). Never leaves two live ones."""
        allocations = self.ensure_instances(
            deployment, environment, 1, token=token, regions=[self.store.primary_region()]
        )
        return next((a for a in allocations if a["state"] == "ready"), allocations[0])

    def ensure_instances(
        self,
        deployment: dict[str, Any],
        environment: dict[str, Any],
        count: int,
        *,
        token: Callable[[str], str],
        regions: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Converge the deployment's allocations in the environment on `count` ready ones, spread over `regions`
        (the environment's eligible regions). Extra ones drain, newest first; missing ones start in parallel.
        Returns the allocations kept or started, ready or not (the caller decides what a shortfall means)."""
        eligible = {r["id"] for r in regions}
        with self._lock_for(deployment["id"], environment["id"]):
            fresh: list[dict[str, Any]] = []
            stale: list[dict[str, Any]] = []  # ready, but started with bindings that have changed since
            for alloc in self.allocations_of(deployment["id"]):
                if alloc["state"] not in LIVE_STATES or alloc["environment_id"] != environment["id"]:
                    continue
                alive = alloc["state"] == "ready" and process_alive(alloc["pid"])
                if alive and alloc["region_id"] in eligible:
                    current = self.bindings_digest(environment["id"], alloc["region_id"])
                    (fresh if alloc["bindings_digest"] == current else stale).append(alloc)
                elif alive:
                    self.stop(alloc, "its region is no longer eligible for the environment")
                else:
                    self._kill(alloc, "replaced: not ready after a restart")
            # Each eligible region gets its share (the primary first); a region over its share gives the surplus
            # back — stopped once the others are ready — and one under it gets new allocations.
            share = {r["id"]: count // len(regions) + (index < count % len(regions)) for index, r in enumerate(regions)}
            kept: list[dict[str, Any]] = []
            for alloc in fresh:
                (
                    kept
                    if sum(a["region_id"] == alloc["region_id"] for a in kept) < share[alloc["region_id"]]
                    else stale
                ).append(alloc)
            fresh = kept
            placements = self._placements(fresh, regions, share)

            def start(place: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
                try:
                    return self._start(deployment, environment, token=token, region=place[0], cell=place[1])
                finally:
                    self.store.close()  # this thread's connection

            started: list[dict[str, Any]] = []
            if placements:
                with ThreadPoolExecutor(max_workers=len(placements), thread_name_prefix="alloc-start") as pool:
                    started = list(pool.map(start, placements))
            # Replaced and surplus instances stop only once the new ones are ready: capacity never dips for a change.
            if stale and all(a["state"] == "ready" for a in started):
                for alloc in stale:
                    self.stop(alloc, f"replaced: {count} instance(s) over {len(regions)} region(s), current bindings")
                stale = []
            return fresh + started + stale

    def bindings_digest(self, environment_id: str, region_id: str) -> str:
        return _digest(self.store.allocation_environment(environment_id, region_id))

    def _placements(
        self, kept: list[dict[str, Any]], regions: list[dict[str, Any]], share: dict[str, int]
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Where new allocations go: each region up to its share, each into its least-used cell."""
        placements = []
        for region in regions:
            cells = self.store.all("SELECT * FROM cells WHERE region_id = ? ORDER BY id", region["id"])
            if not cells:
                continue
            used = {c["id"]: sum(a["cell_id"] == c["id"] for a in kept) for c in cells}
            for _ in range(share[region["id"]] - sum(a["region_id"] == region["id"] for a in kept)):
                cell = min(cells, key=lambda c: used[c["id"]])
                used[cell["id"]] += 1
                placements.append((region, cell))
        return placements

    def _start(
        self,
        deployment: dict[str, Any],
        environment: dict[str, Any],
        *,
        token: Callable[[str], str],
        region: dict[str, Any],
        cell: dict[str, Any],
    ) -> dict[str, Any]:
        ts = now_iso()
        alloc = {
            "id": new_id("allocation"),
            "deployment_id": deployment["id"],
            "environment_id": environment["id"],
            "artifact_digest": deployment["artifact_digest"],
            "region_id": region["id"],
            "cell_id": cell["id"],
            "state": "planned",
            "version": 1,
            "pid": None,
            "port": None,
            "health": None,
            "created_at": ts,
            "updated_at": ts,
            "bindings_digest": _digest(bound := self.store.allocation_environment(environment["id"], region["id"])),
        }
        self.store.conn.execute(
            "INSERT INTO allocations VALUES (:id, :deployment_id, :environment_id, :artifact_digest, :region_id, "
            ":cell_id, :state, :version, :pid, :port, :health, :created_at, :updated_at, :bindings_digest)",
            alloc,
        )
        config = deployment["config"]
        process = config["process"]
        directory = self.root / alloc["id"]
        alloc = self._move(alloc, "pulling") or alloc
        try:
            manifest = load_manifest(self.blobs, deployment["artifact_digest"])
            materialize(self.blobs, manifest, directory / "app")
        except Exception as error:  # noqa: BLE001 - any pull failure fails the allocation with its reason
            return self._move(alloc, "failed", health={"stage": "pulling", "error": str(error)}) or alloc
        port = free_port()
        environment_vars = {
            # Bindings first: the platform's own variables below cannot be overridden by a secret's name.
            **bound,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(directory),
            "PORT": str(port),
            "RHONE_DEPLOYMENT_ID": deployment["id"],
            "RHONE_ALLOCATION_ID": alloc["id"],
            "RHONE_ENVIRONMENT": environment["name"],
            "RHONE_ARTIFACT_DIGEST": deployment["artifact_digest"],
            "RHONE_REGION": region["name"],  # internal topology, for logs; never part of a public URL or id
            "RHONE_RUNTIME_TOKEN": token(alloc["id"]),  # minted only for an allocation that starts; dies with it
        }
        log_file = self.log_path(alloc["id"])
        if self.closing.is_set():
            self._move(alloc, "failed", health={"stage": "starting", "error": "Rhone Local is stopping"})
            raise RunnerStopping
        with log_file.open("ab") as handle:
            child = subprocess.Popen(
                process["start"],
                shell=True,
                cwd=directory / "app",
                env=environment_vars,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        alloc = self._move(alloc, "starting", pid=child.pid, port=port) or alloc
        deadline = time.monotonic() + limits.readiness_timeout(process)
        attempts, last = 0, "not probed"
        while time.monotonic() < deadline:
            if child.poll() is not None:
                last = f"process exited with status {child.returncode}"
                break
            if self.closing.is_set():
                self._terminate(child.pid)
                self._move(alloc, "failed", health={"stage": "starting", "error": "Rhone Local is stopping"})
                raise RunnerStopping
            attempts += 1
            ok, last = probe(port, process.get("health_path", "/healthz"))
            if ok:
                health = {
                    "ready": True,
                    "probe": process.get("health_path"),
                    "attempts": attempts,
                    "last": last,
                    "at": now_iso(),
                }
                return self._move(alloc, "ready", health=health) or alloc
            time.sleep(0.1)  # a readiness probe: polling the app is the only way to learn it is up
        health = {
            "ready": False,
            "probe": process.get("health_path"),
            "attempts": attempts,
            "last": last,
            "timeout": process.get("readiness_timeout"),
            # The tail goes into operation evidence: an app that printed a secret it was given must not publish it.
            "log_tail": _redact(_tail(log_file), bound.values()),
        }
        self._terminate(child.pid)
        return self._move(alloc, "failed", health=health) or alloc

    # -- stop -----------------------------------------------------------------------------------------------------
    def _terminate(self, pid: int | None, grace: float = 5.0) -> None:
        """Stop the allocation's whole process group — even when its leader is already gone, its children are not."""
        if not pid:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Whatever of the group is left (the leader, or children that outlived it) does not get a second chance.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    def _kill(self, alloc: dict[str, Any], reason: str) -> None:
        self._terminate(alloc["pid"])
        self._move(alloc, "failed", health={**(alloc["health"] or {}), "stopped_because": reason})

    def stop(self, alloc: dict[str, Any], reason: str) -> None:
        """draining → stopped (new requests stop arriving the moment it leaves `ready`)."""
        draining = self._move(alloc, "draining")
        if draining is None:
            return
        self._terminate(alloc["pid"])
        self._move(draining, "stopped", health={"stopped_because": reason, "at": now_iso()})

    def stop_superseded(self, deployment: dict[str, Any]) -> None:
        """Older deployments' previews in the same environment stop once a newer one is ready (their allocations in
        other environments — production — belong to route ownership and are not touched)."""
        older = self.store.all(
            "SELECT a.* FROM allocations a JOIN deployments d ON d.id = a.deployment_id "
            "WHERE d.app_id = ? AND a.environment_id = ? AND d.id < ? AND a.state IN ('ready', 'starting')",
            deployment["app_id"],
            deployment["environment_id"],
            deployment["id"],
        )
        for alloc in older:
            self.stop(alloc, f"superseded by {deployment['id']}")

    def stop_environment(self, deployment_id: str, environment_id: str, reason: str) -> int:
        """Drain and stop a deployment's allocations in one environment (the previous route owner's, after a move)."""
        allocs = [
            a
            for a in self.allocations_of(deployment_id)
            if a["environment_id"] == environment_id and a["state"] in LIVE_STATES
        ]
        for alloc in allocs:
            self.stop(alloc, reason)
        return len(allocs)

    def stop_all(self, reason: str) -> None:
        self.closing.set()
        for alloc in self.store.all(
            "SELECT * FROM allocations WHERE state IN ('planned', 'pulling', 'starting', 'ready', 'draining')"
        ):
            self.stop(alloc, reason)

    def check_processes(self) -> list[str]:
        """Ready allocations whose process has gone are failed (their state, not the edge's luck, says so)."""
        gone = []
        for alloc in self.store.all("SELECT * FROM allocations WHERE state = 'ready'"):
            if process_alive(alloc["pid"]):
                continue
            health = {**(alloc["health"] or {}), "ready": False, "error": "process exited", "at": now_iso()}
            if self._move(alloc, "failed", health=health):
                gone.append(alloc["id"])
        return gone

    def reconcile(self) -> list[str]:
        """At start-up: adopt allocation processes that survived a crash and still answer; fail the rest."""
        adopted = []
        for alloc in self.store.all(
            "SELECT * FROM allocations WHERE state IN ('planned', 'pulling', 'starting', 'ready', 'draining')"
        ):
            deployment = self.store.one("SELECT config FROM deployments WHERE id = ?", alloc["deployment_id"])
            health_path = deployment["config"]["process"].get("health_path", "/healthz")
            if alloc["state"] == "ready" and process_alive(alloc["pid"]) and probe(alloc["port"], health_path)[0]:
                adopted.append(alloc["id"])
                continue
            self._kill(alloc, "Rhone Local restarted while it was not ready")
        return adopted


def _redact(text: str, values: Any) -> str:
    for value in sorted((v for v in values if len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return text


def _digest(variables: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(variables.items())).encode()).hexdigest()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
