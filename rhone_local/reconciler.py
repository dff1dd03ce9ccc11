"""The reconciler: a loop in Rhone Local that keeps running allocations at what the store says they should be.

Level-triggered (it reads the store each round and acts on the difference, so a restart loses nothing):
- drains advance: a draining allocation ends once its connections closed or its durable deadline passed;
- an allocation whose process died is failed at once (the edge stops choosing it), and what is left of its
  processes is stopped;
- liveness: every ready allocation is probed (its readiness probe, and its leader must not be stopped, e.g. by
  SIGSTOP: a stopped process still accepts connections it never answers); after `LIVENESS_FAILURES` failures in a
  row it leaves rotation and is replaced;
- healing: each route owner runs its environment's instance count (`environments.instances`, set by scale); a
  missing instance is replaced, with exponential backoff after quick failures, and after `CRASH_LOOP_FAILURES` of
  them the environment is marked crash-looping (`rhone app allocations` shows it with the last failed allocation).
  This is also how `rhone local up` brings every environment back at its count;
- strays: a ready allocation that no route, lane or live promotion claims any more is drained;
- log checkpoints: when each live allocation's log grew (what `rhone logs --since` reads);
- nodes (docs/multi-node.md, "Nodes"): the first four concern this node's own processes only, and run on a node with
  the runner role, which also starts the allocations other nodes' workers placed on it. Healing, strays and
  replacing a lapsed node's allocations concern the whole cluster: they run on a node with the worker role, and only
  on the live worker node first by name, so two nodes never heal the same environment at once.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rhone_local import app_logs, processes
from rhone_local.runner import LIVE_STATES, probe, readiness_of
from rhone_local.stopping import Deadline, join_all
from rhone_local.store import STORAGE_ERRORS, Store, now_iso

log = logging.getLogger("rhone_local.reconciler")

TICK_SECONDS = 0.2
LIVENESS_SECONDS = 1.0
LIVENESS_TIMEOUT = 1.0
LIVENESS_FAILURES = 3
QUICK_FAILURE_SECONDS = 60.0  # an instance that failed sooner than this after it started counts toward a crash loop
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 60.0
CRASH_LOOP_FAILURES = 5


def backoff(failures: int) -> float:
    """Seconds before the next replacement after `failures` quick failures in a row: the first is immediate."""
    if failures <= 1:
        return 0.0
    return min(BACKOFF_BASE_SECONDS * 2 ** (failures - 2), BACKOFF_MAX_SECONDS)


class Reconciler:
    def __init__(self, store: Store, pipeline: Any, *, heals: bool = True) -> None:
        self.store = store
        self.heals = heals  # this node has the worker role: it may take the cluster's share of the rounds
        self.pipeline = pipeline
        self.runner = pipeline.runner
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._misses: dict[str, int] = {}  # allocation id → liveness failures in a row
        self._last_liveness = 0.0
        self._healing: dict[str, threading.Thread] = {}  # environment id → its replacement under way

    # -- the loop --------------------------------------------------------------------------------------------------
    def restore_previews(self) -> list[str]:
        """After a restart: start again the newest preview_ready deployment of each app environment whose
        allocation did not survive (older ones were superseded and stay stopped). Route owners come back through
        healing, at their environment's instance count."""
        restarted = []
        for deployment in self.store.newest_previews():
            live = [
                a
                for a in self.runner.allocations_of(deployment["id"])
                if a["state"] == "ready" and a["environment_id"] == deployment["environment_id"]
            ]
            if live or self.store.route_owner(deployment["app_id"], deployment["environment_id"]):
                continue
            environment = self.store.environment_by_id(deployment["environment_id"])
            self.runner.ensure_running(deployment, environment)
            restarted.append(deployment["id"])
        return restarted

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """No further round; a replacement under way finishes."""
        self._stop.set()

    def join(self, deadline: Deadline) -> list[threading.Thread]:
        """Wait for the loop, then its healing threads (the loop starts them), until `deadline`; the ones still
        running then."""
        left = join_all([self._thread], deadline)
        return left + join_all(list(self._healing.values()), deadline)

    def stop(self, timeout: float = 5.0) -> None:
        self.request_stop()
        self.join(Deadline(timeout))

    def _loop(self) -> None:
        try:
            while not self._stop.wait(TICK_SECONDS):
                try:
                    self.round()
                except STORAGE_ERRORS as error:  # a full disk, a busy or restarting database: the next round retries
                    log.warning("reconciling allocations: the store refused (%s); retrying", error)
                except Exception:
                    log.exception("reconciling allocations failed; retrying")
        finally:
            self.store.close()

    def round(self) -> None:
        """One pass over everything (tests call it directly)."""
        if self.runner.runs_processes:
            self.own_round()
        if self.heals and not self.runner.closing.is_set() and self.leads():
            self.replace_lapsed()
            self.drain_strays()
            self.heal()

    def own_round(self) -> None:
        """This node's processes: drains, exits, liveness, log checkpoints, and allocations placed here."""
        for alloc in self.runner.tick():
            log.info("allocation %s %s: %s", alloc["id"], alloc["state"], (alloc["health"] or {}).get("drain"))
        for alloc in self.runner.check_processes():
            log.warning("allocation %s: its process exited; marked failed", alloc["id"])
            self._count_failure(alloc)
        if time.monotonic() - self._last_liveness >= LIVENESS_SECONDS:
            self._last_liveness = time.monotonic()
            self.check_liveness()
            for alloc in self.runner.own_allocations_in(*LIVE_STATES):  # when each log grew: what `--since` reads
                app_logs.note_checkpoint(self.runner.log_path(alloc["id"]))
        self.runner.start_placed()

    def leads(self) -> bool:
        """Whether this node takes the cluster's share: it is the live worker node first by name (or no worker node
        is registered: a control plane that never joined a cluster)."""
        workers = self.store.live_nodes("worker", self.runner.lapse)
        return not workers or workers[0]["name"] == self.runner.node

    # -- lapsed nodes ----------------------------------------------------------------------------------------------
    def replace_lapsed(self) -> list[dict[str, Any]]:
        """Take the allocations of nodes whose heartbeat lapsed out of rotation (draining, to end as failed): healing
        then starts their environments' instances on live runner nodes. A lapsed node that comes back finds them
        draining and stops their processes itself (only it can signal them). This node is never lapsed to itself:
        a reconciler that runs is alive (a stalled heartbeat, a laptop waking up, must not stop its own apps)."""
        taken = []
        for alloc in self.store.lapsed_node_allocations(self.runner.lapse):
            if alloc["node"] == self.runner.node:
                continue
            reason = f"its node {alloc['node']} lapsed: replaced on a live node"
            note = {"error": f"node {alloc['node']} lapsed", "at": now_iso()}
            drained = self.runner.drain(alloc, reason, timeout=0, end_state="failed", note=note)
            if drained is not None:
                log.warning("allocation %s: %s", alloc["id"], reason)
                taken.append(drained)
        return taken

    # -- liveness --------------------------------------------------------------------------------------------------
    def check_liveness(self) -> None:
        ready = self.runner.own_allocations_in("ready")
        if not ready:
            self._misses.clear()
            return
        with ThreadPoolExecutor(max_workers=min(8, len(ready)), thread_name_prefix="liveness") as pool:
            verdicts = list(pool.map(self._live, ready))
        self._misses = {a["id"]: self._misses.get(a["id"], 0) for a in ready}  # forget allocations that left
        for alloc, (ok, answer) in zip(ready, verdicts, strict=True):
            if ok:
                self._misses[alloc["id"]] = 0
                continue
            self._misses[alloc["id"]] += 1
            if self._misses[alloc["id"]] < LIVENESS_FAILURES:
                continue
            note = {"error": f"liveness probe failed {LIVENESS_FAILURES} times: {answer}"}
            drained = self.runner.drain(alloc, "unresponsive", timeout=0, end_state="failed", note=note)
            if drained is not None:
                log.warning("allocation %s is unresponsive (%s): out of rotation, replaced", alloc["id"], answer)
                self._count_failure(drained)
            self._misses.pop(alloc["id"], None)

    def _live(self, alloc: dict[str, Any]) -> tuple[bool, str]:
        try:
            if processes.leader_stopped(alloc["pid"], alloc["pid_start_time"]):
                return False, "the process is stopped (SIGSTOP)"
            deployment = self.store.deployment(alloc["deployment_id"])
            kind, target = readiness_of(deployment["config"]["process"])
            return probe(alloc["port"], target, timeout=LIVENESS_TIMEOUT, kind=kind)
        finally:
            self.store.close()  # this thread's connection

    # -- healing ---------------------------------------------------------------------------------------------------
    def _count_failure(self, alloc: dict[str, Any]) -> None:
        """Record a route owner's instance failure toward its environment's backoff and crash-loop marker."""
        owner = self.store.route_owner_of(alloc["environment_id"])
        if owner is None or owner["deployment_id"] != alloc["deployment_id"]:
            return
        heal = self.store.heal_state(alloc["environment_id"])
        quick = _age(alloc) < QUICK_FAILURE_SECONDS
        failures = heal["failures"] + 1 if quick else 1
        self._record(alloc["environment_id"], failures, alloc, (alloc["health"] or {}).get("error"))

    def _record(self, environment_id: str, failures: int, alloc: dict[str, Any] | None, error: str | None) -> None:
        crash_loop = failures >= CRASH_LOOP_FAILURES
        self.store.record_heal(
            environment_id,
            failures=failures,
            next_attempt_at=time.time() + backoff(failures),
            crash_loop=crash_loop,
            last_allocation_id=alloc["id"] if alloc else None,
            last_error=error,
        )
        if alloc is not None and crash_loop:
            self.store.mark_crash_loop(alloc["id"], failures, backoff(failures))

    def heal(self) -> None:
        for environment in self.store.route_owned_environments():
            env_id = environment["id"]
            running = self._healing.get(env_id)
            if running is not None and running.is_alive():
                continue
            if environment["instances"] < 1 or self.store.scaling(env_id):
                continue  # a scale converges the instances itself
            live = [
                a
                for a in self.store.allocations_of(environment["owner_deployment_id"])
                if a["environment_id"] == env_id and a["state"] in ("planned", "pulling", "starting", "ready")
            ]
            heal = self.store.heal_state(env_id)
            if len(live) >= environment["instances"]:
                if heal["failures"] and all(_age(a) >= QUICK_FAILURE_SECONDS for a in live if a["state"] == "ready"):
                    self._record(env_id, 0, None, None)  # stable again: the next failure starts a fresh count
                continue
            if time.time() < heal["next_attempt_at"]:
                continue
            thread = threading.Thread(target=self._replace, args=(environment,), name=f"heal-{env_id}", daemon=True)
            self._healing[env_id] = thread
            thread.start()

    def _replace(self, environment: dict[str, Any]) -> None:
        from rhone_local.operations.placement import serving_regions

        try:
            deployment = self.store.deployment(environment["owner_deployment_id"])
            regions = serving_regions(self.store, environment, deployment["config"])[0]
            allocations = self.runner.ensure_instances(
                deployment,
                environment,
                environment["instances"],
                regions=regions,
            )
            failed = [a for a in allocations if a["state"] == "failed"]
            if failed:
                log.warning("replacing %s's instance failed: %s", environment["name"], failed[0]["health"])
                heal = self.store.heal_state(environment["id"])
                self._record(
                    environment["id"], heal["failures"] + 1, failed[0], (failed[0]["health"] or {}).get("last")
                )
            else:
                # Serving again: no longer crash-looping (the failure count stays until it has been stable a while,
                # so a relapse backs off from where it was).
                self.store.end_crash_loop(environment["id"])
                log.info(
                    "%s: %d instance(s) of %s running again", environment["name"], len(allocations), deployment["id"]
                )
        except Exception:
            if not self.runner.closing.is_set():
                log.exception("healing %s failed", environment["id"])
        finally:
            self.store.close()

    # -- strays ----------------------------------------------------------------------------------------------------
    def drain_strays(self) -> None:
        for alloc in self.store.stray_allocations():
            with self.runner._lock_for(alloc["deployment_id"], alloc["environment_id"]):
                current = self.store.allocation(alloc["id"])
                if (
                    current is not None
                    and current["state"] == "ready"
                    and current["id"] in {s["id"] for s in self.store.stray_allocations()}
                ):
                    log.info("allocation %s serves no route or lane any more: draining it", alloc["id"])
                    self.runner.drain(current, "no route, lane or promotion claims it")


def _age(alloc: dict[str, Any]) -> float:
    from datetime import datetime

    created = datetime.fromisoformat(alloc["created_at"].replace("Z", "+00:00"))
    return time.time() - created.timestamp()
