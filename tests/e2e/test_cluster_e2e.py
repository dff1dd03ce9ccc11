"""Beyond one machine, end to end (docs/multi-node.md): a real Rhone Local started by `rhone local up --events` (a
real JetStream nats-server), `--blobs` (a real S3-API server on loopback) or `--store` (a real PostgreSQL cluster).

Route events: the server publishes each route event after it commits; the edge process takes route ownership from
the stream (and only its allocation table from the API's feed). A promotion finishes only when the edge reports the
new sequence — learnt from the stream — and when NATS goes away the edge stops serving the route, then serves it
again once the stream is back. Blobs: every blob a deploy stores is in the bucket."""

from __future__ import annotations

import asyncio
import os
import shutil

import httpx

from rhone_local.route_stream import SEQ_HEADER, STREAM, SUBJECT
from tests.e2e.helpers import HELLO, wait_until
from tests.engines import nats_jetstream, postgres_cluster

LEASE_WAIT = 30.0  # longer than an edge's lease (EDGE_LEASE_SECONDS), so its lapse is seen


def _stream(url: str) -> tuple[int, list[int]]:
    """(messages on the stream, the route sequence of each)."""
    import nats

    async def read() -> tuple[int, list[int]]:
        client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = client.jetstream(timeout=5)
            state = (await js.stream_info(STREAM)).state
            seqs = []
            for seq in range(state.first_seq, state.last_seq + 1):
                seqs.append(int((await js.get_msg(STREAM, seq)).headers[SEQ_HEADER]))
            return state.messages, seqs
        finally:
            await client.close()

    return asyncio.run(read())


def _deploy_and_promote(server, root) -> dict:
    """The hello example deployed and promoted through the real CLI; `rhone deploy --promote`'s document."""
    app_dir = root / "hello"
    shutil.copytree(HELLO, app_dir)
    assert server.rhone("init", "--link", "--json", cwd=app_dir).exit_code == 0
    return server.json("deploy", "--promote", cwd=app_dir, timeout=120)


def _edge(server, host: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{server.edge_port}/", headers={"Host": host}, timeout=10)


def test_the_edge_follows_route_events_on_jetstream_and_fails_closed_without_them(local_env, tmp_path):
    with nats_jetstream(tmp_path / "nats") as nats:
        local_env.up_options = ("--events", nats.url)
        started = local_env.up()
        assert started.exit_code == 0, started.stderr
        document = _deploy_and_promote(local_env, tmp_path)
        # edge_propagating waited for the edge's applied sequence, which only the stream gave it.
        assert document["promotion"]["state"] == "healthy", document
        assert wait_until(lambda: _stream(nats.url) == (1, [1]))
        answer = _edge(local_env, "hello--production.localhost")
        assert answer.status_code == 200 and answer.json()["environment"] == "production"
        assert SUBJECT == "rhone.routes"

        nats.stop()  # the stream is gone: the edge cannot know whether the owner moved
        assert wait_until(lambda: _edge(local_env, "hello--production.localhost").status_code == 503, LEASE_WAIT)
        assert "failing closed" in _edge(local_env, "hello--production.localhost").text

        nats.restart(lose_data=True)  # back, without its data: a snapshot, then the (new) stream
        assert wait_until(lambda: _edge(local_env, "hello--production.localhost").status_code == 200, LEASE_WAIT)
        assert _edge(local_env, "hello--production.localhost").json()["environment"] == "production"
        assert local_env.rhone("local", "down").exit_code == 0


def test_every_blob_a_deploy_stores_is_in_the_bucket(local_env, tmp_path, s3_server, s3_client):
    client, bucket = s3_client
    local_env.up_options = ("--blobs", f"s3://{bucket}/node", "--blobs-endpoint", s3_server)
    credentials = {
        name: os.environ[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    started = local_env.up(environ=credentials)  # the server reads them as boto3 does
    assert started.exit_code == 0, started.stderr
    document = _deploy_and_promote(local_env, tmp_path)
    assert document["promotion"]["state"] == "healthy", document
    cached = {
        "node/" + str(p.relative_to(local_env.data_dir / "blobs"))
        for p in (local_env.data_dir / "blobs" / "sha256").rglob("*")
        if p.is_file()
    }
    stored = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert cached and cached <= stored  # the source's files, their manifest, the artifact's: all in the bucket
    assert local_env.rhone("local", "down").exit_code == 0


def test_a_deploy_and_its_promotion_on_the_postgresql_store(local_env, tmp_path):
    import psycopg

    with postgres_cluster() as cluster:
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE rhone")
        url = cluster.url.replace("/postgres?", "/rhone?")
        local_env.up_options = ("--store", url)
        started = local_env.up()
        assert started.exit_code == 0, started.stderr
        try:
            document = _deploy_and_promote(local_env, tmp_path)
            assert document["promotion"]["state"] == "healthy", document
            answer = _edge(local_env, "hello--production.localhost")
            assert answer.status_code == 200 and answer.json()["environment"] == "production"
            with psycopg.connect(url) as db:
                events = db.execute("SELECT seq, epoch, kind FROM route_events ORDER BY seq").fetchall()
                migrations = db.execute("SELECT count(*) FROM schema_migrations").fetchone()
            assert events == [(1, 1, "promote")]
            assert migrations is not None and migrations[0] >= 8
            assert not (local_env.data_dir / "rhone.db").exists()  # the store is PostgreSQL, not the data directory
        finally:
            assert local_env.rhone("local", "down").exit_code == 0
