"""The interface the binding, services, scale, settings and region kinds run their stages through: the topology
stage effects (rhone_local/topology.py), injected at wiring. Each returns `(evidence, effect)`; `effect`, when not
None, is written in the transaction that records the next state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from rhone_local.store import Tx

Stage = tuple[dict[str, Any], Callable[[Tx], None] | None]


class TopologyStages(Protocol):
    def bind_provider(self, op: dict[str, Any]) -> Stage: ...

    def unbind_provider(self, op: dict[str, Any]) -> Stage: ...

    def bind_services(self, op: dict[str, Any]) -> Stage: ...

    def scale_gate(self, op: dict[str, Any]) -> Stage: ...

    def scale(self, op: dict[str, Any]) -> Stage: ...

    def roll_settings(self, op: dict[str, Any]) -> Stage: ...

    def region_provisioning(self, op: dict[str, Any]) -> Stage: ...

    def region_services(self, op: dict[str, Any]) -> Stage: ...

    def region_artifacts(self, op: dict[str, Any]) -> Stage: ...
