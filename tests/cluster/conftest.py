"""Fixtures of the multi-node tests (docs/multi-node.md): one PostgreSQL cluster and one JetStream nats-server for
the whole session, each started in a temporary directory and stopped at the end (tests/engines.py). A test that
restarts or purges an engine starts its own instead."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest

from tests.engines import PostgresCluster, nats_jetstream, postgres_cluster

_buckets = itertools.count(1)


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


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 API on 127.0.0.1, on a port the kernel picked; its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_client(s3_server: str, monkeypatch: pytest.MonkeyPatch):
    """A client of the loopback S3 server, with a bucket of this test's own, made from the standard AWS variables
    as `--blobs` reads them."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    bucket = f"rhone-blobs-{next(_buckets)}"
    client.create_bucket(Bucket=bucket)
    return client, bucket
