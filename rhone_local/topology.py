"""The stage effects of binding, scale and region operations.

Each stage handler returns `(evidence, effect)`: the worker runs `effect(conn)` (a short write, or None) in the same
transaction as the operation's next state, so a binding becomes ready exactly when its operation says `bound`, and a
stale worker's effect rolls back with its rejected write. A handler that cannot pass its gate raises `StageFailed`
with the gate's code; the kind's `on_failure` (rhone_local/operations/) then records what the failure means for the
object (a binding `failed`, a region `disabled` with its reason), again in the transaction that records the
operation's failure. Each kind's registry (`rhone_local/operations/<kind>.py`) names which method runs which stage.

The rules themselves are pure functions in `domain/topology.py`; this module gathers the facts they need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rhone_local.artifacts import load_manifest
from rhone_local.domain import topology as rules
from rhone_local.domain.errors import DomainError, StageFailed
from rhone_local.engines import SERVES as ENGINE_SERVES
from rhone_local.engines import EngineUnavailable, Lane
from rhone_local.operations.placement import (
    listed,
    missing_for_scale,
    provisioning_failure,
    services_failure,
    serving_regions,
    sharing_refusal,
)
from rhone_local.pipeline import DeployPipeline, not_ready_message
from rhone_local.provisioning import local_service
from rhone_local.store import Store, Tx

Effect = Callable[[Tx], None] | None
SESSION_STORE_NAME = "_session"  # the provisioned database of a SQL session store (never a provider's name)


class Topology:
    def __init__(self, store: Store, pipeline: DeployPipeline) -> None:
        self.store = store
        self.pipeline = pipeline
        self.services_root = pipeline.data_dir / "services"

    # -- provider bindings ---------------------------------------------------------------------------------------
    def bind_provider(self, op: dict[str, Any]) -> tuple[dict[str, Any], Effect]:
        binding = self.store.provider_binding(op["params"]["binding_id"])
        if binding is None or binding["state"] != "binding":
            raise StageFailed("binding_gone", "the binding this operation creates no longer exists")
        environment = self.store.environment_by_id(binding["environment_id"])
        spec = rules.BindingSpec(
            environment["name"], binding["resource"], bool(binding["mutable"]), bool(binding["shared_read_only"])
        )
        conflict = sharing_refusal(self.store, spec, exclude=binding["id"])
        if conflict is not None:
            raise StageFailed("shared_mutable_resource", conflict)

        provisioned = self._provision(op, binding)

        def effect(c: Tx) -> None:
            if provisioned is not None:
                plan, url = provisioned
                self.store.record_provisioned(c, binding["environment_id"], binding["name"], plan)
                self.store.add_binding_secrets(c, binding["id"], dict.fromkeys(op["params"]["secrets"], url))
            self.store.finish_binding(c, binding["id"])

        evidence = {
            "binding_id": binding["id"],
            "name": binding["name"],
            "region": binding["region"],
            "secrets": op["params"]["secrets"] if provisioned else self.store.secret_names(binding["id"]),  # names
            "shared_with": [],
        }
        if provisioned is not None:
            evidence["provisioned"] = {"kind": provisioned[0].kind, "resource": provisioned[0].resource}
        return evidence, effect

    def _provision(self, op: dict[str, Any], binding: dict[str, Any]) -> tuple[Any, str] | None:
        """Create (or find again) the environment's database for a --provision binding: its plan and URL."""
        kind = op["params"].get("provision")
        if not kind:
            return None
        provisioner = self.pipeline.provisioner
        try:
            plan = provisioner.plan(binding["environment_id"], binding["name"], kind)
            return plan, provisioner.provision(plan)
        except DomainError as error:
            raise StageFailed(error.code, error.message) from None

    def unbind_provider(self, op: dict[str, Any]) -> tuple[dict[str, Any], Effect]:
        params = op["params"]
        binding_id = params["binding_id"]
        deleted = None
        provisioned = self.store.provisioned(params["environment_id"], params["name"])
        if params.get("delete_data") and provisioned is not None:
            try:
                self.pipeline.provisioner.delete(provisioned["kind"], provisioned["location"], provisioned["role"])
            except DomainError as error:
                raise StageFailed(error.code, error.message) from None
            deleted = provisioned["kind"]

        def effect(c: Tx) -> None:
            if deleted:
                self.store.forget_provisioned(c, params["environment_id"], params["name"])
            self.store.finish_unbinding(c, binding_id)

        evidence = {"binding_id": binding_id, "note": "running allocations keep their variables until they restart"}
        if provisioned is not None:
            evidence["data"] = f"deleted ({deleted})" if deleted else "kept: bind again with --provision to use it"
        return evidence, effect

    # -- runtime services ----------------------------------------------------------------------------------------
    def bind_services(self, op: dict[str, Any]) -> tuple[dict[str, Any], Effect]:
        params = op["params"]
        environment_id, region_id = params["environment_id"], params["region_id"]
        endpoints: dict[str, tuple[str, str]] = {}  # service → (what serves it, the URL allocations receive)
        for service in params["bind"]:
            provider = rules.service_engine(service, params.get("provider", "local"))
            endpoints[service] = (provider, self.service_endpoint(environment_id, region_id, service, provider))

        def effect(c: Tx) -> None:
            self.store.replace_service_bindings(
                c,
                workspace_id=op["workspace_id"],
                environment_id=environment_id,
                region_id=region_id,
                unbind=params["unbind"],
                bind=endpoints,
                operation_id=op["id"],
            )

        evidence = {
            "bound": sorted(endpoints),
            "unbound": sorted(params["unbind"]),
            "region_id": region_id,
            "engines": {
                service: provider for service, (provider, _) in sorted(endpoints.items()) if "://" not in provider
            },
        }
        return evidence, effect

    def service_endpoint(self, environment_id: str, region_id: str, service: str, provider: str) -> str:
        """Make the service exist (start its engine, provision its database, create its files); the URL allocations
        receive (engine URLs gain each allocation's own credentials when it starts)."""
        if "://" in provider:
            return provider
        if provider in ENGINE_SERVES:
            try:
                engine = self.pipeline.engines.ensure(Lane(environment_id, region_id, provider))
            except EngineUnavailable as error:
                raise StageFailed(error.code, error.message) from None
            return engine.endpoint(service)
        if provider == "sql":
            provisioner = self.pipeline.provisioner
            kind = "postgres" if provisioner.app_databases else "sqlite"
            try:
                return provisioner.provision(provisioner.plan(environment_id, SESSION_STORE_NAME, kind))
            except DomainError as error:
                raise StageFailed(error.code, error.message) from None
        return self.local_service(environment_id, region_id, service)

    def local_service(self, environment_id: str, region_id: str, service: str) -> str:
        """Create (idempotently) Rhone Local's own implementation of a service; its URL."""
        return local_service(self.services_root / environment_id / region_id, service)

    # -- scale ---------------------------------------------------------------------------------------------------
    def _owner(self, environment_id: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        environment = self.store.environment_by_id(environment_id)
        owner = self.store.route_owner(environment["app_id"], environment_id)
        if owner is None:
            raise StageFailed(
                "no_route_owner",
                f"nothing serves {environment['name']} yet: promote a deployment to it first",
            )
        return environment, owner, self.store.deployment(owner["deployment_id"])

    def scale_gate(self, op: dict[str, Any]) -> tuple[dict[str, Any], Effect]:
        instances = op["params"]["instances"]
        environment, owner, deployment = self._owner(op["params"]["environment_id"])
        missing, regions, skipped = missing_for_scale(self.store, environment, deployment["config"], instances)
        evidence = {
            "instances": instances,
            "deployment_id": owner["deployment_id"],
            "required": [r.to_dict() for r in rules.scale_requirements(deployment["config"])] if instances > 1 else [],
            "missing": missing,
            "regions": [r["name"] for r in regions],
            "skipped_regions": skipped,
        }
        if missing:
            raise StageFailed(
                "runtime_services_missing",
                f"{instances} instances need runtime services {environment['name']} lacks: {listed(missing)} "
                f"(`rhone env services {environment['name']} --bind …`)",
                evidence,
            )
        down = self._engines_down(environment, regions, evidence["required"])
        if down:
            evidence["down"] = down
            raise StageFailed(
                "runtime_service_down",
                f"{instances} instances need runtime services whose engine is down: "
                + "; ".join(f"{d['service']} ({d['engine']}) in {d['region']}: {d['error']}" for d in down)
                + f". Rhone Local restarts it; `rhone env services {environment['name']}` shows when it is up again",
                evidence,
            )
        return evidence, None

    def _engines_down(
        self, environment: dict[str, Any], regions: list[dict[str, Any]], required: list[dict[str, str]]
    ) -> list[dict[str, str]]:
        services = [r["service"] for r in required]
        return [
            {**d, "region": region["name"]}
            for region in regions
            for d in self.pipeline.engines.down(environment["id"], region["id"], services)
        ]

    def scale(self, op: dict[str, Any]) -> tuple[dict[str, Any], Effect]:
        instances = op["params"]["instances"]
        environment, _owner, deployment = self._owner(op["params"]["environment_id"])
        self.store.set_instances(environment["id"], instances)  # first: a promotion from now on starts this many
        environment["instances"] = instances
        allocations = self.pipeline.runner.ensure_instances(
            deployment,
            environment,
            instances,
            regions=serving_regions(self.store, environment, deployment["config"])[0],
        )
        regions = {r["id"]: r["name"] for r in self.store.regions()}
        evidence = {
            "instances": instances,
            "deployment_id": deployment["id"],
            "allocations": [
                {"id": a["id"], "state": a["state"], "region": regions.get(a["region_id"])} for a in allocations
            ],
        }
        not_ready = [a for a in allocations if a["state"] != "ready"]
        if not_ready:
            raise StageFailed(
                "readiness_failed",
                f"{len(not_ready)} of {instances} allocations did not become ready; "
                + not_ready_message(f"allocation {not_ready[0]['id']}", not_ready[0]),
                evidence,
            )
        return evidence, None

    # -- settings ------------------------------------------------------------------------------------------------
    def roll_settings(self, op: dict[str, Any]) -> tuple[dict[str, Any], Effect]:
        """Every deployment running in the environment gets instances with the new settings (they are part of the
        digest that decides replacement), ready before its old ones stop."""
        environment = self.store.environment_by_id(op["params"]["environment_id"])
        owner = self.store.route_owner(environment["app_id"], environment["id"])
        rolled, not_ready = [], []
        for deployment_id in self.store.live_deployments(environment["id"]):
            deployment = self.store.deployment(deployment_id)
            if owner is not None and owner["deployment_id"] == deployment_id:
                count = environment["instances"]
                regions = serving_regions(self.store, environment, deployment["config"])[0]
            else:  # a preview: one instance in the primary region
                count, regions = 1, [self.store.primary_region()]
            allocations = self.pipeline.runner.ensure_instances(
                deployment,
                environment,
                count,
                regions=regions,
            )
            rolled.append({"deployment_id": deployment_id, "allocations": [a["id"] for a in allocations]})
            not_ready += [a["id"] for a in allocations if a["state"] != "ready"]
        evidence = {**{k: op["params"][k] for k in ("set", "secrets", "unset")}, "rolled": rolled}
        if not_ready:
            raise StageFailed(
                "readiness_failed",
                f"{len(not_ready)} allocation(s) with the new settings did not become ready; the previous ones keep "
                "serving (`rhone deploy logs` shows why)",
                {**evidence, "not_ready": not_ready},
            )
        return evidence, None

    # -- region enablement ---------------------------------------------------------------------------------------
    def _region_context(self, op: dict[str, Any]) -> dict[str, Any]:
        params = op["params"]
        environment = self.store.environment_by_id(params["environment_id"])
        region = self.store.region(params["region_id"])
        owner = self.store.route_owner(environment["app_id"], environment["id"])
        if owner is None:
            raise StageFailed(
                "artifact_absent",
                f"nothing serves {environment['name']} yet, so there is no artifact to place in {region['name']}: "
                "promote a deployment first",
                {"region": region["name"]},
            )
        deployment = self.store.deployment(owner["deployment_id"])
        return {"environment": environment, "region": region, "deployment": deployment}

    @staticmethod
    def _gate(failure: rules.GateFailure | None, evidence: dict[str, Any]) -> None:
        if failure is not None:
            raise StageFailed(failure.code, failure.message, {**evidence, **failure.facts, "gate": failure.code})

    def region_provisioning(self, op: dict[str, Any]) -> tuple[dict[str, Any], Effect]:
        ctx = self._region_context(op)
        environment, region, config = ctx["environment"], ctx["region"], ctx["deployment"]["config"]
        evidence: dict[str, Any] = {"region": region["name"], "deployment_id": ctx["deployment"]["id"]}
        self._gate(provisioning_failure(self.store, environment, region, config), evidence)
        providers = {n: p for n, p in (config.get("providers") or {}).items() if p.get("required", True)}
        policy = (config.get("environments") or {}).get(environment["name"]) or {}
        evidence.update(
            residency=policy.get("residency") or "any",
            providers=sorted(providers),
            secrets={name: sorted(p.get("secrets") or []) for name, p in providers.items()},
        )
        return evidence, None

    def region_services(self, op: dict[str, Any]) -> tuple[dict[str, Any], Effect]:
        ctx = self._region_context(op)
        environment, region, config = ctx["environment"], ctx["region"], ctx["deployment"]["config"]
        requirements = rules.scale_requirements(config)
        bound = self.store.bound_services(environment["id"], region["id"])
        evidence = {"region": region["name"], "required": [r.to_dict() for r in requirements], "bound": sorted(bound)}
        self._gate(services_failure(self.store, environment, region, config), evidence)
        return evidence, None

    def region_artifacts(self, op: dict[str, Any]) -> tuple[dict[str, Any], Effect]:
        ctx = self._region_context(op)
        deployment, region = ctx["deployment"], ctx["region"]
        digest = deployment["artifact_digest"]
        blobs = self.pipeline.blobs
        evidence: dict[str, Any] = {"region": region["name"], "artifact_digest": digest}
        try:
            manifest = load_manifest(blobs, digest)
        except OSError:
            manifest = None
        if manifest is None:
            raise StageFailed("artifact_absent", f"the artifact {digest} is not in the artifact store", evidence)
        absent = [f["path"] for f in manifest["files"] if not _intact(blobs.path("sha256:" + f["sha256"]), f["sha256"])]
        evidence.update(files=len(manifest["files"]), verified=len(manifest["files"]) - len(absent))
        if absent:
            raise StageFailed(
                "artifact_absent",
                f"{len(absent)} file(s) of {digest} are missing or corrupt in the artifact store "
                f"({', '.join(absent[:3])}); redeploy to upload them again",
                {**evidence, "absent": absent[:20]},
            )
        params = op["params"]

        def effect(c: Tx) -> None:
            self.store.set_environment_region(
                c, params["environment_id"], params["region_id"], "eligible", op["id"], None
            )

        return evidence, effect


def _intact(path: Path, sha256: str) -> bool:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest() == sha256
    except OSError:
        return False
