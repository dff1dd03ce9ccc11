"""Runtime service bindings (kind `services.update`): requested → binding → bound, or failed."""

from __future__ import annotations

from rhone_local.operations.kinds import Kind, onward, staged
from rhone_local.operations.topology_stages import TopologyStages

KIND = "services.update"


def kinds(topology: TopologyStages) -> dict[str, Kind]:
    return {KIND: Kind(KIND, {"requested": onward(KIND), "binding": staged(KIND, topology.bind_services)})}
