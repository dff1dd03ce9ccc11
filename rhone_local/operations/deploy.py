"""Deploy (kind `deploy`): queued → cloning → building → validating → preview_ready; `blocked` parks a deploy whose
environment needs an approval (an approval resumes validating); any stage may end it `failed`. The stages run in
the deploy pipeline, injected at wiring (server.py); each outcome is recorded on the operation and on the
deployment in one transaction. `cloning` and `building` are claimed by the build pool (workers.py)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, Protocol

from rhone_local.blobs import BlobStore
from rhone_local.domain import manifest as manifests
from rhone_local.domain import settings as setting_rules
from rhone_local.domain.errors import conflict
from rhone_local.domain.ids import new_id
from rhone_local.operations.kinds import Advance, Kind
from rhone_local.operations.unit_of_work import Origin, start_operation
from rhone_local.store import Store, Tx, now_iso

KIND = "deploy"


# -- request time: what an upload must hold before a deploy is recorded --------------------------------------------
def check_upload(
    blobs: BlobStore, document: dict[str, Any], *, manifest_digest: str, prebuilt: bool, artifact_digest: str | None
) -> dict[str, Any]:
    """The validated manifest, once it hashes to `manifest_digest` and every blob it names is stored whole; the
    refusal otherwise."""
    manifest = manifests.validate(document)
    actual = manifests.digest_of(manifest)
    if actual != manifest_digest:
        raise conflict(
            "digest_mismatch",
            f"the manifest hashes to {actual}, not the declared {manifest_digest}",
            expected=manifest_digest,
            actual=actual,
        )
    missing = blobs.missing("sha256:" + f["sha256"] for f in manifest["files"])
    if missing:
        raise conflict(
            "blobs_missing",
            f"{len(missing)} blob(s) of the manifest were never uploaded",
            missing=missing[:50],
            count=len(missing),
        )
    wrong_sizes = blobs.wrong_sizes(manifest["files"])
    if wrong_sizes:
        first = wrong_sizes[0]
        raise conflict(
            "size_mismatch",
            f"{len(wrong_sizes)} manifest entr{'y' if len(wrong_sizes) == 1 else 'ies'} declare a size their blob does "
            f"not have ({first['path']}: declared {first['declared']}, stored {first['actual']} bytes)",
            entries=wrong_sizes[:50],
            count=len(wrong_sizes),
        )
    if prebuilt and artifact_digest and artifact_digest != manifest_digest:
        raise conflict(
            "build_digest_mismatch",
            f"build digest mismatch: declared {artifact_digest}, uploaded {manifest_digest}",
        )
    return manifest


def start_deploy(
    store: Store,
    c: Tx,
    origin: Origin,
    *,
    workspace_id: str,
    app_id: str,
    environment: dict[str, Any],
    environment_ref: str,
    manifest_digest: str,
    prebuilt: bool,
    force_build: bool,
    config: dict[str, Any],
    source: dict[str, Any],
) -> dict[str, Any]:
    """Record the deployment and its `deploy` operation. Checked inside the transaction (audited when refused): what
    the deploy needs from its environment is there now, so a build never runs for a deployment that cannot start."""
    _require_environment_ready(store, environment, config)
    deployment_id = new_id("deployment")
    op = start_operation(
        store,
        c,
        origin,
        workspace_id=workspace_id,
        kind=KIND,
        target_kind="deployment",
        target_id=deployment_id,
        params={
            "app_id": app_id,
            "environment": environment_ref,
            "source_digest": manifest_digest,
            "prebuilt": prebuilt,
            "force_build": force_build,
        },
    )
    store.insert_deployment(
        c,
        deployment_id=deployment_id,
        workspace_id=workspace_id,
        app_id=app_id,
        environment_id=environment["id"],
        operation_id=op["id"],
        prebuilt=prebuilt,
        source_digest=manifest_digest,
        config=config,
        source=source,
    )
    return op


def _require_environment_ready(store: Store, environment: dict, config: dict) -> None:
    """Refuse a deployment whose environment lacks a required provider binding or setting (exit 6 in the CLI)."""
    providers = [name for name, p in (config.get("providers") or {}).items() if p.get("required", True)]
    bound = store.ready_providers(environment["id"], store.primary_region()["id"])
    unbound = sorted(set(providers) - set(bound))
    if unbound:
        raise conflict(
            "binding_missing",
            f"{environment['name']} has no ready binding for provider(s) {', '.join(unbound)}: bind them first "
            f"(`rhone env bind {environment['name']} NAME --kind … --resource …`); nothing was built",
            providers=unbound,
        )
    missing = setting_rules.unmet(config, store.provided_names(environment["id"]))
    if missing:
        raise conflict(
            "setting_missing",
            f"{environment['name']} lacks required setting(s) {', '.join(missing)} (rhone.toml [env] required): set "
            f"them first (`rhone env set {environment['name']} NAME=VALUE`, or --secret NAME); nothing was built",
            settings=missing,
        )


class Outcome(Protocol):
    state: str
    evidence: dict[str, Any]
    error: dict[str, Any] | None
    deployment: dict[str, Any]  # columns to update on the deployment


class DeployStages(Protocol):
    """The deploy pipeline's stages (rhone_local/pipeline.py)."""

    def outcome(self, deployment: dict[str, Any], stage: Callable[[], Any]) -> Outcome: ...

    def clone(self, deployment: dict[str, Any]) -> Outcome: ...

    def build(self, deployment: dict[str, Any], *, force: bool = False) -> Outcome: ...

    def validate(self, deployment: dict[str, Any]) -> Outcome: ...


