"""Every operation kind's registry, assembled over the stage implementations the wiring injects (server.py). A kind
whose implementation is not given (a test without a pipeline) is absent: the driver then fails its operations."""

from __future__ import annotations

from rhone_local.operations import bindings, deploy, promote, region, scale, services, settings, tenancy
from rhone_local.operations.deploy import DeployStages
from rhone_local.operations.kinds import Kind
from rhone_local.operations.promote import PromotionStages
from rhone_local.operations.topology_stages import TopologyStages
from rhone_local.store import Store


def registry(
    store: Store,
    *,
    pipeline: DeployStages | None = None,
    promotions: PromotionStages | None = None,
    topology: TopologyStages | None = None,
) -> dict[str, Kind]:
    kinds = tenancy.kinds(store)
    if pipeline is not None:
        kinds |= deploy.kinds(store, pipeline)
    if promotions is not None:
        kinds |= promote.kinds(promotions)
    if topology is not None:
        kinds |= bindings.kinds(store, topology) | services.kinds(topology) | scale.kinds(topology)
        kinds |= settings.kinds(topology) | region.kinds(store, topology)
    return kinds
