"""Settings changes (kind `config.update`): recorded with the request, then the environment's running allocations
roll onto the new values (requested → rolling → succeeded, or failed)."""

from __future__ import annotations

from rhone_local.operations.kinds import Kind, onward, staged
from rhone_local.operations.topology_stages import TopologyStages

KIND = "config.update"


def kinds(topology: TopologyStages) -> dict[str, Kind]:
    return {KIND: Kind(KIND, {"requested": onward(KIND), "rolling": staged(KIND, topology.roll_settings)})}
