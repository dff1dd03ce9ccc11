"""The deploy pipeline's stage effects (domain.md §2.1): cloning, building, validating.

Workers call `DeployPipeline.run_stage(op, deployment)`; it performs the current stage's effect and returns the next
state with its evidence. It decides nothing itself that the domain core can decide (`domain/gates.py`), and it
records every gate's result before the deployment may become `preview_ready`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rhone_local.artifacts import load_manifest, materialize, record_tree, store_manifest
from rhone_local.blobs import BlobStore
from rhone_local.domain import gates, limits
from rhone_local.domain.errors import DomainError, disk_full, is_disk_full
from rhone_local.domain.manifest import digest_of
from rhone_local.runner import Runner
from rhone_local.store import Store, now_iso

LOG_TAIL_LINES = 30
NEARLY_FULL_BYTES = 1024 * 1024


@dataclass
class StageOutcome:
    state: str
    evidence: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    deployment: dict[str, Any] = field(default_factory=dict)  # columns to update on the deployment


class StageFailed(Exception):
    def __init__(self, code: str, message: str, evidence: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.evidence = code, message, evidence or {}


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _stop_leftover_build(pid_file: Path, build: Path) -> None:
    """Kill the process group of a build that a previous server started and never saw finish (it was killed while
    the build ran). The group is killed only if its leader is gone or still works in this deployment's build
    directory, so a reused pid is left alone."""
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except FileNotFoundError:
        cwd = None  # the leader is gone (a pid stays unused while its group has members), or there is no procfs
    except OSError:
        return
    if cwd is None or cwd == str(build) or cwd.startswith(f"{build} ") or cwd.startswith(f"{build}/"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def _no_space_left(directory: Path) -> bool:
    """Whether the file system of `directory` is (all but) full: a build that failed then most likely failed for
    that. "All but": the kernel keeps a few blocks it will not hand out, and the database needs room to record."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < max(NEARLY_FULL_BYTES, stats.f_blocks * stats.f_frsize // 100)


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


