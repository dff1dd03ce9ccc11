"""Scale (kind `scale`): requested → gate_check (the runtime-services gate) → scaling (the runner converges on the
instance count) → scaled, or failed. At request time: only an environment something serves can be scaled, and only
while nothing else changes its allocations."""

from __future__ import annotations

from typing import Any

from rhone_local.domain.errors import conflict
from rhone_local.operations.kinds import ENVIRONMENT_CHANGES, Kind, onward, refuse_while_changing, staged
from rhone_local.operations.topology_stages import TopologyStages
from rhone_local.operations.unit_of_work import Origin, start_operation
from rhone_local.store import Store, Tx

KIND = "scale"


def check_scale(store: Store, environment: dict[str, Any], app: str, env: str) -> None:
    """Refuse scaling an environment no deployment serves yet (`app`, `env`: as the request named them)."""
    if store.route_owner(environment["app"]["id"], environment["id"]) is None:
        raise conflict("no_route_owner", f"nothing serves {app}--{env} yet: promote a deployment before scaling it")


def start_scale(
    store: Store,
    c: Tx,
    origin: Origin,
    *,
    workspace_id: str,
    environment: dict[str, Any],
    app: str,
    env: str,
    instances: int,
) -> dict[str, Any]:
    """Record the scale operation. One change of an environment's allocations at a time: a scale racing another
    scale or a promotion could leave the count and the allocations disagreeing, or start instances of a deployment
    that lost the route."""
    op = start_operation(
        store,
        c,
        origin,
        workspace_id=workspace_id,
        kind=KIND,
        target_kind="environment",
        target_id=environment["id"],
        params={"environment_id": environment["id"], "environment": env, "instances": instances},
    )
    subject = f"{app}--{env}"
    refuse_while_changing(
        store, c, environment["id"], ENVIRONMENT_CHANGES, subject=subject, retry="scale", exclude=op["id"]
    )
    return op


def kinds(topology: TopologyStages) -> dict[str, Kind]:
    handlers = {
        "requested": onward(KIND),
        "gate_check": staged(KIND, topology.scale_gate),
        "scaling": staged(KIND, topology.scale),
    }
    return {KIND: Kind(KIND, handlers)}
