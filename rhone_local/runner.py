"""The runner: allocations as local processes.

Lifecycle (docs/architecture.md, "Runner"): planned → pulling → starting → ready → draining → stopped, or failed.
Every state change is a compare-and-swap on the allocation's version. Pulling materializes the artifact from blobs
(re-verifying every digest) into the allocation's own directory; starting launches the declared start command with
PORT, the environment's config and a runtime identity token, in its own session, logging to `alloc.log`, so that the
app itself is the process that gets signals (`processes.start_argv`); ready means the readiness probe passed (an HTTP
200 on the health path, or an accepted TCP connection). Allocation health is recorded, never used to decide route
ownership.

Stopping never blocks the caller: `drain()` moves an allocation to `draining` with a deadline stored on its row (the
edge sends it no new requests from that moment), and `tick()` — run by the reconciler every fraction of a second —
ends it once its open connections are gone or its deadline passed: SIGTERM to its processes, SIGKILL after a short
grace, then `stopped` (or `failed`) with the outcome recorded: drained, or cut with how many connections were open.
Because the deadline is durable, a restarted server still stops a drain that a crash interrupted, in time.

Only processes that provably belong to an allocation are ever signalled (`processes.allocation_processes`): its
leader by pid and start time, or a process carrying its id in its environment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rhone_local import processes
from rhone_local.allocation_ports import PORT_ATTEMPTS, PortReservations, PortTaken, address_in_use, listener_owned
from rhone_local.app_logs import iso_at
from rhone_local.artifacts import load_manifest, materialize
from rhone_local.blobs import BlobStore
from rhone_local.domain import limits
from rhone_local.domain.access import hash_token, new_secret
from rhone_local.domain.errors import NodeStopping
from rhone_local.domain.ids import new_id
from rhone_local.nodes import DEFAULT_NODE, LAPSE_SECONDS
from rhone_local.sandbox import Bind, Sandbox, base_environment
from rhone_local.store import Store, now_iso

log = logging.getLogger("rhone_local.runner")


class RunnerStopping(NodeStopping):
    """Rhone Local is shutting down: the stage that asked for an allocation stops without a verdict and resumes after
    the next start."""


LIVE_STATES = ("planned", "pulling", "starting", "ready", "draining")
STARTING_STATES = ("planned", "pulling", "starting")
DEFAULT_DRAIN_TIMEOUT = 30.0
STOP_GRACE_SECONDS = 5.0  # SIGTERM → SIGKILL
SHUTDOWN_DRAIN_SECONDS = 3.0  # how long `rhone local down` lets open connections finish
SHUTDOWN_GRACE_SECONDS = 3.0
LOG_TAIL_LINES = 20
PLACED_PULL_SECONDS = 60.0  # beyond its readiness timeout, how long an allocation placed on another node may take
PLACED_POLL_SECONDS = 0.1
HAND_OVER_MARGIN_SECONDS = 5.0  # beyond its readiness timeout, how long a stopping node waits for a hand-over


def readiness_of(process: dict[str, Any]) -> tuple[str, str]:
    """(kind, what is probed) for a deployment's `[process]` table: `http` GETs the health path, `tcp` connects."""
    kind = process.get("readiness", "http")
    return kind, process.get("health_path", "/healthz") if kind == "http" else "a TCP connection"


def probe(port: int, path: str, timeout: float = 1.0, kind: str = "http") -> tuple[bool, str]:
    """Ready means a TCP connection is accepted (`tcp`), or a GET of `path` answers 200 (`http`). The whole HTTP
    exchange has one deadline (an app that trickles its answer a byte at a time cannot hold the worker), only the
    status line is read, and no redirect is followed (it could point anywhere)."""
    if kind == "tcp":
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                return True, "TCP connection accepted"
        except OSError as error:
            return False, f"TCP connection failed: {error.strerror or error}"
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


def drain_timeout_of(config: dict[str, Any]) -> float:
    return float((config.get("process") or {}).get("drain_timeout", DEFAULT_DRAIN_TIMEOUT))