class DeployPipeline:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        runner: Runner,
        data_dir: Path,
        *,
        edge_port: int | None,
        edge_suffix: str = "localhost",
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.runner = runner
        self.data_dir = data_dir
        self.root = data_dir / "deployments"
        self.edge_port = edge_port
        self.edge_suffix = edge_suffix

    def workdir(self, deployment_id: str) -> Path:
        return self.root / deployment_id

    def url(self, deployment_id: str) -> str:
        port = f":{self.edge_port}" if self.edge_port and self.edge_port != 80 else ""
        return f"http://{deployment_id.replace('_', '-')}.{self.edge_suffix}{port}"

    def run_stage(self, op: dict[str, Any], deployment: dict[str, Any]) -> StageOutcome:
        try:
            if op["state"] == "queued":
                return StageOutcome("cloning")
            if op["state"] == "cloning":
                return self._clone(deployment)
            if op["state"] == "building":
                return self._build(deployment)
            if op["state"] == "validating":
                return self._validate(deployment)
        except StageFailed as failure:
            # The deployment keeps the failure's evidence (the log tail, the gates, the allocation's health): it is
            # what `rhone deploy` reports with the error and what `rhone deploy show` shows afterwards.
            return StageOutcome(
                "failed",
                failure.evidence,
                {"code": failure.code, "message": failure.message},
                deployment={"evidence": failure.evidence},
            )
        except DomainError as error:
            return StageOutcome("failed", {}, {"code": error.code, "message": error.message})
        except OSError as error:
            return self._storage_failure(deployment, error)
        raise RuntimeError(f"deploy has no stage {op['state']!r}")

    def _storage_failure(self, deployment: dict[str, Any], error: OSError) -> StageOutcome:
        """A full disk (or a name the file system refuses) fails the deployment with a code that says so."""
        if error.errno == errno.ENAMETOOLONG:
            message = f"a path of this deployment is too long for the file system: {error.filename}"
            return StageOutcome("failed", {}, {"code": "invalid_manifest", "message": message})
        if not is_disk_full(error):
            raise error
        work = self.workdir(deployment["id"])
        evidence = {"log_tail": _tail(work / "build.log")}
        # What the stage wrote is dropped (a retry starts it again): the space it frees lets the failure be recorded.
        for tree in ("source", "build"):
            shutil.rmtree(work / tree, ignore_errors=True)
        full = disk_full(self.data_dir)
        return StageOutcome(
            "failed", evidence, {"code": full.code, "message": full.message}, deployment={"evidence": evidence}
        )

    # -- cloning: the uploaded source snapshot, re-verified -----------------------------------------------------------
    def _clone(self, deployment: dict[str, Any]) -> StageOutcome:
        manifest = load_manifest(self.blobs, deployment["source_digest"])
        if digest_of(manifest) != deployment["source_digest"]:
            raise StageFailed("digest_mismatch", "the stored source manifest does not match its digest")
        facts = materialize(self.blobs, manifest, self.workdir(deployment["id"]) / "source")
        return StageOutcome("building", {"source_digest": deployment["source_digest"], **facts})

    # -- building ---------------------------------------------------------------------------------------------------
    def _build(self, deployment: dict[str, Any]) -> StageOutcome:
        config = deployment["config"]
        work = self.workdir(deployment["id"])
        source = work / "source"
        if deployment["prebuilt"]:
            # The upload is the artifact: its recomputed digest must be the one the client declared.
            manifest = record_tree(self.blobs, source)
            actual = digest_of(manifest)
            declared = (deployment["source"] or {}).get("artifact_digest") or deployment["source_digest"]
            if actual != declared:
                raise StageFailed(
                    "build_digest_mismatch",
                    f"build digest mismatch: the uploaded output hashes to {actual}, declared {declared}",
                    {"declared": declared, "actual": actual},
                )
            return self._record_artifact(deployment, manifest, {"prebuilt": True, "build_seconds": 0})
        build = work / "build"
        pid_file = work / "build.pid"
        _stop_leftover_build(pid_file, build)
        if build.exists():
            shutil.rmtree(build)
        shutil.copytree(source, build, symlinks=True)
        log_path = work / "build.log"
        config_before = _sha256_file(build / "rhone.toml")
        command = config["build"].get("command")
        started = time.monotonic()
        if command:
            timeout = limits.build_timeout(config)
            with log_path.open("wb") as log:
                log.write(f"$ {command}\n".encode())
                log.flush()
                child = subprocess.Popen(
                    command,
                    shell=True,
                    cwd=build,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(build), "RHONE_BUILD": "1"},
                )
                # The build runs in its own session, so it outlives a server killed mid-build: the pid file lets the
                # restarted server's retry of this stage stop it (see _stop_leftover_build).
                pid_file.write_text(f"{child.pid}\n")
                try:
                    status = child.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    raise StageFailed(
                        "build_timeout",
                        f"the build command ran past its {timeout:g}s timeout",
                        {"log_tail": _tail(log_path), "timeout": timeout},
                    ) from None
                finally:
                    # Whatever the build left running in its group (a daemon it forked) ends with the stage.
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(child.pid, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.wait(timeout=10)
                    pid_file.unlink(missing_ok=True)
            if status != 0 and _no_space_left(build):
                raise OSError(errno.ENOSPC, "the build filled the disk", str(build))
            if status != 0:
                raise StageFailed(
                    "build_failed",
                    f"the build command exited with status {status}",
                    {"exit_status": status, "log_tail": _tail(log_path)},
                )
        if _sha256_file(build / "rhone.toml") != config_before:
            raise StageFailed(
                "config_modified",
                "the build changed rhone.toml; it is human-authored and builds must never write it",
                {"log_tail": _tail(log_path)},
            )
        output = (build / config["build"].get("output", ".")).resolve()
        if not output.is_relative_to(build.resolve()) or not output.is_dir():
            raise StageFailed(
                "build_output_missing",
                f"the build output directory {config['build'].get('output')!r} does not exist",
                {"log_tail": _tail(log_path)},
            )
        manifest = record_tree(self.blobs, output)
        seconds = round(time.monotonic() - started, 3)
        return self._record_artifact(
            deployment, manifest, {"prebuilt": False, "build_seconds": seconds, "log_tail": _tail(log_path, 10)}
        )

    def _record_artifact(
        self, deployment: dict[str, Any], manifest: dict[str, Any], build_facts: dict[str, Any]
    ) -> StageOutcome:
        digest = store_manifest(self.blobs, manifest)
        config = deployment["config"]
        paths = {f["path"] for f in manifest["files"]}
        assets = [f for f in manifest["files"] if f["path"].startswith(("public/", "assets/", "static/"))]
        facts = {
            "vango": {k: v for k, v in config.get("vango", {}).items() if v},
            "routes": config.get("vango", {}).get("routes") if config.get("vango", {}).get("routes") in paths else None,
            "process": config["process"],
            "assets": {"files": len(assets), "bytes": sum(f["size"] for f in assets)},
            "source": {**(deployment["source"] or {}), "source_digest": deployment["source_digest"]},
            "files": len(manifest["files"]),
            "bytes": sum(f["size"] for f in manifest["files"]),
        }
        with self.store.write() as c:
            c.execute(
                "INSERT OR IGNORE INTO artifacts VALUES (?, ?, ?, ?, ?, ?)",
                (
                    digest,
                    deployment["workspace_id"],
                    deployment["app_id"],
                    json.dumps(manifest),
                    json.dumps(facts),
                    now_iso(),
                ),
            )
        evidence = {"artifact_digest": digest, **build_facts, "files": facts["files"], "bytes": facts["bytes"]}
        return StageOutcome("validating", evidence, deployment={"artifact_digest": digest})

    # -- validating: the four gates, then the preview allocation -------------------------------------------------------
    def _artifact_json(self, manifest: dict[str, Any], path: str | None) -> Any:
        if not path:
            return None
        entry = next((f for f in manifest["files"] if f["path"] == path), None)
        if entry is None:
            return None
        try:
            return json.loads(self.blobs.path("sha256:" + entry["sha256"]).read_bytes())
        except ValueError:
            return "unreadable"

    def evaluate_gates(self, deployment: dict[str, Any]) -> list[gates.GateResult]:
        config = deployment["config"]
        vango = config.get("vango", {})
        manifest = load_manifest(self.blobs, deployment["artifact_digest"])
        paths = [f["path"] for f in manifest["files"]]
        present = {}
        for key, path in vango.items():
            if path and path in paths:
                present[path] = self._artifact_json(manifest, path) if key != "routes" else True
        results = [gates.generated_artifacts({k: v for k, v in vango.items()}, present)]
        # Production's route owner (promotion establishes it): the artifact it serves and what it declared.
        owner = self.store.route_owner_named(deployment["app_id"], "production")
        serving_digest = owner["artifact_digest"] if owner else None
        serving_manifest = load_manifest(self.blobs, serving_digest) if serving_digest else None
        serving_deployment = self.store.deployment(owner["deployment_id"]) if owner else None
        results.append(self._state_impact(manifest, vango, serving_manifest, serving_deployment, serving_digest))
        results.append(self._db_impact(deployment, manifest, serving_deployment))
        required = [name for name, p in (config.get("providers") or {}).items() if p.get("required", True)]
        results.append(gates.providers_bound(required, self.bound_providers(deployment["environment_id"])))
        return results

    def _state_impact(
        self,
        manifest: dict[str, Any],
        vango: dict[str, Any],
        serving_manifest: dict[str, Any] | None,
        serving_deployment: dict[str, Any] | None,
        serving_digest: str | None,
    ) -> gates.GateResult:
        """Compare the state schema production carries — at the path production declared — with the candidate's:
        at the path the candidate declares, else at production's path. A candidate that drops its declaration or
        moves the file therefore cannot hide a schema change: with no schema found, it is cold."""
        declared = vango.get("state_schema")
        production_path = ((serving_deployment or {}).get("config", {}).get("vango") or {}).get("state_schema")
        serving_path = production_path or declared
        serving = self._artifact_json(serving_manifest, serving_path) if serving_manifest else None
        candidate_path = declared or serving_path
        candidate = self._artifact_json(manifest, candidate_path)
        return gates.state_impact(
            candidate if isinstance(candidate, dict) else None,
            serving if isinstance(serving, dict) else None,
            serving_digest=serving_digest,
            candidate_path=candidate_path if isinstance(candidate, dict) else None,
            serving_path=serving_path,
        )

    def _db_impact(
        self, deployment: dict[str, Any], manifest: dict[str, Any], serving: dict[str, Any] | None
    ) -> gates.GateResult:
        """New migrations: those the candidate carries — in its own migrations directory, production's, or any an
        applied migration came from — that production has not applied."""
        production = self.store.environment(deployment["app_id"], "production")
        environment_id = production["id"] if production else None
        directories = self.migration_directories(environment_id, deployment, serving)
        candidate = gates.migrations_in([f["path"] for f in manifest["files"]], directories)
        applied = self.applied_migrations(environment_id, serving, directories) if serving else None
        return gates.db_impact(
            sorted(candidate),
            sorted(applied) if applied is not None else None,
            declared=bool(directories),
            directories=sorted(directories),
        )

    # -- database migrations: what an artifact carries, what an environment applied -----------------------------------
    def migration_directories(self, environment_id: str | None, *deployments: dict[str, Any] | None) -> set[str]:
        """The migrations directories the deployments declare, and every one an applied migration was found in."""
        declared = {((d["config"].get("database") or {}).get("migrations")) for d in deployments if d}
        recorded = set(self.store.applied_migrations(environment_id).values()) if environment_id else set()
        return {d for d in declared if d} | recorded

    def migrations_of(self, deployment: dict[str, Any], directories: set[str]) -> dict[str, str]:
        """The migration files the deployment's artifact carries in `directories` (name -> directory)."""
        if not deployment.get("artifact_digest") or not directories:
            return {}
        manifest = load_manifest(self.blobs, deployment["artifact_digest"])
        return gates.migrations_in([f["path"] for f in manifest["files"]], directories)

    def applied_migrations(
        self, environment_id: str | None, owner: dict[str, Any] | None, directories: set[str]
    ) -> dict[str, str]:
        """What the environment applied: the recorded set, and what its current owner's artifact carries (an owner
        from before that record existed counts too)."""
        recorded = self.store.applied_migrations(environment_id) if environment_id else {}
        return {**(self.migrations_of(owner, directories) if owner else {}), **recorded}

    def unsafe_db_move(self, environment_id: str, target: dict[str, Any]) -> list[str]:
        """Migrations applied in the environment that `target`'s artifact lacks: moving the route onto it would run
        older code against a newer schema."""
        owner = self.store.route_owner(target["app_id"], environment_id)
        current = self.store.deployment(owner["deployment_id"]) if owner else None
        directories = self.migration_directories(environment_id, current, target)
        applied = self.applied_migrations(environment_id, current, directories)
        return sorted(set(applied) - set(self.migrations_of(target, directories)))

    def record_applied_migrations(self, c: Any, environment_id: str, owner: dict[str, Any], operation_id: str) -> None:
        """In the route move's transaction: the new owner's migrations join the environment's applied set."""
        directories = self.migration_directories(environment_id, owner)
        migrations = self.migrations_of(owner, directories)
        if migrations:
            self.store.record_applied_migrations(
                c, environment_id, migrations, deployment_id=owner["id"], operation_id=operation_id
            )

    def record_route_history_migrations(self) -> int:
        """Once, after an upgrade to schema 5: the applied set of every environment, from its route history."""
        owners = self.store.route_event_owners()
        with self.store.write() as c:
            for row in owners:
                owner = self.store.deployment(row["deployment_id"])
                if owner is not None:
                    self.record_applied_migrations(c, row["environment_id"], owner, row["operation_id"])
        return len(owners)

    def bound_providers(self, environment_id: str) -> list[str]:
        """Providers with a ready binding in the environment's primary region (where it serves from creation)."""
        return self.store.ready_providers(environment_id, self.store.primary_region()["id"])

    def _validate(self, deployment: dict[str, Any]) -> StageOutcome:
        results = self.evaluate_gates(deployment)
        approval = deployment["approval"] or {}
        verdict, reasons = gates.decide(
            results, ack_cold=bool(approval.get("ack_cold")), approved=bool(approval.get("approved_by"))
        )
        evidence = {"gates": [r.to_dict() for r in results], "approval": approval or None}
        if verdict == "fail":
            reason = reasons[0]
            raise StageFailed(
                "stale_artifacts" if reason.gate == "generated_artifacts" else f"{reason.gate}_failed",
                reason.summary,
                evidence,
            )
        if verdict == "block":
            # The code names what must happen next, most binding first: a missing binding cannot be approved away,
            # so it wins over a cold deploy (which needs --ack-cold), which wins over plain approval.
            blocking = {r.gate for r in reasons}
            code = next(
                code
                for gate, code in (
                    ("providers_bound", "binding_missing"),
                    ("state_impact", "cold_deploy_needs_approval"),
                    ("db_impact", "migration_needs_approval"),
                )
                if gate in blocking
            )
            message = "; ".join(r.summary for r in reasons)
            return StageOutcome(
                "blocked", evidence, {"code": code, "message": message}, deployment={"evidence": evidence}
            )
        # Every gate passed and is recorded: now the preview allocation, which must pass its readiness probe.
        environment = self.store.one("SELECT * FROM environments WHERE id = ?", deployment["environment_id"])
        alloc = self.runner.ensure_running(deployment, environment, token=partial(self.runtime_token, deployment))
        evidence["allocation"] = {
            "id": alloc["id"],
            "state": alloc["state"],
            "health": alloc["health"],
            "region_id": alloc["region_id"],
            "cell_id": alloc["cell_id"],
        }
        if alloc["state"] != "ready":
            raise StageFailed(
                "readiness_failed",
                f"the preview allocation never became ready: {(alloc['health'] or {}).get('last')}",
                evidence,
            )
        self.runner.stop_superseded(deployment)
        evidence["url"] = self.url(deployment["id"])
        return StageOutcome("preview_ready", evidence, deployment={"evidence": evidence})

    def restore_previews(self) -> list[str]:
        """After a restart: start again the newest preview_ready deployment of each app environment whose
        allocation did not survive (older ones were superseded and stay stopped)."""
        newest = self.store.all(
            "SELECT d.* FROM deployments d WHERE d.state = 'preview_ready' AND d.id = ("
            "  SELECT MAX(id) FROM deployments x WHERE x.app_id = d.app_id AND x.environment_id = d.environment_id "
            "  AND x.state = 'preview_ready')"
        )
        restarted = []
        # Route owners come back too: each owned environment gets its owner's allocation again.
        for owner in self.store.all("SELECT * FROM route_owners"):
            deployment = self.store.deployment(owner["deployment_id"])
            environment = self.store.one("SELECT * FROM environments WHERE id = ?", owner["environment_id"])
            live = [
                a
                for a in self.runner.allocations_of(deployment["id"])
                if a["state"] == "ready" and a["environment_id"] == environment["id"]
            ]
            if not live:
                self.runner.ensure_running(deployment, environment, token=partial(self.runtime_token, deployment))
                restarted.append(f"{owner['route_key']}@{deployment['id']}")
        for deployment in newest:
            live = [
                a
                for a in self.runner.allocations_of(deployment["id"])
                if a["state"] == "ready" and a["environment_id"] == deployment["environment_id"]
            ]
            if live:
                continue
            environment = self.store.one("SELECT * FROM environments WHERE id = ?", deployment["environment_id"])
            self.runner.ensure_running(deployment, environment, token=partial(self.runtime_token, deployment))
            restarted.append(deployment["id"])
        return restarted

    def runtime_token(self, deployment: dict[str, Any], allocation_id: str) -> str:
        """A fresh token for the app's runtime identity, handed to one allocation (never shown anywhere else). It is
        bound to that allocation: it stops working the moment the allocation leaves `ready` (see
        `Store.principal_for_token`)."""
        import secrets

        from rhone_local.domain.access import hash_token

        identity = self.store.one(
            "SELECT * FROM runtime_identities WHERE app_id = ? ORDER BY id LIMIT 1", deployment["app_id"]
        )
        secret = "rht_" + secrets.token_urlsafe(32)
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


def build_pipeline(
    store: Store, data_dir: Path, *, edge_port: int | None, edge_suffix: str = "localhost"
) -> DeployPipeline:
    blobs = BlobStore(data_dir / "blobs")
    return DeployPipeline(
        store, blobs, Runner(store, blobs, data_dir), data_dir, edge_port=edge_port, edge_suffix=edge_suffix
    )
