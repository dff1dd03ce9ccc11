"""Scale (kind `scale`): requested → gate_check (the runtime-services gate) → scaling (the runner converges on the
instance count) → scaled, or failed."""

from __future__ import annotations

from rhone_local.operations.kinds import Kind, onward, staged
from rhone_local.operations.topology_stages import TopologyStages

KIND = "scale"


def kinds(topology: TopologyStages) -> dict[str, Kind]:
    handlers = {
        "requested": onward(KIND),
        "gate_check": staged(KIND, topology.scale_gate),
        "scaling": staged(KIND, topology.scale),
    }
    return {KIND: Kind(KIND, handlers)}
