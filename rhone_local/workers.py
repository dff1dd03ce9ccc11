"""Workers: claim runnable operations with a lease and advance them one durable stage at a time.

A worker that crashes (or a server killed with -9) leaves its lease to expire; another worker — or the same server
after a restart — claims the operation and continues from the last recorded stage. Every stage is recorded with a
compare-and-swap on the operation's version and the worker's lease, so a late or stale worker changes nothing.
The effect of the final tenancy stage (inserting the resource) commits in the same transaction as the state
change: a crash leaves either both or neither, never a duplicate.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any

from rhone_local.domain.errors import DomainError, disk_full, is_disk_full
from rhone_local.domain.ids import new_id
from rhone_local.domain.operations import MACHINES, NOT_RUNNABLE
from rhone_local.notify import ChangeNotifier
from rhone_local.runner import RunnerStopping
from rhone_local.store import Store, now_iso

log = logging.getLogger("rhone_local.workers")

DEFAULT_ENVIRONMENTS = ("preview", "production")


def _log_failure(error: BaseException, message: str, *args: Any) -> None:
    """A full disk is one warning line (the operator must free space; there is no bug to trace); anything else is
    logged with its traceback."""
    if is_disk_full(error):
        log.warning(message + ": the disk is full (%s)", *args, error)
    else:
        log.exception(message, *args)


class StaleWrite(Exception):
    """Our view of the operation is out of date (another worker moved it, or our lease expired)."""


TOPOLOGY_KINDS = frozenset(
    {"binding.create", "binding.remove", "services.update", "scale", "region.enable", "config.update"}
)
# A deploy's cloning and building (up to the build timeout) are claimed by their own pool of workers; every other
# operation — tenancy, promotion, rollback, scale, bindings, regions, and a deploy resumed at validating by an
# approval — by the control pool, so none of them queues behind a build. A build worker that finishes a build
# drives its deploy on to the end.
BUILD_POOL = ("deploy", frozenset({"queued", "cloning", "building"}))
INSERT_ENVIRONMENT = (
    "INSERT INTO environments (id, workspace_id, app_id, name, approval_required, frozen, created_at, operation_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class Workers:
    def __init__(
        self,
        store: Store,
        notifier: ChangeNotifier,
        *,
        count: int = 2,
        build_count: int = 2,
        lease_seconds: float = 10.0,
        stage_delay: float | None = None,
        pipeline: Any = None,
        promotions: Any = None,
        topology: Any = None,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.pipeline = pipeline  # the deploy pipeline's stage effects (None: tenancy operations only)
        self.promotions = promotions  # promotion and rollback stage effects
        self.topology = topology  # binding, scale and region stage effects
        self.count = count  # control workers: everything outside BUILD_POOL
        self.build_count = build_count  # build workers: BUILD_POOL only
        self.lease_seconds = lease_seconds
        # A test knob: slow every stage down so crash tests can catch operations mid-flight.
        self.stage_delay = (
            stage_delay if stage_delay is not None else float(os.environ.get("RHONE_LOCAL_STAGE_DELAY", "0") or 0)
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def owner_prefix(self) -> str:
        return f"worker-{os.getpid()}-"

    def start(self) -> None:
        recovered = self.store.release_leases_except(self.owner_prefix)
        if recovered:
            log.info("resuming %d operation(s) left leased by a previous server process", recovered)
        for pool, size, outside in (("control", self.count, True), ("build", self.build_count, False)):
            for index in range(size):
                name = f"{self.owner_prefix}{pool}-{index}"
                thread = threading.Thread(target=self._run, args=(name, outside), name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.notifier.worker_wakeup.set()
        for thread in self._threads:
            thread.join(timeout)

    def _run(self, name: str, outside_build_pool: bool) -> None:
        try:
            while not self._stop.is_set():
                try:
                    op = self.store.claim_operation(
                        name, self.lease_seconds, NOT_RUNNABLE, pool=BUILD_POOL, outside_pool=outside_build_pool
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
        except RunnerStopping:
            log.info("%s left in %s: Rhone Local is stopping; it resumes on the next start", op["id"], op["state"])
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
        from rhone_local.pipeline import StageFailed

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
        """Move `op` to its machine's failure state and, for a binding, scale or region operation, record in the same
        transaction what the failure means for its object (a binding's secrets dropped, a region disabled)."""
        with self.store.write() as c:
            if op["kind"] in TOPOLOGY_KINDS and self.topology is not None:
                self.topology.failed(op, failure, c)
            updated = self.store.advance_operation(
                op,
                MACHINES[op["kind"]].failure if op["kind"] in MACHINES else "failed",
                evidence=failure.evidence or None,
                error={"code": failure.code, "message": failure.message},
                worker=worker,
                lease_seconds=self.lease_seconds,
                conn=c,
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
                # A failed renewal is logged and tried again next beat; a lease lost meanwhile makes the stage's
                # next write stale, never wrong.
                try:
                    self.store.renew_lease(op_id, worker, self.lease_seconds)
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
        """Perform the current stage's effect and record the next state."""
        if op["kind"] == "deploy":
            return self._deploy_step(op, worker)
        if op["kind"] in ("promote", "rollback"):
            return self._promotion_step(op, worker)
        if op["kind"] in TOPOLOGY_KINDS:
            return self._topology_step(op, worker)
        machine = MACHINES[op["kind"]]
        state = op["state"]
        try:
            if state == "queued":
                return self._record(op, "validating", worker)
            if state == "validating":
                evidence = self._validate(op)
                return self._record(op, machine.next_state(state), worker, evidence=evidence)
            if state == "applying":
                with self.store.write() as c:
                    evidence = self._apply(op, c)
                    updated = self.store.advance_operation(
                        op, "succeeded", evidence=evidence, worker=worker, lease_seconds=self.lease_seconds, conn=c
                    )
                    if updated is None:
                        raise StaleWrite  # rolls the effect back with the transaction
                return updated
        except DomainError as error:
            return self._record(op, "failed", worker, error={"code": error.code, "message": error.message})
        except sqlite3.IntegrityError:
            # Two operations raced for one name; validation passed for both, the unique index decided.
            error = {"code": "name_taken", "message": f"the name {op['params'].get('name')!r} is already taken"}
            return self._record(op, "failed", worker, error=error)
        raise RuntimeError(f"no stage handler for {op['kind']} in state {state}")

    def _promotion_step(self, op: dict[str, Any], worker: str) -> dict[str, Any]:
        from rhone_local.pipeline import StageFailed

        try:
            if op["state"] == "requested":
                return self._record(op, "policy_check", worker)
            if op["state"] == "policy_check":
                return self._record(op, "route_cas", worker, evidence=self.promotions.policy_check(op))
            if op["state"] == "route_cas":
                # Still ready? (A restart since policy_check may have lost the process; this may start it again.)
                self.promotions.ensure_target_ready(op)
                # The compare-and-swap, its event and the operation's next state commit together: a crash leaves
                # the route either unmoved (the stage runs again) or moved and recorded — never moved and unknown.
                with self.store.write() as c:
                    evidence = self.promotions.route_cas(op, c)
                    updated = self.store.advance_operation(
                        op,
                        "edge_propagating",
                        evidence=evidence,
                        worker=worker,
                        lease_seconds=self.lease_seconds,
                        conn=c,
                    )
                    if updated is None:
                        raise StaleWrite  # rolls the route move back with the transaction
                return updated
            if op["state"] == "edge_propagating":
                final = "rolled_back" if op["kind"] == "rollback" else "healthy"
                return self._record(op, final, worker, evidence=self.promotions.propagate(op))
        except StageFailed as failure:
            failed = self._record(
                op,
                "failed",
                worker,
                evidence=failure.evidence,
                error={"code": failure.code, "message": failure.message},
            )
            # Only once the failure is recorded (a stale worker raised above): no allocation outlives it.
            self.promotions.release(failed)
            return failed
        raise RuntimeError(f"{op['kind']} has no stage {op['state']!r}")

    def _topology_step(self, op: dict[str, Any], worker: str) -> dict[str, Any]:
        """Bindings, scale and regions: the stage's effect commits with the operation's next state."""
        from rhone_local.pipeline import StageFailed

        machine = MACHINES[op["kind"]]
        if op["state"] == "requested":
            return self._record(op, machine.next_state("requested"), worker)
        try:
            evidence, effect = self.topology.stage(op)
        except StageFailed as failure:
            return self._record_failure(op, failure, worker)
        with self.store.write() as c:
            if effect is not None:
                effect(c)
            updated = self.store.advance_operation(
                op,
                machine.next_state(op["state"]),
                evidence=evidence,
                worker=worker,
                lease_seconds=self.lease_seconds,
                conn=c,
            )
            if updated is None:
                raise StaleWrite  # rolls the effect back with the transaction
        return updated

    def _deploy_step(self, op: dict[str, Any], worker: str) -> dict[str, Any]:
        deployment = self.store.deployment(op["target_id"])
        outcome = self.pipeline.run_stage(op, deployment)
        if not MACHINES["deploy"].allowed(op["state"], outcome.state):
            raise RuntimeError(f"deploy: {op['state']} -> {outcome.state} is not a transition of its state machine")
        with self.store.write() as c:
            updated = self.store.advance_operation(
                op,
                outcome.state,
                evidence=outcome.evidence,
                error=outcome.error,
                worker=worker,
                lease_seconds=self.lease_seconds,
                conn=c,
            )
            if updated is None:
                raise StaleWrite
            self.store.update_deployment(c, deployment["id"], state=outcome.state, **outcome.deployment)
        return updated

    def _record(self, op: dict[str, Any], state: str | None, worker: str, **kwargs: Any) -> dict[str, Any]:
        assert state is not None
        if not MACHINES[op["kind"]].allowed(op["state"], state):
            raise RuntimeError(f"{op['kind']}: {op['state']} -> {state} is not a transition of its state machine")
        updated = self.store.advance_operation(op, state, worker=worker, lease_seconds=self.lease_seconds, **kwargs)
        if updated is None:
            raise StaleWrite
        return updated

    # -- stage effects -------------------------------------------------------------------------------------------
    def _validate(self, op: dict[str, Any]) -> dict[str, Any]:
        params = op["params"]
        store = self.store
        if op["kind"] == "project.create":
            taken = store.one(
                "SELECT id FROM projects WHERE workspace_id = ? AND name = ? AND id != ?",
                op["workspace_id"],
                params["name"],
                op["target_id"],
            )
            parent_ok = True
        elif op["kind"] == "app.create":
            # Unique in the workspace, not only the project: the name is the app's hostname.
            taken = store.app_named_elsewhere(op["workspace_id"], params["name"], exclude=op["target_id"])
            parent_ok = store.one("SELECT id FROM projects WHERE id = ?", params["project_id"]) is not None
        else:
            taken = store.one(
                "SELECT id FROM environments WHERE app_id = ? AND name = ? AND id != ?",
                params["app_id"],
                params["name"],
                op["target_id"],
            )
            parent_ok = store.app_by_id(params["app_id"]) is not None
        if not parent_ok:
            raise DomainError("parent_missing", "the parent resource no longer exists", 409)
        if taken:
            raise DomainError("name_taken", f"the name {params['name']!r} is already taken", 409)
        return {"name_available": True, "parent_exists": True}

    def _apply(self, op: dict[str, Any], c: Any) -> dict[str, Any]:
        params, ts, target = op["params"], now_iso(), op["target_id"]
        if op["kind"] == "project.create":
            c.execute(
                "INSERT INTO projects VALUES (?, ?, ?, ?, ?)",
                (target, op["workspace_id"], params["name"], ts, op["id"]),
            )
            return {"project_id": target}
        if op["kind"] == "app.create":
            # Checked again in this write transaction: two creates of one name in two projects both passed
            # validating, and only one may insert (there is no unique index: databases from before the rule may
            # hold such pairs already).
            if self.store.app_named_elsewhere(op["workspace_id"], params["name"], exclude=target, conn=c):
                raise DomainError(
                    "name_taken", f"the app name {params['name']!r} is already taken in the workspace", 409
                )
            c.execute(
                "INSERT INTO apps VALUES (?, ?, ?, ?, ?, ?)",
                (target, op["workspace_id"], params["project_id"], params["name"], ts, op["id"]),
            )
            environment_ids = {}
            policies = params.get("environments") or {}
            for name in [*DEFAULT_ENVIRONMENTS, *sorted(set(policies) - set(DEFAULT_ENVIRONMENTS))]:
                policy = policies.get(name, {})
                environment_ids[name] = new_id("environment")
                c.execute(
                    INSERT_ENVIRONMENT,
                    (
                        environment_ids[name],
                        op["workspace_id"],
                        target,
                        name,
                        int(bool(policy.get("approval_required"))),
                        int(bool(policy.get("frozen"))),
                        ts,
                        op["id"],
                    ),
                )
            identity = self.store.create_runtime_identity(c, op["workspace_id"], target)
            return {"app_id": target, "environment_ids": environment_ids, "runtime_identity_id": identity["id"]}
        c.execute(
            INSERT_ENVIRONMENT,
            (
                target,
                op["workspace_id"],
                params["app_id"],
                params["name"],
                int(bool(params.get("approval_required"))),
                int(bool(params.get("frozen"))),
                ts,
                op["id"],
            ),
        )
        return {"environment_id": target}
