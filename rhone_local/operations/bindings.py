"""Provider bindings (kinds `binding.create`: requested → binding → bound; `binding.remove`: requested → unbinding →
unbound; either may end failed). A failed create leaves its binding `failed` and its secrets dropped, in the
failure's transaction."""

from __future__ import annotations

from typing import Any

from rhone_local.operations.kinds import Kind, onward, staged
from rhone_local.operations.topology_stages import TopologyStages
from rhone_local.store import Store, Tx


def kinds(store: Store, topology: TopologyStages) -> dict[str, Kind]:
    def create_failed(op: dict[str, Any], failure: Any, c: Tx) -> None:
        store.fail_binding(c, op["params"]["binding_id"])

    return {
        "binding.create": Kind(
            "binding.create",
            {"requested": onward("binding.create"), "binding": staged("binding.create", topology.bind_provider)},
            on_failure=create_failed,
        ),
        "binding.remove": Kind(
            "binding.remove",
            {"requested": onward("binding.remove"), "unbinding": staged("binding.remove", topology.unbind_provider)},
        ),
    }
