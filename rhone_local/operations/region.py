"""Region enablement (kind `region.enable`): requested → provisioning → binding_services → replicating_artifacts →
eligible; a gate that does not hold ends it `disabled`, and the environment's region record says why, in the
failure's transaction."""

from __future__ import annotations

from typing import Any

from rhone_local.domain.errors import conflict
from rhone_local.operations.kinds import Kind, onward, staged
from rhone_local.operations.topology_stages import TopologyStages
from rhone_local.operations.unit_of_work import Origin, start_operation
from rhone_local.store import Store, Tx

KIND = "region.enable"


def check_enable(region: dict[str, Any]) -> None:
    if region["is_primary"]:
        raise conflict("region_primary", f"{region['name']} is the primary region: every environment serves there")


def start_enable(
    store: Store, c: Tx, origin: Origin, *, workspace_id: str, environment: dict[str, Any], region: dict[str, Any]
) -> dict[str, Any]:
    """Record the enablement; the environment's region record says `enabling` (not eligible while the gates are
    checked: traffic waits for `eligible`) unless the region already serves it."""
    op = start_operation(
        store,
        c,
        origin,
        workspace_id=workspace_id,
        kind=KIND,
        target_kind="environment",
        target_id=environment["id"],
        params={"environment_id": environment["id"], "region_id": region["id"], "region": region["name"]},
    )
    current = store.environment_region_states(environment["id"]).get(region["id"])
    if current is None or current["state"] != "eligible":
        store.set_environment_region(c, environment["id"], region["id"], "enabling", op["id"], None)
    return op


def kinds(store: Store, topology: TopologyStages) -> dict[str, Kind]:
    def disabled(op: dict[str, Any], failure: Any, c: Tx) -> None:
        params = op["params"]
        reason = f"{failure.code}: {failure.message}"
        store.set_environment_region(c, params["environment_id"], params["region_id"], "disabled", op["id"], reason)

    handlers = {
        "requested": onward(KIND),
        "provisioning": staged(KIND, topology.region_provisioning),
        "binding_services": staged(KIND, topology.region_services),
        "replicating_artifacts": staged(KIND, topology.region_artifacts),
    }
    return {KIND: Kind(KIND, handlers, on_failure=disabled)}