class Runner:
    def __init__(self, store: Store, blobs: BlobStore, data_dir: Path, *, sandbox: Sandbox | None = None) -> None:
        self.store = store
        self.blobs = blobs
        self.sandbox = sandbox or Sandbox("none", reason="not configured")
        self.root = data_dir / "allocations"
        self.services_root = data_dir / "services"
        self.databases_root = data_dir / "data"  # provisioned SQLite databases, per environment (provisioning.py)
        self.root.mkdir(parents=True, exist_ok=True)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Set by stop_all: from then on nothing starts, and a readiness probe under way gives up, so no allocation
        # process is launched by a worker that outlives the server's shutdown.
        self.closing = threading.Event()
        # How an app's port is chosen without a silent collision (rhone_local/allocation_ports.py).
        self.ports = PortReservations()
        # Requests, answers and tunnels the edges have open to a port (`EdgeFeed.open_connections`, wired by server.py):
        # what a draining allocation still serves. Without an edge there are none.
        self.open_connections: Callable[[int], int] = lambda port: 0
        # Per-allocation URLs of the lane's engine-backed runtime services (`Engines.credentials`, wired by the
        # pipeline): each allocation connects as a user of its own.
        self.service_credentials: Callable[[str, str, str], dict[str, str]] = lambda *lane: {}
        # The node this runner is (docs/multi-node.md, "Nodes"): it starts, watches and signals only the processes
        # of allocations placed on it; `runs_processes` is False on a node without the runner role, whose workers
        # place allocations on other nodes and wait for them. Set by server.wire.
        self.node, self.address, self.runs_processes = DEFAULT_NODE, "127.0.0.1", True
        self.lapse = LAPSE_SECONDS
        self._starting: set[str] = set()  # allocations this process is starting (not to be claimed twice)
        self._starting_guard = threading.Lock()

    def _lock_for(self, deployment_id: str, environment_id: str) -> threading.Lock:
        """One lock per deployment and environment: "never two live allocations" is a per-pair rule, and a slow
        readiness probe of one deployment must not hold up every other."""
        with self._locks_guard:
            return self._locks.setdefault((deployment_id, environment_id), threading.Lock())

    # -- state ----------------------------------------------------------------------------------------------------
    def _move(self, alloc: dict[str, Any], state: str, **columns: Any) -> dict[str, Any] | None:
        return self.store.move_allocation(alloc, state, **columns)

    def allocations_of(self, deployment_id: str) -> list[dict[str, Any]]:
        return self.store.allocations_of(deployment_id)

    def log_path(self, alloc_id: str) -> Path:
        return self.root / alloc_id / "alloc.log"

    # -- start ----------------------------------------------------------------------------------------------------
    def ensure_running(self, deployment: dict[str, Any], environment: dict[str, Any]) -> dict[str, Any]:
        """The deployment's one allocation in the environment, in the primary region (a preview): its ready one, or
        a new one (ready or failed). Never leaves two live ones."""
        allocations = self.ensure_instances(deployment, environment, 1, regions=[self.store.primary_region()])
        return next((a for a in allocations if a["state"] == "ready"), allocations[0])

    def ensure_instances(
        self,
        deployment: dict[str, Any],
        environment: dict[str, Any],
        count: int,
        *,
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
                if alloc["state"] == "draining":
                    continue  # on its way out; its drain ends it
                alive = alloc["state"] == "ready" and self._leader_alive(alloc)
                if alive and alloc["region_id"] in eligible:
                    current = self.bindings_digest(environment["id"], alloc["region_id"])
                    (fresh if alloc["bindings_digest"] == current else stale).append(alloc)
                elif alive:
                    self.drain(alloc, "its region is no longer eligible for the environment")
                else:
                    self.drain(alloc, "replaced: not ready", timeout=0, end_state="failed")
            # Each eligible region gets its share (the primary first); a region over its share gives the surplus
            # back — drained once the others are ready — and one under it gets new allocations.
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

            nodes = self._nodes_for(len(placements))

            def start(place: tuple[tuple[dict[str, Any], dict[str, Any]], tuple[str, str] | None]) -> dict[str, Any]:
                (region, cell), node = place
                try:
                    return self._start(deployment, environment, region=region, cell=cell, node=node)
                finally:
                    self.store.close()  # this thread's connection

            started: list[dict[str, Any]] = []
            if placements:
                with ThreadPoolExecutor(max_workers=len(placements), thread_name_prefix="alloc-start") as pool:
                    started = list(pool.map(start, zip(placements, nodes, strict=True)))
            # Replaced and surplus instances drain only once the new ones are ready: capacity never dips for a change.
            if stale and all(a["state"] == "ready" for a in started):
                for alloc in stale:
                    self.drain(alloc, f"replaced: {count} instance(s) over {len(regions)} region(s), current bindings")
                stale = []
            return fresh + started + stale

    def _leader_alive(self, alloc: dict[str, Any]) -> bool:
        """Whether a ready allocation's process lives: checked here for this node's own (pids are per machine);
        another node's is as its row says — that node's runner fails it when its process dies."""
        if alloc.get("node") not in (None, self.node):
            return True
        return processes.leader_alive(alloc["pid"], alloc["pid_start_time"])

    def runtime_token(self, deployment: dict[str, Any], allocation_id: str) -> str:
        """A fresh token for the app's runtime identity, handed to one allocation (never shown anywhere else). It is
        bound to that allocation: it stops working the moment the allocation leaves `ready` (see
        `Store.principal_for_token`)."""
        identity = self.store.runtime_identity_of(deployment["app_id"])
        secret = new_secret()
        with self.store.write() as c:
            if identity is None:
                identity = self.store.create_runtime_identity(c, deployment["workspace_id"], deployment["app_id"])
            self.store.create_token(
                c,
                subject_kind="runtime",
                subject_id=identity["id"],
                name=f"allocation {allocation_id} of {deployment['id']}",
                secret_hash=hash_token(secret),
                workspace_id=deployment["workspace_id"],
                allocation_id=allocation_id,
            )
        return secret

    def bindings_digest(self, environment_id: str, region_id: str) -> str:
        return _digest(self.store.allocation_environment(environment_id, region_id))

    def _nodes_for(self, count: int) -> list[tuple[str, str] | None]:
        """The (node, address) each of `count` new allocations goes to (operations/placement.py); None: no live
        runner node."""
        from rhone_local.operations.placement import runner_nodes

        own = (self.node, self.address) if self.runs_processes else None
        return runner_nodes(self.store, count, own=own, lapse=self.lapse)

    def _placements(
        self, kept: list[dict[str, Any]], regions: list[dict[str, Any]], share: dict[str, int]
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Where new allocations go: each region up to its share, each into its least-used cell."""
        placements = []
        for region in regions:
            cells = self.store.cells_of(region["id"])
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
        region: dict[str, Any],
        cell: dict[str, Any],
        node: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """A new allocation on `node` (default: this one): started here, or, placed on another node, started by that
        node's runner while this waits for it. Ready or failed."""
        alloc, bound = self._new_allocation(deployment, environment, region=region, cell=cell, node=node)
        if node is None and not self.runs_processes:
            alloc.update(state="failed", health={"stage": "placing", "error": "no live node has the runner role"})
            self.store.insert_allocation(alloc)
            return alloc
        if alloc["node"] != self.node:
            self.store.insert_allocation(alloc)
            return self._await_placed(alloc, deployment)
        with self._starting_guard:
            self._starting.add(alloc["id"])
        try:
            self.store.insert_allocation(alloc)
            return self._run(alloc, deployment, environment, region=region, bound=bound)
        finally:
            with self._starting_guard:
                self._starting.discard(alloc["id"])

    def _new_allocation(
        self,
        deployment: dict[str, Any],
        environment: dict[str, Any],
        *,
        region: dict[str, Any],
        cell: dict[str, Any],
        node: tuple[str, str] | None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The row of a planned allocation on `node` (default: this one), not yet stored; and its environment."""
        ts = now_iso()
        node_name, address = node or (self.node, self.address)
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
            "node": node_name,
            "address": address,
        }
        return alloc, bound

    def _run(
        self,
        alloc: dict[str, Any],
        deployment: dict[str, Any],
        environment: dict[str, Any],
        *,
        region: dict[str, Any],
        bound: dict[str, str],
        claimed: bool = False,
    ) -> dict[str, Any]:
        """Pull, launch and probe a planned allocation of this node. `claimed`: another node's worker placed it here,
        and the move to `pulling` is this runner's claim — a row moved meanwhile (the worker gave up) is left alone."""
        process = deployment["config"]["process"]
        directory = self.root / alloc["id"]
        moved = self._move(alloc, "pulling")
        if moved is None and claimed:
            return self.store.allocation(alloc["id"]) or alloc
        alloc = moved or alloc
        try:
            manifest = load_manifest(self.blobs, deployment["artifact_digest"])
            materialize(self.blobs, manifest, directory / "app")
        except Exception as error:  # noqa: BLE001 - any pull failure fails the allocation with its reason
            return self._move(alloc, "failed", health={"stage": "pulling", "error": str(error)}) or alloc
        (directory / "home").mkdir(exist_ok=True)
        defaults = {k: v for k, v in (deployment["config"].get("env") or {}).items() if isinstance(v, str)}
        environment_vars = {
            # rhone.toml's defaults, then the environment's settings and bindings: the platform's own variables below
            # cannot be overridden by a setting's or a secret's name.
            **defaults,
            **bound,
            **self.service_credentials(alloc["id"], environment["id"], region["id"]),
            **base_environment(self.sandbox, directory / "app", home=directory / "home"),
            "RHONE_DEPLOYMENT_ID": deployment["id"],
            "RHONE_ALLOCATION_ID": alloc["id"],  # also how the runner recognises the app's processes
            "RHONE_ENVIRONMENT": environment["name"],
            "RHONE_ARTIFACT_DIGEST": deployment["artifact_digest"],
            "RHONE_REGION": region["name"],  # internal topology, for logs; never part of a public URL or id
            # Minted only for an allocation that starts; it dies with it.
            "RHONE_RUNTIME_TOKEN": self.runtime_token(deployment, alloc["id"]),
        }
        binds = self._allocation_binds(environment["id"], region["id"])
        retries: list[dict[str, Any]] = []  # the ports an app could not bind (taken after they were chosen)
        while True:
            probe = self.ports.hold()
            port = probe.getsockname()[1]
            try:
                health = {"port_retries": retries} if retries else None
                environment_vars["PORT"] = str(port)
                alloc, child, log_start = self._launch(
                    alloc, process, directory, environment_vars, binds, probe, health
                )
                if child is None:
                    return alloc
                clash_from = log_start if len(retries) + 1 < PORT_ATTEMPTS else None
                return self._await_ready(alloc, child, process, self.log_path(alloc["id"]), bound, clash_from)
            except PortTaken as taken:
                retries.append({"port": port, "reason": taken.reason})
            finally:
                probe.close()
                self.ports.settle(port)

    def _await_placed(
        self, alloc: dict[str, Any], deployment: dict[str, Any], *, handing_over: bool = False
    ) -> dict[str, Any]:
        """Wait, bounded, for another node's runner to start an allocation placed on it; failed (draining) when it
        did not in time — its runner ends whatever it started. A hand-over's wait (`hand_over`) goes on while this
        node stops (that is what it is for), with a shorter margin: a stop must end."""
        margin = HAND_OVER_MARGIN_SECONDS if handing_over else PLACED_PULL_SECONDS
        deadline = time.monotonic() + limits.readiness_timeout(deployment["config"]["process"]) + margin
        while time.monotonic() < deadline:
            current = self.store.allocation(alloc["id"]) or alloc
            if current["state"] not in STARTING_STATES:
                return current
            if self.closing.is_set() and not handing_over:
                self.drain(current, "Rhone Local is stopping", timeout=0, end_state="failed")
                raise RunnerStopping
            time.sleep(PLACED_POLL_SECONDS)  # another node's progress is only visible in the store
        error = f"node {alloc['node']} did not start it in time"
        current = self.store.allocation(alloc["id"]) or alloc
        drained = self.drain(current, error, timeout=0, end_state="failed", note={"error": error})
        return drained or self.store.allocation(alloc["id"]) or current

    def start_placed(self) -> int:
        """Start, each in its own thread, the allocations other nodes' workers placed on this node; how many."""
        if not self.runs_processes or self.closing.is_set():
            return 0
        claimed = []
        for alloc in self.store.node_allocations_in(self.node, "planned"):  # never an unplaced one: none is planned
            with self._starting_guard:
                if alloc["id"] in self._starting:
                    continue
                self._starting.add(alloc["id"])
            claimed.append(alloc)
            threading.Thread(target=self._start_placed, args=(alloc,), name=f"start-{alloc['id']}", daemon=True).start()
        return len(claimed)

    def _start_placed(self, alloc: dict[str, Any]) -> None:
        try:
            deployment = self.store.deployment(alloc["deployment_id"])
            environment = self.store.environment_by_id(alloc["environment_id"])
            region = self.store.region(alloc["region_id"])
            if deployment is None or environment is None or region is None:
                raise RuntimeError("its deployment, environment or region is gone")
            bound = self.store.allocation_environment(environment["id"], region["id"])
            self._run(alloc, deployment, environment, region=region, bound=bound, claimed=True)
        except RunnerStopping:
            pass
        except Exception as error:  # the allocation fails with why; the worker waiting for it sees it
            log.exception("starting placed allocation %s failed", alloc["id"])
            current = self.store.allocation(alloc["id"])
            if current is not None and current["state"] in STARTING_STATES:
                self._move(current, "failed", health={"stage": "starting", "error": str(error)})
        finally:
            with self._starting_guard:
                self._starting.discard(alloc["id"])
            self.store.close()  # this thread's connection

    def _launch(
        self,
        alloc: dict[str, Any],
        process: dict[str, Any],
        directory: Path,
        environment_vars: dict[str, str],
        binds: list[Bind],
        probe: socket.socket,
        health: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], subprocess.Popen | None, int]:
        """Spawn the app on the port `probe` holds (released at the last moment) and move the allocation to
        `starting` (with `health`, when given): (the allocation, the spawned process, where its output begins in the
        log), or (the allocation in the state it ended in, None, 0) when it did not start."""
        log_file = self.log_path(alloc["id"])
        if self.closing.is_set():
            self._move(alloc, "failed", health={"stage": "starting", "error": "Rhone Local is stopping"})
            raise RunnerStopping
        log_start = log_file.stat().st_size if log_file.exists() else 0
        probe.close()  # the app binds the port next
        try:
            with log_file.open("ab") as handle:
                # `leader` is the process the runner verifies and signals first (in a sandbox: its pid 1, whose death
                # ends the whole sandbox); the app itself is found by the allocation id in its environment.
                child, leader = self.sandbox.spawn(
                    processes.start_argv(process["start"]),
                    root=directory / "app",
                    env=environment_vars,
                    log=handle,
                    binds=binds,
                )
        except OSError as error:  # a start command naming a program the artifact and PATH lack
            failure = {"ready": False, "stage": "starting", "error": f"cannot run the start command: {error}"}
            return self._move(alloc, "failed", health={**(health or {}), **failure}) or alloc, None, 0
        started = processes.start_time(leader)
        columns = {"health": health} if health else {}
        port = int(environment_vars["PORT"])
        moved = self._move(alloc, "starting", pid=leader, port=port, pid_start_time=started, **columns)
        if moved is None:  # drained meanwhile (the route moved on): the process must not outlive its allocation
            self._terminate_now(alloc["id"], leader, started)
            return self.store.allocation(alloc["id"]) or alloc, None, 0
        return moved, child, log_start

    def _await_ready(
        self,
        alloc: dict[str, Any],
        child: subprocess.Popen,
        process: dict[str, Any],
        log_file: Path,
        bound: dict[str, str],
        clash_from: int | None = None,
    ) -> dict[str, Any]:
        """The allocation ready, or failed with why. With `clash_from` (where the app's output begins in its log), a
        port another process took raises PortTaken instead, the app stopped: the caller starts it on another port."""
        kind, target = readiness_of(process)
        timeout = limits.readiness_timeout(process)
        deadline = time.monotonic() + timeout
        attempts, last = 0, "not probed yet"
        retried = {k: v for k, v in (alloc["health"] or {}).items() if k == "port_retries"}
        while time.monotonic() < deadline:
            if child.poll() is not None:
                if clash_from is not None and address_in_use(log_file, clash_from):
                    self._terminate_now(alloc["id"], alloc["pid"], alloc["pid_start_time"])  # any process it left
                    raise PortTaken("the app could not bind it: address already in use")
                last = f"the process exited with status {child.returncode}"
                break
            if self.closing.is_set():
                self._terminate_now(alloc["id"], alloc["pid"], alloc["pid_start_time"])
                self._move(alloc, "failed", health={"stage": "starting", "error": "Rhone Local is stopping"})
                raise RunnerStopping
            attempts += 1
            ok, last = probe(alloc["port"], target, kind=kind)
            if ok and self._served_by_another(alloc):
                if clash_from is not None:  # another process took the port and answers on it: start on another
                    self._terminate_now(alloc["id"], alloc["pid"], alloc["pid_start_time"])
                    raise PortTaken("served by a process that is not the allocation's")
                last = f"port {alloc['port']} is served by a process that is not the allocation's"
                break
            if ok:
                health = {"ready": True, "probe": kind, "target": target, "attempts": attempts, "last": last}
                moved = self._move(alloc, "ready", health={**health, "at": now_iso(), **retried})
                if moved is None:  # drained while it started: the drain ends it
                    return self.store.allocation(alloc["id"]) or alloc
                return moved
            time.sleep(0.1)  # a readiness probe: polling the app is the only way to learn it is up
        probed = f"GET http://127.0.0.1:{alloc['port']}{target}" if kind == "http" else f"TCP 127.0.0.1:{alloc['port']}"
        health = {
            "ready": False,
            "probe": kind,
            "target": target,
            "probed": probed,
            "attempts": attempts,
            "last": last,
            "timeout": timeout,
            "summary": f"probed {probed} ({kind} readiness) {attempts} time(s) over {timeout:g}s; last answer: {last}",
            # The tail goes into operation evidence: an app that printed a secret it was given must not publish it.
            "log_tail": _redact(_tail(log_file), bound.values()),
            **retried,
        }
        self._terminate_now(alloc["id"], alloc["pid"], alloc["pid_start_time"])
        return self._move(alloc, "failed", health=health) or alloc

    def _served_by_another(self, alloc: dict[str, Any]) -> bool:
        """Whether the socket listening on the allocation's port belongs to a process outside it (the port was taken
        between its choice and the app's bind); unknown counts as no."""
        members = processes.allocation_processes(alloc["id"], alloc["pid"], alloc["pid_start_time"])
        return listener_owned(alloc["port"], processes.descendants([p.pid for p in members])) is False

    def _allocation_binds(self, environment_id: str, region_id: str) -> list[Bind]:
        """Rhone Local's own runtime services of the environment (SQLite files, spool directories) and its
        provisioned SQLite databases are the only parts of the data directory an allocation sees, at the paths their
        URLs name."""
        directories = (self.services_root / environment_id / region_id, self.databases_root / environment_id)
        return [Bind(d, str(d), writable=True) for d in directories if d.is_dir()]

    # -- stop -----------------------------------------------------------------------------------------------------
    def drain(
        self,
        alloc: dict[str, Any],
        reason: str,
        *,
        timeout: float | None = None,
        end_state: str = "stopped",
        note: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Take an allocation out of rotation now and let `tick()` end it: when its open connections close, or
        `timeout` seconds from now (default: its deployment's `[process] drain_timeout`). Never blocks. `note` is
        merged into its health (why it failed, when it is a failure)."""
        if timeout is None:
            deployment = self.store.deployment(alloc["deployment_id"])
            timeout = drain_timeout_of(deployment["config"] if deployment else {})
        while alloc is not None and alloc["state"] in LIVE_STATES and alloc["state"] != "draining":
            opened = self.open_connections(alloc["port"]) if alloc["port"] else 0
            deadline = time.time() + timeout
            drain = {"reason": reason, "timeout": timeout, "started_at": now_iso(), "deadline": iso_at(deadline)}
            health = {
                **(alloc["health"] or {}),
                **(note or {}),
                "ready": False,
                "drain": {**drain, "open_connections": opened},
            }
            moved = self._move(alloc, "draining", drain_deadline=deadline, end_state=end_state, health=health)
            if moved is not None:
                return moved
            alloc = self.store.allocation(alloc["id"])  # moved meanwhile (e.g. it just became ready): again
        return None

    def stop(self, alloc: dict[str, Any], reason: str) -> None:
        self.drain(alloc, reason)

    def tick(self) -> list[dict[str, Any]]:
        """Advance every draining allocation one step; returns those that ended (stopped or failed)."""
        ended = []
        now = time.time()
        for alloc in self.own_allocations_in("draining"):
            finished = self._advance_drain(alloc, now)
            if finished is not None:
                ended.append(finished)
        return ended

    def _advance_drain(self, alloc: dict[str, Any], now: float) -> dict[str, Any] | None:
        health = dict(alloc["health"] or {})
        drain = dict(health.get("drain") or {})
        members = processes.allocation_processes(alloc["id"], alloc["pid"], alloc["pid_start_time"])
        if alloc["terminating_since"] is None:
            opened = self.open_connections(alloc["port"]) if alloc["port"] and members else 0
            deadline = alloc["drain_deadline"] or now
            if opened and now < deadline:
                if opened != drain.get("open_connections"):
                    self._move(alloc, "draining", health={**health, "drain": {**drain, "open_connections": opened}})
                return None
            # Drained: every connection closed by itself; cut: the deadline came first, with these still open.
            drain.update(outcome="cut" if opened else "drained", open_connections=opened, cut_connections=opened)
            drain["signalled_at"] = now_iso()
            processes.signal_allocation(members, alloc["pid"], alloc["pid_start_time"], signal.SIGTERM)
            moved = self._move(alloc, "draining", terminating_since=now, health={**health, "drain": drain})
            if moved is None or members:
                return None
            alloc = moved
        elif members:
            if now - alloc["terminating_since"] < STOP_GRACE_SECONDS:
                return None
            # Ignored SIGTERM (or a child did) past the grace: nothing gets a second chance.
            processes.signal_allocation(members, alloc["pid"], alloc["pid_start_time"], signal.SIGKILL)
            if not drain.get("killed"):
                self._move(alloc, "draining", health={**health, "drain": {**drain, "killed": True}})
            return None
        if alloc["pid"]:
            processes.reap(alloc["pid"])
        ended = {**health, "drain": {**drain, "ended_at": now_iso()}, "stopped_because": drain.get("reason")}
        return self._move(alloc, alloc["end_state"] or "stopped", health=ended, drain_deadline=None)

    def _terminate_now(self, alloc_id: str, pid: int | None, pid_start: int | None, grace: float = STOP_GRACE_SECONDS):
        """Stop an allocation's processes and wait for them (a failed start, where nothing is left to drain)."""
        members = processes.allocation_processes(alloc_id, pid, pid_start)
        processes.signal_allocation(members, pid, pid_start, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while members and time.monotonic() < deadline:
            time.sleep(0.05)
            if pid:
                processes.reap(pid)
            members = processes.allocation_processes(alloc_id, pid, pid_start)
        if members:
            processes.signal_allocation(members, pid, pid_start, signal.SIGKILL)
        if pid:
            processes.reap(pid)

    def stop_superseded(self, deployment: dict[str, Any]) -> int:
        """Older validated previews of the same app environment drain once a newer one is ready (see
        `Store.superseded_previews` for what is never touched)."""
        older = self.store.superseded_previews(deployment)
        for alloc in older:
            with self._lock_for(alloc["deployment_id"], alloc["environment_id"]):
                self.drain(alloc, f"superseded by {deployment['id']}")
        return len(older)

    def stop_environment(self, deployment_id: str, environment_id: str, reason: str) -> list[dict[str, Any]]:
        """Drain a deployment's allocations in one environment (the previous route owner's, after a move); returns
        them as they started draining."""
        allocs = [
            a
            for a in self.allocations_of(deployment_id)
            if a["environment_id"] == environment_id and a["state"] in LIVE_STATES and a["state"] != "draining"
        ]
        return [d for d in (self.drain(a, reason) for a in allocs) if d is not None]

    def own_allocations_in(self, *states: str) -> list[dict[str, Any]]:
        """This node's allocations in one of `states`: the only ones whose processes this runner may signal."""
        return self.store.node_allocations_in(self.node, *states, unplaced=self.node == DEFAULT_NODE)

    def stop_all(self, reason: str, *, drain_seconds: float = SHUTDOWN_DRAIN_SECONDS) -> None:
        """Shutdown: nothing starts any more; every allocation of this node drains (for at most `drain_seconds`),
        then stops. Other nodes' allocations are theirs: stopping this node never stops them."""
        self.closing.set()
        for alloc in self.own_allocations_in(*LIVE_STATES):
            if alloc["state"] == "draining":
                if (alloc["drain_deadline"] or 0) > time.time() + drain_seconds:
                    self._move(alloc, "draining", drain_deadline=time.time() + drain_seconds)
                continue
            own = drain_timeout_of((self.store.deployment(alloc["deployment_id"]) or {}).get("config") or {})
            self.drain(alloc, reason, timeout=min(own, drain_seconds))
        deadline = time.monotonic() + drain_seconds + SHUTDOWN_GRACE_SECONDS + 2
        while self.own_allocations_in("draining") and time.monotonic() < deadline:
            self.tick()
            time.sleep(0.05)
        for alloc in self.own_allocations_in("draining"):  # past every bound: no process outlives the server
            members = processes.allocation_processes(alloc["id"], alloc["pid"], alloc["pid_start_time"])
            processes.signal_allocation(members, alloc["pid"], alloc["pid_start_time"], signal.SIGKILL)
            self._move(alloc, alloc["end_state"] or "stopped", health={**(alloc["health"] or {}), "killed": True})

    def hand_over(self) -> list[dict[str, Any]]:
        """A clean stop of this node while other runner nodes are live (docs/multi-node.md, "Nodes"): each ready
        instance of a route owner here first gets one replacement on a live runner node, and waits for it to be ready,
        so the edges always have a ready instance; `stop_all` drains the instances afterwards. Previews are not handed
        over (they drain as before). Bounded: each replacement's readiness timeout + HAND_OVER_MARGIN_SECONDS, all at
        once; one that fails, or no other live runner, leaves its instance to drain as before. The node must have left
        the cluster first, so that placement never picks it. Returns the replacements that became ready."""
        serving = [a for a in self.own_allocations_in("ready") if self._serves_route_owner(a)]
        if not serving:
            return []
        with ThreadPoolExecutor(max_workers=len(serving), thread_name_prefix="hand-over") as pool:
            replacements = list(pool.map(self._hand_over_one, serving))
        return [r for r in replacements if r is not None]

    def _serves_route_owner(self, alloc: dict[str, Any]) -> bool:
        owner = self.store.route_owner_of(alloc["environment_id"])
        return owner is not None and owner["deployment_id"] == alloc["deployment_id"]

    def _hand_over_one(self, alloc: dict[str, Any]) -> dict[str, Any] | None:
        try:
            (node,) = self._nodes_for(1)
            if node is None or node[0] == self.node:
                log.info("allocation %s: no other live runner node; it drains without a replacement", alloc["id"])
                return None
            deployment = self.store.deployment(alloc["deployment_id"])
            environment = self.store.environment_by_id(alloc["environment_id"])
            region = self.store.region(alloc["region_id"])
            cell = next((c for c in self.store.cells_of(alloc["region_id"]) if c["id"] == alloc["cell_id"]), None)
            if deployment is None or environment is None or region is None or cell is None:
                return None
            replacement, _ = self._new_allocation(deployment, environment, region=region, cell=cell, node=node)
            # The write transaction serializes this with every other placement: the leader's healing counts this
            # node's instances as live until they drain, and one already replaced elsewhere gets no second one.
            if not self.store.insert_hand_over(replacement, leaving_node=self.node, wanted=environment["instances"]):
                log.info("allocation %s: its environment already runs its instances elsewhere", alloc["id"])
                return None
            started = self._await_placed(replacement, deployment, handing_over=True)
            if started["state"] != "ready":
                why = (started["health"] or {}).get("error")
                log.warning("allocation %s: its replacement failed (%s); it drains anyway", alloc["id"], why)
                return None
            log.info("allocation %s: handed over to %s on node %s", alloc["id"], started["id"], node[0])
            return started
        except Exception:  # a stop must end: whatever went wrong, the instance drains as before
            log.exception("handing allocation %s over failed; it drains anyway", alloc["id"])
            return None
        finally:
            self.store.close()  # this thread's connection

    def abandon_processes(self) -> None:
        """This node's name was taken over after it lapsed: stop every process this runner started, at once, and
        leave the rows alone (they are the new holder's now; docs/multi-node.md, "Nodes"). Only processes that
        provably belong to an allocation, by pid and start time on this machine, are signalled."""
        self.closing.set()
        for alloc in self.own_allocations_in(*LIVE_STATES):
            members = processes.allocation_processes(alloc["id"], alloc["pid"], alloc["pid_start_time"])
            processes.signal_allocation(members, alloc["pid"], alloc["pid_start_time"], signal.SIGKILL)

    def check_processes(self) -> list[dict[str, Any]]:
        """Ready allocations whose process has gone are failed (their state, not the edge's luck, says so); what is
        left of them (a wrapper's orphaned children) is stopped by the drain."""
        gone = []
        for alloc in self.own_allocations_in("ready"):
            if processes.leader_alive(alloc["pid"], alloc["pid_start_time"]):
                continue
            note = {"error": "process exited", "at": now_iso()}
            drained = self.drain(alloc, "its process exited", timeout=0, end_state="failed", note=note)
            if drained is not None:
                gone.append(drained)
        return gone

    def reconcile(self) -> list[str]:
        """At start-up: adopt this node's allocation processes that survived a crash and still answer; stop the rest
        of this node's. Drains a crash interrupted go on (their deadline is on the row), now with no connection open:
        the edge died too. Other nodes' allocations are left alone."""
        adopted = []
        if not self.runs_processes:
            return adopted
        self.store.adopt_unplaced_allocations(self.node, self.address)  # rows from before nodes existed
        for alloc in self.own_allocations_in(*LIVE_STATES):
            if alloc["state"] == "draining":
                continue
            deployment = self.store.deployment(alloc["deployment_id"])
            kind, target = readiness_of(deployment["config"]["process"])
            alive = processes.leader_alive(alloc["pid"], alloc["pid_start_time"])
            if alloc["state"] == "ready" and alive and probe(alloc["port"], target, kind=kind)[0]:
                adopted.append(alloc["id"])
                continue
            self.drain(alloc, "Rhone Local restarted while it was not ready", timeout=0, end_state="failed")
        return adopted


def _redact(text: str, values: Any) -> str:
    for value in sorted((v for v in values if len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return text


def _digest(variables: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(variables.items())).encode()).hexdigest()


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
