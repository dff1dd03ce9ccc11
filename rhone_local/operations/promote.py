"""Promotion and rollback (kinds `promote` and `rollback`): the gates checked when the request arrives and again in
the `policy_check` stage, so a request that would fail a gate is refused at once with the code the stage would
record; and the kinds' stage registry over the promotion stages injected at wiring (docs/state-machines.md).
"""

from __future__ import annotations

from typing import Any, Protocol

from rhone_local.domain import gates, settings
from rhone_local.domain.errors import DomainError, StageFailed, conflict, not_found
from rhone_local.domain.operations import MACHINES
from rhone_local.domain.urls import route_key, route_key_taken
from rhone_local.operations.kinds import Advance, Kind, onward, refuse_while_changing
from rhone_local.operations.placement import listed, missing_for_scale
from rhone_local.operations.unit_of_work import Origin, start_operation
from rhone_local.ports import ArtifactFacts, Deployments
from rhone_local.store import Store, Tx

# Refusals at request time use the same codes as the policy_check stage; gates that need a person are 409s the CLI
# maps to exit 6, lost races and digest mismatches to exit 5.
REFUSAL_STATUS = {"not_found": 404}
# Operations that change an environment's allocations: a route move waits for them.
ALLOCATION_CHANGES = ("scale", "config.update")


# -- request time: what a promotion or a rollback is refused for before it is recorded ------------------------------
def check_promotion(
    store: Store,
    deployments: Deployments,
    deployment: dict[str, Any],
    environment: dict[str, Any],
    *,
    expect_digest: str | None,
    approved_by: str | None,
    allow_unsafe_db: bool,
) -> list[str]:
    """Refuse a promotion the policy_check stage would fail; the applied migrations the deployment lacks (allowed
    only with `allow_unsafe_db`: promoting an older build is a rollback of the database schema too)."""
    params = {
        "deployment_id": deployment["id"],
        "environment_id": environment["id"],
        "expect_digest": expect_digest or deployment["artifact_digest"],
        "approved_by": approved_by,
    }
    _refuse_by_policy(store, deployments, params, kind="promote")
    return unsafe_db_move(deployments, environment, deployment, allow=allow_unsafe_db)


def rollback_target(store: Store, environment: dict[str, Any], to_deployment: str | None) -> dict[str, Any]:
    """The deployment a rollback of `environment` returns to (`to_deployment`, else the previous route owner), or
    the refusal: it must be an earlier owner of the route, never the current one."""
    found = environment["app"]
    key = f"{found['name']}--{environment['name']}"
    current = store.route_owner(found["id"], environment["id"])
    if current is None:
        raise conflict("no_route_owner", f"nothing serves {key}; there is nothing to roll back")
    target_id = to_deployment
    if target_id is None:
        target_id = store.previous_owner(current["route_key"], current["epoch"])
        if target_id is None:
            raise conflict("no_previous_owner", f"{key} has had only one owner; name one with to_deployment")
    target = store.deployment(target_id)
    if target is None or target["app_id"] != found["id"]:
        raise not_found("deployment", target_id)
    if target_id == current["deployment_id"]:
        raise conflict("already_owner", f"{target_id} already serves {key}")
    # A rollback returns to an artifact this environment already served; anything else is a promotion, with its own
    # approval, and must not be reachable by naming it here.
    earlier = [d for d in store.route_owner_history(environment["id"]) if d != current["deployment_id"]]
    if target_id not in earlier:
        raise conflict(
            "rollback_target_not_previous_owner",
            f"{target_id} never served {key}; a rollback returns only to an earlier owner of the route "
            f"({', '.join(earlier) if earlier else 'it has had no other'})",
            hint=f"list the earlier owners with `rhone route history {environment['name']}`, or promote "
            f"{target_id} instead",
            valid_targets=earlier,
        )
    return target


