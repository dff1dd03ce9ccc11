"""Fixtures of the multi-node tests (docs/multi-node.md): one PostgreSQL cluster and one JetStream nats-server for
the whole session, each started in a temporary directory and stopped at the end (tests/engines.py). A test that
restarts or purges an engine starts its own instead. The S3-API server's fixtures are in tests/conftest.py (the
end-to-end tests use them too)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.engines import PostgresCluster, nats_jetstream, postgres_cluster


@pytest.fixture(scope="session")
def pg_cluster():
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def jetstream():
    with tempfile.TemporaryDirectory(prefix="rhone-nats-") as directory, nats_jetstream(Path(directory)) as server:
        yield server


@pytest.fixture
def pg_database(pg_cluster: PostgresCluster, request):
    """A fresh database of its own in the session's cluster, for one test; its URL."""
    import re

    import psycopg

    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    with psycopg.connect(pg_cluster.url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield pg_cluster.url.replace("/postgres?", f"/{name}?")
    with psycopg.connect(pg_cluster.url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
