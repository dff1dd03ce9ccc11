"""The deploy pipeline's stage effects: cloning, building, validating.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rhone_local.artifacts import load_manifest, materialize, record_tree, store_manifest
from rhone_local.blobs import BlobStore
from rhone_local.domain import gates, limits
from rhone_local.domain.errors import DomainError, StageFailed, disk_full, is_disk_full
from rhone_local.domain.manifest import digest_of
from rhone_local.domain.urls import EdgeUrls
from rhone_local.engines import Engines
from rhone_local.provisioning import Provisioner
from rhone_local.runner import Runner
from rhone_local.sandbox import CACHE_ROOT, Bind, Sandbox, base_environment
from rhone_local.store import Store

LOG_TAIL_LINES = 30
NEARLY_FULL_BYTES = 1024 * 1024
DEFAULT_CACHE_LIMIT = 2 * 1024**3  # bytes of one app's build cache before it is cleared
UNSANDBOXED = Sandbox("none", reason="not configured")


@dataclass
class StageOutcome:
    state: str
    evidence: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    deployment: dict[str, Any] = field(default_factory=dict)  # columns to update on the deployment


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


def _kill_groups(*leaders: int | None) -> None:
    for leader in leaders:
        if leader:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(leader, signal.SIGKILL)


def tree_size(root: Path) -> int:
    """Bytes of the regular files under `root` (symlinks not followed)."""
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def build_key(config: dict[str, Any], sandbox_mode: str) -> str:
    """What decides a build's output besides its source: the command, output, include/exclude, and the build
    environment (the sandbox mode: an unsealed build sees other paths)."""
    build = config.get("build") or {}
    fields = {k: build.get(k) for k in ("command", "output", "include", "exclude")}
    return hashlib.sha256(json.dumps({**fields, "sandbox": sandbox_mode}, sort_keys=True).encode()).hexdigest()


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def not_ready_message(what: str, alloc: dict[str, Any]) -> str:
    """Why an allocation never became ready: what was probed and what answered, or why it did not start; the log
    tail is in the evidence, and `rhone logs` has all of it."""
    health = alloc["health"] or {}
    reason = health.get("summary") or health.get("error") or health.get("last") or alloc["state"]
    return (
        f"{what} never became ready: {reason}. Its last log lines are in the evidence; "
        f"`rhone logs {alloc['deployment_id']}` shows all of them"
    )


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
        sandbox: Sandbox = UNSANDBOXED,
        cache_limit: int = DEFAULT_CACHE_LIMIT,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.runner = runner
        self.data_dir = data_dir
        self.root = data_dir / "deployments"
        self.caches = data_dir / "caches"
        self.edge_port = edge_port
        self.edge_suffix = edge_suffix
        self.provisioner = Provisioner(data_dir)  # databases it creates for environments (see provisioning.py)
        self.engines = Engines(store, data_dir)  # Redis and NATS behind runtime services (see engines.py)
        runner.service_credentials = self.engines.credentials
        self.sandbox = sandbox
        self.cache_limit = cache_limit
        self.on_deploy_finished: Any = None  # called when a deployment reaches preview_ready (retention runs then)

    def workdir(self, deployment_id: str) -> Path:
        return self.root / deployment_id

    @property
    def urls(self) -> EdgeUrls:
        return EdgeUrls(self.edge_suffix, self.edge_port)

    def url(self, deployment_id: str) -> str:
        return self.urls.deployment(deployment_id)

    def outcome(self, deployment: dict[str, Any], stage: Callable[[], StageOutcome]) -> StageOutcome:
        """Run one of the deploy stages (operations/deploy.py names them): a failure it states, a domain error or a
        full disk becomes a `failed` outcome the deployment records."""
        try:
            return stage()
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
    def clone(self, deployment: dict[str, Any]) -> StageOutcome:
        manifest = load_manifest(self.blobs, deployment["source_digest"])
        if digest_of(manifest) != deployment["source_digest"]:
            raise StageFailed("digest_mismatch", "the stored source manifest does not match its digest")
        facts = materialize(self.blobs, manifest, self.workdir(deployment["id"]) / "source")
        return StageOutcome("building", {"source_digest": deployment["source_digest"], **facts})

    def _source_tree(self, deployment: dict[str, Any]) -> Path:
        """The deployment's source snapshot in this node's work directory. Cloning may have run on another node, one
        that died before building (docs/multi-node.md, "Failure behaviour"): the snapshot is then materialized here
        again from the blobs, verified as cloning verifies it."""
        source = self.workdir(deployment["id"]) / "source"
        if not source.is_dir():
            self.clone(deployment)
        return source

    # -- building ---------------------------------------------------------------------------------------------------
    def build(self, deployment: dict[str, Any], *, force: bool = False) -> StageOutcome:
        config = deployment["config"]
        work = self.workdir(deployment["id"])
        source = self._source_tree(deployment)
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
        if not force:
            reusable = self.reusable_build(deployment)
            if reusable is not None:
                manifest = load_manifest(self.blobs, reusable["artifact_digest"])
                facts = {"prebuilt": False, "reused": True, "reused_from": reusable["id"], "build_seconds": 0}
                return self._record_artifact(deployment, manifest, facts)
        build = work / "build"
        pid_file = work / "build.pid"
        _stop_leftover_build(pid_file, build)
        for directory in (build, work / "home"):
            if directory.exists():
                shutil.rmtree(directory)
        shutil.copytree(source, build, symlinks=True)
        log_path = work / "build.log"
        config_before = _sha256_file(build / "rhone.toml")
        command = config["build"].get("command")
        started = time.monotonic()
        cache_facts = self._run_build_command(deployment, command, work) if command else {}
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
        facts = {"prebuilt": False, "reused": False, "build_seconds": seconds, "log_tail": _tail(log_path, 10)}
        return self._record_artifact(deployment, manifest, {**facts, **cache_facts})

    def _run_build_command(self, deployment: dict[str, Any], command: str, work: Path) -> dict[str, Any]:
        """Run the build command in the sandbox, in `work/build` with the app's cache; its cache facts. Raises
        StageFailed when it times out or fails."""
        build, pid_file, log_path = work / "build", work / "build.pid", work / "build.log"
        timeout = limits.build_timeout(deployment["config"])
        cache = self.cache_dir(deployment["app_id"])
        (work / "home").mkdir()
        environment = {**base_environment(self.sandbox, build, home=work / "home", cache=cache), "RHONE_BUILD": "1"}
        with log_path.open("wb") as log:
            log.write(f"$ {command}\n".encode())
            log.flush()
            child, leader = self.sandbox.spawn(
                command, root=build, env=environment, log=log, binds=[Bind(cache, CACHE_ROOT, writable=True)],
                build=True,
            )  # fmt: skip
            # The build runs in its own session, so without a sandbox it outlives a server killed mid-build: the pid
            # file lets the restarted server's retry of this stage stop it (see _stop_leftover_build).
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
                # Whatever the build left running in its group (a daemon it forked) ends with the stage; in a sandbox
                # killing bubblewrap ends its whole pid namespace.
                _kill_groups(child.pid, leader)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=10)
                pid_file.unlink(missing_ok=True)
                cache_facts = self._bound_cache(cache, log)
        if status != 0 and _no_space_left(build):
            raise OSError(errno.ENOSPC, "the build filled the disk", str(build))
        if status != 0:
            raise StageFailed(
                "build_failed",
                f"the build command exited with status {status}",
                {"exit_status": status, "log_tail": _tail(log_path)},
            )
        return cache_facts

    # -- build caches and reuse ---------------------------------------------------------------------------------------
    def cache_dir(self, app_id: str) -> Path:
        """The app's dependency cache: shared by its builds, never part of an artifact (it is mounted at /cache)."""
        directory = self.caches / app_id
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _bound_cache(self, cache: Path, log: Any) -> dict[str, Any]:
        """Keep the cache under its limit: when a build left it larger, it is emptied (and the build log says so)."""
        size = tree_size(cache)
        if size <= self.cache_limit:
            return {"cache": {"bytes": size, "limit": self.cache_limit, "cleared": False}}
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        log.write(
            f"\n# rhone: the build cache holds {size} bytes, over its limit of {self.cache_limit}: cleared; the next "
            "build fills it again\n".encode()
        )
        log.flush()
        return {"cache": {"bytes": size, "limit": self.cache_limit, "cleared": True}}

    def reusable_build(self, deployment: dict[str, Any]) -> dict[str, Any] | None:
        """An earlier deployment of the app whose build had the same input (source digest) and the same build
        configuration, and whose artifact is still whole in the artifact store: its artifact is this one's."""
        key = build_key(deployment["config"], self.sandbox.mode)
        for candidate in self.store.built_deployments(deployment["app_id"], deployment["source_digest"], key):
            if candidate["id"] != deployment["id"] and self.artifact_intact(candidate["artifact_digest"]):
                return candidate
        return None

    def artifact_intact(self, digest: str) -> bool:
        """Whether the manifest and every file blob of an artifact are in the store (retention may remove them)."""
        if not self.blobs.has(digest):
            return False
        manifest = load_manifest(self.blobs, digest)
        return all(self.blobs.has("sha256:" + f["sha256"]) for f in manifest["files"] if "sha256" in f)

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
            self.store.record_artifact(
                c,
                digest,
                workspace_id=deployment["workspace_id"],
                app_id=deployment["app_id"],
                manifest=manifest,
                facts=facts,
            )
            if not build_facts.get("prebuilt"):
                self.store.record_build(c, deployment, build_key(config, self.sandbox.mode), digest)
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

    def vango_tree(self, deployment: dict[str, Any]) -> dict[str, Any]:
        """Where a deployment's generated Vango files are looked for: its artifact, then its source snapshot (a Go
        app compiles `*_gen.go` into its binary and need not ship the state files in its build output)."""
        files = {f["path"]: f for f in load_manifest(self.blobs, deployment["artifact_digest"])["files"]}
        with contextlib.suppress(OSError, ValueError, KeyError):
            for entry in load_manifest(self.blobs, deployment["source_digest"])["files"]:
                files.setdefault(entry["path"], entry)
        return {"files": list(files.values())}

    def evaluate_gates(self, deployment: dict[str, Any]) -> list[gates.GateResult]:
        config = deployment["config"]
        manifest = self.vango_tree(deployment)
        paths = {f["path"] for f in manifest["files"]}
        vango = gates.vango_files(config.get("vango", {}), paths)
        present = {}
        for key, path in vango.items():
            if path in paths:
                present[path] = self._artifact_json(manifest, path) if key != "routes" else True
        results = [gates.generated_artifacts(vango, present)]
        results[0].facts["generated_go"] = gates.generated_go(paths)[:20]
        results.extend(self._release_gates(deployment, manifest, vango))
        required = [name for name, p in (config.get("providers") or {}).items() if p.get("required", True)]
        results.append(gates.providers_bound(required, self.bound_providers(deployment["environment_id"])))
        return results

    def release_gates(self, deployment: dict[str, Any]) -> list[gates.GateResult]:
        """The state and database gates of `deployment` against what serves production now (promotion checks them
        again: production may have moved since the deployment was validated)."""
        manifest = self.vango_tree(deployment)
        paths = {f["path"] for f in manifest["files"]}
        vango = gates.vango_files(deployment["config"].get("vango", {}), paths)
        return self._release_gates(deployment, manifest, vango)

    def _release_gates(
        self, deployment: dict[str, Any], manifest: dict[str, Any], vango: dict[str, Any]
    ) -> list[gates.GateResult]:
        # Production's route owner (promotion establishes it): the artifact it serves and what it declared.
        owner = self.store.route_owner_named(deployment["app_id"], "production")
        serving_digest = owner["artifact_digest"] if owner else None
        serving_deployment = self.store.deployment(owner["deployment_id"]) if owner else None
        serving_manifest = self.vango_tree(serving_deployment) if serving_deployment else None
        return [
            self._state_impact(manifest, vango, serving_manifest, serving_deployment, serving_digest),
            self._db_impact(deployment, manifest, serving_deployment),
        ]

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
        serving_paths = {f["path"] for f in serving_manifest["files"]} if serving_manifest else set()
        production_vango = ((serving_deployment or {}).get("config", {}).get("vango")) or {}
        production_path = gates.vango_files(production_vango, serving_paths).get("state_schema")
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

    def validate(self, deployment: dict[str, Any]) -> StageOutcome:
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
        environment = self.store.environment_by_id(deployment["environment_id"])
        alloc = self.runner.ensure_running(deployment, environment)
        evidence["allocation"] = {
            "id": alloc["id"],
            "state": alloc["state"],
            "health": alloc["health"],
            "region_id": alloc["region_id"],
            "cell_id": alloc["cell_id"],
        }
        if alloc["state"] != "ready":
            raise StageFailed("readiness_failed", not_ready_message("the preview allocation", alloc), evidence)
        self.runner.stop_superseded(deployment)
        evidence["url"] = self.url(deployment["id"])
        if self.on_deploy_finished is not None:
            self.on_deploy_finished()
        return StageOutcome("preview_ready", evidence, deployment={"evidence": evidence})


def build_pipeline(
    store: Store,
    data_dir: Path,
    *,
    edge_port: int | None,
    edge_suffix: str = "localhost",
    app_databases: str | None = None,
    sandbox: Sandbox = UNSANDBOXED,
    cache_limit: int = DEFAULT_CACHE_LIMIT,
) -> DeployPipeline:
    blobs = BlobStore(data_dir / "blobs")
    pipeline = DeployPipeline(
        store,
        blobs,
        Runner(store, blobs, data_dir, sandbox=sandbox),
        data_dir,
        edge_port=edge_port,
        edge_suffix=edge_suffix,
        sandbox=sandbox,
        cache_limit=cache_limit,
    )
    pipeline.provisioner = Provisioner(data_dir, app_databases)
    return pipeline
