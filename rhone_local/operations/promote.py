"""Promotion and rollback (kinds `promote` and `rollback`): the gates checked when the request arrives and again in
the `policy_check` stage, so a request that would fail a gate is refused at once with the code the stage would
record; and the kinds' stage registry over the promotion stages injected at wiring (docs/state-machines.md).
"""

from __future__ import annotations

from typing import Any, Protocol

from rhone_local.domain import gates, settings
from rhone_local.domain.errors import StageFailed
from rhone_local.domain.operations import MACHINES
from rhone_local.operations.kinds import Advance, Kind, onward
from rhone_local.operations.placement import listed, missing_for_scale
from rhone_local.ports import ArtifactFacts
from rhone_local.store import Store, Tx


def check_policy(
    store: Store, artifacts: ArtifactFacts, params: dict[str, Any], *, kind: str = "promote"
) -> dict[str, Any]:
    """The promotion gates; raises StageFailed (or DomainError at request time) naming the first that fails."""
    deployment = store.deployment(params["deployment_id"])
    environment = store.environment_by_id(params["environment_id"])
    if deployment is None or environment is None:
        raise StageFailed("not_found", "the deployment or environment no longer exists")
    if deployment["state"] != "preview_ready":
        raise StageFailed(
            "deployment_not_ready",
            f"deployment {deployment['id']} is {deployment['state']}; only a preview_ready deployment can be promoted",
        )
    if deployment["artifact_digest"] != params["expect_digest"]:
        raise StageFailed(
            "digest_mismatch",
            f"the deployment's artifact is {deployment['artifact_digest']}, not the expected "
            f"{params['expect_digest']}; promotion never rebuilds",
        )
    if not artifacts.artifact_intact(deployment["artifact_digest"]):
        raise StageFailed(
            "artifact_absent",
            f"the artifact of {deployment['id']} was removed by retention (`rhone local gc`): it is neither a recent "
            "deployment nor a recent route owner; deploy its source again",
        )
    if environment["frozen"]:
        raise StageFailed(
            "environment_frozen", f"environment {environment['name']} is frozen; `rhone env unfreeze` it first"
        )
    if environment["approval_required"] and not params.get("approved_by"):
        raise StageFailed(
            "approval_required",
            f"promotions and rollbacks to {environment['name']} need an owner's or admin's approval (`--approve`)",
        )
    if kind == "promote" and environment["name"] == "production":
        _refuse_unapproved_release(artifacts, deployment)
    config = deployment["config"]
    required = [name for name, p in (config.get("providers") or {}).items() if p.get("required", True)]
    missing = sorted(set(required) - set(artifacts.bound_providers(environment["id"])))
    if missing:
        raise StageFailed("binding_missing", f"no ready binding in {environment['name']} for: {', '.join(missing)}")
    unset = settings.unmet(config, store.provided_names(environment["id"]))
    if unset:
        raise StageFailed(
            "setting_missing",
            f"{environment['name']} lacks required setting(s) {', '.join(unset)}: `rhone env set "
            f"{environment['name']} NAME=VALUE` (or --secret NAME) first",
        )
    instances = environment.get("instances", 1)
    lacking = missing_for_scale(store, environment, config, instances)[0]
    if lacking:
        raise StageFailed(
            "runtime_services_missing",
            f"{environment['name']} runs {instances} instances, and this deployment needs runtime services it lacks "
            f"there: {listed(lacking)}",
            {"missing": lacking},
        )
    return {
        "deployment_state": deployment["state"],
        "artifact_digest": deployment["artifact_digest"],
        "frozen": False,
        "approval": params.get("approved_by"),
        "providers": required,
        "instances": instances,
    }


def _refuse_unapproved_release(artifacts: ArtifactFacts, deployment: dict[str, Any]) -> None:
    """The deploy's state and database gates compared the candidate with what served production then; production may
    have moved since (another promotion), so they are decided again against what serves now, with the deployment's
    own approval. A cold change or a new migration that nobody acknowledged never reaches production this way
    (docs/state-machines.md, "Promotion re-checks the release gates")."""
    approval = deployment.get("approval") or {}
    verdict, reasons = gates.decide(
        artifacts.release_gates(deployment),
        ack_cold=bool(approval.get("ack_cold")),
        approved=bool(approval.get("approved_by")),
    )
    if verdict == "pass":
        return
    cold = any(r.gate == "state_impact" for r in reasons)
    code = "cold_deploy_needs_approval" if cold else "migration_needs_approval"
    raise StageFailed(
        code,
        f"production changed since {deployment['id']} was validated, and against what serves it now: "
        + "; ".join(r.summary for r in reasons)
        + ". Deploy the same source again (`rhone deploy`: its artifact is reused) to run the gates against "
        "production as it is, then approve it (`rhone deploy approve DEP --ack-cold` for a cold change)",
        {"gates": [r.to_dict() for r in reasons]},
    )


class PromotionStages(Protocol):
    """The promotion stages' effects (rhone_local/promotion.py): readiness, the route's compare-and-swap, the wait
    for the edges."""

    def policy_check(self, op: dict[str, Any]) -> dict[str, Any]: ...

    def ensure_target_ready(self, op: dict[str, Any], evidence: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def route_cas(self, op: dict[str, Any], c: Tx) -> dict[str, Any]: ...

    def propagate(self, op: dict[str, Any]) -> dict[str, Any]: ...

    def release(self, op: dict[str, Any]) -> None: ...


def kinds(promotions: PromotionStages) -> dict[str, Kind]:
    """`promote` and `rollback`: requested → policy_check → route_cas → edge_propagating → healthy (a rollback ends
    rolled_back), or failed; a failure releases what the promotion started."""

    def policy_check(op: dict[str, Any]) -> Advance:
        return Advance("route_cas", promotions.policy_check(op))

    def route_cas(op: dict[str, Any]) -> Advance:
        # Still ready? (A restart since policy_check may have lost the process; this may start it again.) Outside
        # the transaction; the compare-and-swap, its event and the next state then commit together: a crash leaves
        # the route either unmoved (the stage runs again) or moved and recorded — never moved and unknown.
        promotions.ensure_target_ready(op)
        return Advance("edge_propagating", effect=lambda c: promotions.route_cas(op, c))

    def edge_propagating(op: dict[str, Any]) -> Advance:
        return Advance(MACHINES[op["kind"]].success, promotions.propagate(op))

    return {
        kind: Kind(
            kind,
            {
                "requested": onward(kind),
                "policy_check": policy_check,
                "route_cas": route_cas,
                "edge_propagating": edge_propagating,
            },
            after_failure=promotions.release,
        )
        for kind in ("promote", "rollback")
    }
