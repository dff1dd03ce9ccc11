"""The narrow interfaces the API and the operations' request-time checks use, so that neither imports the parts
that implement them (the pipeline, the runner, the engines, the edge feed, retention). `server.py` hands the
implementations in (`api_ports`); tests/test_layers.py holds the API to it (docs/architecture.md, "Layers").

Each Protocol lists only what its callers use; an implementation for several nodes (issue 16) provides the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rhone_local.blobs import BlobStore
from rhone_local.domain.gates import GateResult
from rhone_local.domain.urls import EdgeUrls


class ArtifactFacts(Protocol):
    """What the promotion gates ask of the deploy machinery (operations/promote.py)."""

    def artifact_intact(self, digest: str) -> bool:
        """Whether the artifact is still stored whole (retention may have removed it)."""
        ...

    def bound_providers(self, environment_id: str) -> list[str]:
        """The providers with a ready binding in the environment's primary region."""
        ...

    def release_gates(self, deployment: dict[str, Any]) -> list[GateResult]:
        """The deployment's state and database gates against what serves production now."""
        ...


class Deployments(ArtifactFacts, Protocol):
    """What the API reads of deployments beyond the store: their URLs, build logs and schema safety."""

    urls: EdgeUrls

    def workdir(self, deployment_id: str) -> Path:
        """The deployment's working directory (its `build.log`)."""
        ...

    def unsafe_db_move(self, environment_id: str, target: dict[str, Any]) -> list[str]:
        """Migrations applied in the environment that `target`'s artifact lacks."""
        ...


class AllocationLogs(Protocol):
    """Where each allocation's log is (the runner writes them)."""

    def allocations_of(self, deployment_id: str) -> list[dict[str, Any]]: ...

    def log_path(self, alloc_id: str) -> Path: ...


class DatabasePlanner(Protocol):
    """Where a provisioned database of an environment is (or would be): a pure function of its names."""

    def plan(self, environment_id: str, name: str, kind: str) -> Any: ...


class EngineStatus(Protocol):
    """Whether the engine of a runtime service lane is up, and its clients."""

    def status(self, environment_id: str, region_id: str, engine_name: str) -> dict[str, Any]: ...


class RetentionRun(Protocol):
    def run(self, *, dry_run: bool = False) -> dict[str, Any]:
        """Remove (or, dry, list) what nothing needs any more; a summary."""
        ...


class EdgeIdentity(Protocol):
    edge_id: str


class EdgeFeedSource(Protocol):
    """The edges' feed (long-polled) and their reports."""

    def edge_for_token(self, token: str) -> EdgeIdentity | None: ...

    def contact(self, edge: Any) -> None: ...

    async def wait_for_change(self, seq: int | None, version: int | None, timeout: float) -> None: ...

    def document(self, seq: int | None, version: int | None) -> dict[str, Any]: ...

    def report(self, edge: Any, seq: int | None, version: int | None, open_connections: dict[int, int]) -> None: ...


@dataclass
class ApiPorts:
    """Everything the API uses besides the store and the notifier."""

    data_dir: Path
    blobs: BlobStore
    deployments: Deployments
    logs: AllocationLogs
    databases: DatabasePlanner
    retention: RetentionRun
    engines: EngineStatus | None = None
    edge_feed: EdgeFeedSource | None = None
