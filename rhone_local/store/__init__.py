"""The control database. `Store` is the one object callers hold; it is composed of one class per aggregate, each in
its own module, over one connection, transaction and migration core (`core.py`):

- tenancy.py: workspaces, users, members, projects, apps, environments, runtime identities
- tokens.py: API tokens, device login, refresh tokens
- topology.py: regions, cells, environments' eligible regions
- operations.py: operations, leases, stages
- deployments.py: deployments, artifacts, builds
- routes.py: route owners and events, applied migrations, the edges' reads
- allocations.py: allocations and healing
- nodes.py: the nodes of a cluster sharing the store, their heartbeats and their allocations
- bindings.py: provider bindings, secrets, runtime services, provisioned databases
- settings.py, idempotency.py, audit.py, retention.py

Every SQL statement of Rhone Local is in this package (tests/test_layers.py). Each method's docstring, and each
module's, states the guarantee it gives under concurrency: they are the contract another implementation keeps.
"""

from __future__ import annotations

from rhone_local.store.allocations import AllocationStore
from rhone_local.store.audit import AuditStore
from rhone_local.store.bindings import BindingStore
from rhone_local.store.core import (
    SCHEMA_VERSION,
    STORAGE_ERRORS,
    UNREADABLE_ERRORS,
    NameTaken,
    NotRhoneDatabase,
    SchemaTooNew,
    StoreUnavailable,
    Tx,
    now_iso,
)
from rhone_local.store.deployments import DeploymentStore
from rhone_local.store.idempotency import IdempotencyStore
from rhone_local.store.nodes import NodeNameTaken, NodeStore
from rhone_local.store.operations import OperationStore
from rhone_local.store.retention import RetentionStore
from rhone_local.store.routes import RouteStore
from rhone_local.store.settings import SettingStore
from rhone_local.store.tenancy import TenancyStore
from rhone_local.store.tokens import TokenStore
from rhone_local.store.topology import TopologyStore

__all__ = [
    "SCHEMA_VERSION",
    "STORAGE_ERRORS",
    "UNREADABLE_ERRORS",
    "NameTaken",
    "NodeNameTaken",
    "NotRhoneDatabase",
    "SchemaTooNew",
    "Store",
    "StoreUnavailable",
    "Tx",
    "now_iso",
]


class Store(
    TenancyStore,
    TokenStore,
    TopologyStore,
    OperationStore,
    DeploymentStore,
    RouteStore,
    AllocationStore,
    NodeStore,
    BindingStore,
    SettingStore,
    IdempotencyStore,
    AuditStore,
    RetentionStore,
):
    """The control database (SQLite): every aggregate's methods on one object."""