def check_rollback(
    store: Store,
    deployments: Deployments,
    environment: dict[str, Any],
    target: dict[str, Any],
    *,
    approved_by: str | None,
    allow_unsafe_db: bool,
) -> list[str]:
    """Refuse a rollback to `target` the policy_check stage would fail (frozen, approval required: the same policy as
    a promotion); the applied migrations `target` lacks (allowed only with `allow_unsafe_db`)."""
    unsafe = unsafe_db_move(deployments, environment, target, allow=allow_unsafe_db)
    params = {
        "deployment_id": target["id"],
        "environment_id": environment["id"],
        "expect_digest": target["artifact_digest"],
        "approved_by": approved_by,
    }
    _refuse_by_policy(store, deployments, params, kind="rollback")
    return unsafe


def _refuse_by_policy(store: Store, deployments: Deployments, params: dict[str, Any], *, kind: str) -> None:
    try:
        check_policy(store, deployments, params, kind=kind)
    except StageFailed as failure:
        status = REFUSAL_STATUS.get(failure.code, 409)
        raise DomainError(failure.code, failure.message, status, failure.evidence) from None


def unsafe_db_move(
    deployments: Deployments, environment: dict[str, Any], target: dict[str, Any], *, allow: bool
) -> list[str]:
    """The migrations applied in the environment that `target` lacks; refused unless `allow` (--allow-unsafe-db)."""
    unsafe = deployments.unsafe_db_move(environment["id"], target)
    if unsafe and not allow:
        raise conflict(
            "rollback_unsafe_db",
            f"{target['id']} lacks {len(unsafe)} migration(s) already applied in {environment['name']} "
            f"({', '.join(unsafe[:5])}); roll forward instead, or pass --allow-unsafe-db",
            hint="deploy a build that carries them, or accept running older code on a newer schema with "
            "--allow-unsafe-db (audited)",
            migrations=unsafe,
        )
    return unsafe


def route_move_params(
    store: Store, deployment: dict[str, Any], environment: dict[str, Any], *, approved_by: str | None
) -> dict[str, Any]:
    """The parameters of a promotion or rollback of `deployment` to `environment`, after refusing a route key another
    app already holds."""
    app = store.app_by_id(deployment["app_id"])
    key = route_key(app["name"], environment["name"])
    holder = store.route_key_holder(key, app["id"])
    if holder:
        raise conflict(
            "route_key_taken",
            route_key_taken(holder, key, app["workspace_id"]),
            hint="deploy this code under another app name (rhone.toml [app] name)",
        )
    return {
        "deployment_id": deployment["id"],
        "environment_id": environment["id"],
        "environment": environment["name"],
        "expect_digest": deployment["artifact_digest"],
        "approved_by": approved_by,
        "route_key": key,
    }


def start_route_move(
    store: Store,
    c: Tx,
    origin: Origin,
    *,
    kind: str,
    workspace_id: str,
    environment: dict[str, Any],
    params: dict[str, Any],
    expect_epoch: int | None,
) -> dict[str, Any]:
    """Record the promotion or rollback (in the request's transaction), unless a scale or a settings roll-out is
    changing the environment's allocations, or the route is no longer at `expect_epoch` (default: as it is now)."""
    key = params["route_key"]
    refuse_while_changing(
        store, c, environment["id"], ALLOCATION_CHANGES, subject=f"{key}'s allocations", retry="promote"
    )
    # Read the epoch inside the write transaction: the default expectation is "the route as it is now".
    current = store.route_owner(environment["app_id"], environment["id"])
    epoch = current["epoch"] if current else 0
    expected = epoch if expect_epoch is None else expect_epoch
    if expected != epoch:
        raise conflict(
            "route_epoch_conflict",
            f"route {key} is at epoch {epoch}, not {expected}",
            current_epoch=epoch,
            current_owner=current["deployment_id"] if current else None,
        )
    return start_operation(
        store,
        c,
        origin,
        workspace_id=workspace_id,
        kind=kind,
        target_kind="route",
        target_id=environment["id"],
        params={**params, "expect_epoch": expected},
    )


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
