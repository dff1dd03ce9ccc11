"""Workers: claim runnable operations with a lease and advance them one durable stage at a time.

A worker that crashes (or a server killed with -9) leaves its lease to expire; another worker — or the same server
after a restart — claims the operation and continues from the last recorded stage. Every stage is recorded with a
compare-and-swap on the operation's version and the worker's lease, so a late or stale worker changes nothing.
A stage's writes (inserting a project, moving a route) commit in the same transaction as the state change: a crash
leaves either both or neither, never a duplicate.

This is the one driver of every kind: what a stage does is the kind's `{state: handler}` registry
(rhone_local/operations/, docs/architecture.md "Operations"); leases, heartbeats, stale writes, failure recording
and the two pools are here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any

from rhone_local.domain.errors import NodeStopping, StageFailed, disk_full, is_disk_full
from rhone_local.domain.operations import MACHINES, NOT_RUNNABLE, KindStates
from rhone_local.nodes import DEFAULT_NODE
from rhone_local.notify import ChangeNotifier
from rhone_local.operations.kinds import Kind
from rhone_local.operations.registry import registry
from rhone_local.stopping import Deadline, join_all
from rhone_local.store import Store, StoreUnavailable

log = logging.getLogger("rhone_local.workers")


def _log_failure(error: BaseException, message: str, *args: Any) -> None:
    """A full disk is one warning line (the operator must free space; there is no bug to trace); anything else is
    logged with its traceback."""
    if is_disk_full(error):
        log.warning(message + ": the disk is full (%s)", *args, error)
    else:
        log.exception(message, *args)


class StaleWrite(Exception):
    """Our view of the operation is out of date (another worker moved it, or our lease expired)."""


# Three pools, so that nothing short waits behind something long (docs/architecture.md, "Worker pools"):
# - build: a deploy's cloning and building (up to the build timeout). A build worker that finishes a build drives its
#   deploy on to the end.
# - rollout: what starts allocations and waits for their readiness, which an app decides (up to its
#   readiness_timeout): promotions, rollbacks, scale, settings roll-outs, and a deploy resumed at validating by an
#   approval. Waiting costs a thread, not CPU, so this pool is the largest.
# - control: everything else (tenancy, bindings, runtime services, regions): quick, and never queued behind an app.
BUILD_POOL: tuple[KindStates, ...] = (("deploy", frozenset({"queued", "cloning", "building"})),)
ROLLOUT_POOL: tuple[KindStates, ...] = (
    ("deploy", frozenset({"validating"})),
    ("promote", None),
    ("rollback", None),
    ("scale", None),
    ("config.update", None),
)


class Workers:
    def __init__(
        self,
        store: Store,
        notifier: ChangeNotifier,
        *,
        count: int = 2,
        build_count: int = 2,
        rollout_count: int = 4,
        lease_seconds: float = 10.0,
        stage_delay: float | None = None,
        pipeline: Any = None,
        promotions: Any = None,
        topology: Any = None,
        kinds: dict[str, Kind] | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.pipeline = pipeline  # the deploy pipeline's stage effects (None: tenancy operations only)
        self.promotions = promotions  # promotion and rollback stage effects
        self.topology = topology  # binding, scale and region stage effects
        # Every kind's {state: handler} registry (rhone_local/operations/): what `step` runs.
        self.kinds = (
            kinds if kinds is not None else registry(store, pipeline=pipeline, promotions=promotions, topology=topology)
        )
        self.count = count  # control workers: everything outside BUILD_POOL and ROLLOUT_POOL
        self.build_count = build_count  # build workers: BUILD_POOL only
        self.rollout_count = rollout_count  # rollout workers: ROLLOUT_POOL only
        self.lease_seconds = lease_seconds
        # A test knob: slow every stage down so crash tests can catch operations mid-flight.
        self.stage_delay = (
            stage_delay if stage_delay is not None else float(os.environ.get("RHONE_LOCAL_STAGE_DELAY", "0") or 0)
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.node = DEFAULT_NODE  # the node these workers run on (server.wire)

    @property
    def owner_prefix(self) -> str:
        """This process's workers' lease owner names: `<node>/worker-<pid>-<pool>-<n>` (the node's own part first, so
        a start-up frees only its own node's leases)."""
        return f"{self.node}/worker-{os.getpid()}-"

    def start(self) -> None:
        recovered = self.store.release_leases_except(
            self.owner_prefix, node_prefix=f"{self.node}/", legacy=self.node == DEFAULT_NODE
        )
        if recovered:
            log.info("resuming %d operation(s) left leased by a previous server process", recovered)
        pools = (
            ("control", self.count, (), BUILD_POOL + ROLLOUT_POOL),
            ("build", self.build_count, BUILD_POOL, ()),
            ("rollout", self.rollout_count, ROLLOUT_POOL, ()),
        )
        for pool, size, within, outside in pools:
            for index in range(size):
                name = f"{self.owner_prefix}{pool}-{index}"
                thread = threading.Thread(target=self._run, args=(name, within, outside), name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    def request_stop(self) -> None:
        """No worker claims another operation; a stage under way finishes (or is taken up again after the next start:
        its operation's state is durable)."""
        self._stop.set()
        self.notifier.worker_wakeup.set()

    def join(self, deadline: Deadline) -> list[threading.Thread]:
        """Wait for every worker until `deadline`, together (not each); the ones still running then."""
        return join_all(self._threads, deadline)

    def stop(self, timeout: float = 5.0) -> None:
        self.request_stop()
        self.join(Deadline(timeout))

    def _run(self, name: str, within: tuple[KindStates, ...], outside: tuple[KindStates, ...]) -> None:
        try:
            while not self._stop.is_set():
                try:
                    op = self.store.claim_operation(
                        name, self.lease_seconds, NOT_RUNNABLE, within=within, outside=outside
                    )
                    if op is not None:
                        self.drive(op, name)
                        continue
                except Exception as error:  # noqa: BLE001 - logged; the worker outlives it (a full disk) and retries
                    _log_failure(error, "%s could not claim or release an operation", name)
                self.notifier.worker_wakeup.wait(0.5)
                self.notifier.worker_wakeup.clear()
        finally:
            self.store.close()

    def run_until_idle(self, worker: str, *, max_ops: int = 200) -> list[str]:
        """Claim and drive runnable operations in the calling thread until none is left (every pool); the ids
        driven, in order. For in-process use: the server's workers run in their own threads."""
        driven: list[str] = []
        for _ in range(max_ops):
            op = self.store.claim_operation(worker, self.lease_seconds, NOT_RUNNABLE)
            if op is None:
                return driven
            self.drive(op, worker)
            driven.append(op["id"])
        raise RuntimeError(f"operations still runnable after {max_ops} claims")

    def drive(self, op: dict[str, Any], worker: str) -> None:
        """Advance a claimed operation until it is terminal, or until a write turns out to be stale."""
        try:
            while op["state"] not in NOT_RUNNABLE and not self._stop.is_set():
                if self.stage_delay:
                    time.sleep(self.stage_delay)
                with self._heartbeat(op["id"], worker):
                    op = self.step(op, worker)
                self._notify(op["id"])
        except StaleWrite:
            log.info("stale write on %s by %s: dropped", op["id"], worker)
        except NodeStopping:  # the runner's or the engines'
            log.info("%s left in %s: Rhone Local is stopping; it resumes on the next start", op["id"], op["state"])
        except StoreUnavailable as error:
            # The database server went away for a moment (a restart): nothing of the stage was recorded, so it runs
            # again when the operation is claimed next, as after a crash — not a failure of the operation.
            log.warning("%s left in %s: the store is unavailable (%s); it resumes", op["id"], op["state"], error)
        except Exception as error:  # noqa: BLE001 - logged, and recorded as the operation's failure
            _log_failure(error, "operation %s crashed in %s", op["id"], op["state"])
            failed = self._record_crash(op, worker, error)
            if failed:
                self.notifier.changed(op["id"])
        finally:
            self.store.release_operation(op["id"], worker)

    def _record_crash(self, op: dict[str, Any], worker: str, error: Exception) -> dict[str, Any] | None:
        """The operation fails with internal_error (disk_full when that is why), like a failed stage: in its
        machine's failure state, with what that means for its object. None when even that cannot be written (the
        lease expires; a worker retries)."""
        crash = StageFailed("internal_error", "the worker crashed; see the server log")
        if is_disk_full(error):
            full = disk_full(self.store.path.parent)
            crash = StageFailed(full.code, full.message)
        try:
            return self._record_failure(op, crash, worker)
        except StaleWrite:
            return None
        except Exception as error:  # noqa: BLE001 - logged; the lease expires and a worker retries
            _log_failure(error, "recording the crash of %s failed", op["id"])
            return None

    def _record_failure(self, op: dict[str, Any], failure: Any, worker: str) -> dict:
        """Move `op` to its machine's failure state and record, in the same transaction, what the failure means for
        its object (its kind's `on_failure`: a binding's secrets dropped, a region disabled)."""
        kind = self.kinds.get(op["kind"])
        with self.store.write() as c:
            if kind is not None and kind.on_failure is not None:
                kind.on_failure(op, failure, c)
            updated = self.store.advance_operation(
                op,
                MACHINES[op["kind"]].failure if op["kind"] in MACHINES else "failed",
                evidence=failure.evidence or None,
                error={"code": failure.code, "message": failure.message},
                worker=worker,
                lease_seconds=self.lease_seconds,
                tx=c,
            )
            if updated is None:
                raise StaleWrite
        return updated

    def _notify(self, op_id: str) -> None:
        """Wake long-pollers. A failure here is logged, never turned into a failed operation: the stage is recorded."""
        try:
            self.notifier.changed(op_id)
        except Exception:
            log.exception("could not notify waiters of %s", op_id)

    @contextmanager
    def _heartbeat(self, op_id: str, worker: str):
        """Renew the lease while a long stage (a build, a readiness probe) runs, so no other worker takes over."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.lease_seconds / 3):
                # A failed renewal is logged and tried again next beat. A renewal refused (another worker holds the
                # lease, or it expired on the database's clock) means the lease is lost: the stage's write is refused
                # as stale (its effect rolls back) and the operation resumes wherever it is claimed next.
                try:
                    if not self.store.renew_lease(op_id, worker, self.lease_seconds):
                        log.warning("%s lost its lease on %s: the stage under way will not be recorded", worker, op_id)
                        break
                except Exception as error:  # noqa: BLE001
                    _log_failure(error, "renewing the lease of %s failed", op_id)
            self.store.close()

        thread = threading.Thread(target=beat, name=f"lease-{op_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def step(self, op: dict[str, Any], worker: str) -> dict[str, Any]:
        """Run the current stage's handler (its kind's registry) and record the state it reached, with the stage's
        writes, in one transaction; a `StageFailed` records the kind's failure state instead."""
        kind = self.kinds.get(op["kind"])
        handler = kind.handlers.get(op["state"]) if kind is not None else None
        if kind is None or handler is None:
            raise RuntimeError(f"{op['kind']} has no stage {op['state']!r}")
        try:
            advance = handler(op)
            if not kind.machine.allowed(op["state"], advance.state):
                raise RuntimeError(f"{op['kind']}: {op['state']} -> {advance.state} is not a transition of its machine")
            with self.store.write() as c:
                evidence = advance.evidence
                if advance.effect is not None:
                    evidence = {**evidence, **(advance.effect(c) or {})}
                updated = self.store.advance_operation(
                    op,
                    advance.state,
                    evidence=evidence,
                    error=advance.error,
                    worker=worker,
                    lease_seconds=self.lease_seconds,
                    tx=c,
                )
                if updated is None:
                    raise StaleWrite  # rolls the stage's writes back with the transaction
            return updated
        except StageFailed as failure:
            failed = self._record_failure(op, failure, worker)
            if kind.after_failure is not None:
                # Only once the failure is recorded (a stale worker raised above): e.g. no allocation outlives it.
                kind.after_failure(failed)
            return failed
