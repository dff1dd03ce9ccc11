"""Runtime service bindings (kind `services.update`): requested → binding → bound, or failed. At request time: a
change that contradicts itself, names nothing, asks a provider for what it cannot serve, or unbinds what the
environment's instance count needs is refused."""

from __future__ import annotations

from typing import Any

from rhone_local.domain import topology as rules
from rhone_local.domain.errors import DomainError, conflict
from rhone_local.operations.kinds import Kind, onward, staged
from rhone_local.operations.topology_stages import TopologyStages
from rhone_local.operations.unit_of_work import Origin, start_operation
from rhone_local.store import Store, Tx

KIND = "services.update"


def check_update(
    store: Store, environment: dict[str, Any], env: str, *, bind: list[str], unbind: list[str], provider: str
) -> None:
    """`env`: the environment as the request named it."""
    both = set(bind) & set(unbind)
    if both:
        raise conflict("services_contradict", f"both bound and unbound: {', '.join(sorted(both))}")
    if not bind and not unbind:
        raise conflict("nothing_to_do", "name services to --bind or --unbind")
    refusal = rules.provider_refusal(bind, provider)
    if refusal is not None:
        raise DomainError("provider_cannot_serve", refusal, 422, {"provider": provider})
    owner = store.route_owner(environment["app"]["id"], environment["id"])
    if owner is not None and environment["instances"] > 1 and unbind:
        needed = {r.service for r in rules.scale_requirements(store.deployment(owner["deployment_id"])["config"])}
        still_needed = sorted(needed & set(unbind))
        if still_needed:
            raise conflict(
                "runtime_services_required",
                f"{env} runs {environment['instances']} instances, which need {', '.join(still_needed)}; "
                "scale to 1 first (`rhone app scale --instances 1`)",
                services=still_needed,
            )


def start_update(
    store: Store, c: Tx, origin: Origin, *, workspace_id: str, environment: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    return start_operation(
        store,
        c,
        origin,
        workspace_id=workspace_id,
        kind=KIND,
        target_kind="environment",
        target_id=environment["id"],
        params=params,
    )


def kinds(topology: TopologyStages) -> dict[str, Kind]:
    return {KIND: Kind(KIND, {"requested": onward(KIND), "binding": staged(KIND, topology.bind_services)})}
