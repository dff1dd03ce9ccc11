"""Region enablement (kind `region.enable`): requested → provisioning → binding_services → replicating_artifacts →
eligible; a gate that does not hold ends it `disabled`, and the environment's region record says why, in the
failure's transaction."""

from __future__ import annotations

from typing import Any

from rhone_local.operations.kinds import Kind, onward, staged
from rhone_local.operations.topology_stages import TopologyStages
from rhone_local.store import Store, Tx

KIND = "region.enable"


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