def kinds(store: Store, pipeline: DeployStages) -> dict[str, Kind]:
    def stage(run: Callable[[dict[str, Any], dict[str, Any]], Outcome]) -> Callable[[dict[str, Any]], Advance]:
        def handler(op: dict[str, Any]) -> Advance:
            deployment = store.deployment(op["target_id"])
            outcome = pipeline.outcome(deployment, lambda: run(op, deployment))

            def effect(c: Tx) -> None:
                store.update_deployment(c, deployment["id"], state=outcome.state, **outcome.deployment)

            return Advance(outcome.state, outcome.evidence, outcome.error, effect)

        return handler

    def queued(op: dict[str, Any], deployment: dict[str, Any]) -> Outcome:
        return SimpleNamespace(state="cloning", evidence={}, error=None, deployment={})  # nothing to do but move on

    def building(op: dict[str, Any], deployment: dict[str, Any]) -> Outcome:
        return pipeline.build(deployment, force=bool(op["params"].get("force_build")))

    handlers = {
        "queued": stage(queued),
        "cloning": stage(lambda op, deployment: pipeline.clone(deployment)),
        "building": stage(building),
        "validating": stage(lambda op, deployment: pipeline.validate(deployment)),
    }
    return {KIND: Kind(KIND, handlers)}


def approval(deployment: dict[str, Any], approved_by: str, *, ack_cold: bool) -> dict[str, Any]:
    """The approval record for a blocked deployment, or the `DomainError` saying why it cannot be approved.

    A missing provider binding is never approved away; a cold deploy (state impact) needs its explicit ack.
    """
    if deployment["state"] != "blocked":
        raise conflict("not_blocked", f"deployment {deployment['id']} is {deployment['state']}, not blocked")
    gates = (deployment["evidence"] or {}).get("gates", [])
    blocking = {g["gate"] for g in gates if g["outcome"] == "block"}
    if "providers_bound" in blocking:
        raise conflict("binding_missing", "missing provider bindings cannot be approved away; bind them first")
    if "state_impact" in blocking and not ack_cold:
        raise conflict(
            "ack_cold_required",
            "this is a cold deploy: live sessions will refresh instead of resuming; "
            "approve with --ack-cold to acknowledge it",
        )
    return {"approved_by": approved_by, "approved_at": now_iso(), "ack_cold": ack_cold, "gates": sorted(blocking)}


def approve(store: Store, c: Tx, deployment: dict[str, Any], approval: dict[str, Any]) -> dict[str, Any]:
    """Resume the blocked deploy operation with `approval` inside `c`; returns the resumed operation."""
    op = store.operation(deployment["operation_id"])
    resumed = store.advance_operation(op, "validating", evidence={"approval": approval}, tx=c)
    if resumed is None or op["state"] != "blocked":
        raise conflict("not_blocked", "the deployment changed while being approved; look again")
    store.update_deployment(c, deployment["id"], state="validating", approval=approval)
    return resumed
