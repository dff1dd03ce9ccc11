"""The engines the multi-node fixtures start are real and do what the PostgreSQL store and the route-event stream
will rely on (docs/multi-node.md, "Design"): SKIP LOCKED claims, advisory locks, JetStream de-duplication."""

from __future__ import annotations

import asyncio
import time

import pytest

pytestmark = pytest.mark.slow


def test_postgres_claims_with_skip_locked_never_lease_one_row_twice(pg_database):
    import psycopg

    with psycopg.connect(pg_database, autocommit=True) as setup:
        setup.execute("CREATE TABLE jobs (id int PRIMARY KEY, owner text)")
        setup.execute("INSERT INTO jobs SELECT g, NULL FROM generate_series(1, 3) g")
    claim = "SELECT id FROM jobs WHERE owner IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    with psycopg.connect(pg_database) as first, psycopg.connect(pg_database) as second:
        a = first.execute(claim).fetchone()[0]
        b = second.execute(claim).fetchone()[0]  # the first's row is locked: skipped, not waited for
        assert (a, b) == (1, 2)
        first.execute("UPDATE jobs SET owner = 'first' WHERE id = %s", (a,))
        second.execute("UPDATE jobs SET owner = 'second' WHERE id = %s", (b,))
        first.commit()
        second.commit()
    with psycopg.connect(pg_database) as check:
        rows = check.execute("SELECT id, owner FROM jobs ORDER BY id").fetchall()
    assert rows == [(1, "first"), (2, "second"), (3, None)]


def test_postgres_advisory_lock_is_held_by_one_session_at_a_time(pg_database):
    import psycopg

    with psycopg.connect(pg_database, autocommit=True) as first, psycopg.connect(pg_database, autocommit=True) as other:
        assert first.execute("SELECT pg_try_advisory_lock(4242)").fetchone()[0] is True
        assert other.execute("SELECT pg_try_advisory_lock(4242)").fetchone()[0] is False
        first.close()  # a session that ends (a node that dies) lets go of its lock, once its backend has exited
        for _ in range(500):
            if other.execute("SELECT pg_try_advisory_lock(4242)").fetchone()[0]:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the lock of a closed session was never released")


def test_jetstream_drops_a_second_publish_with_the_same_message_id(jetstream):
    import nats

    async def scenario() -> tuple[int, list[bool], int]:
        client = await nats.connect(jetstream.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = client.jetstream(timeout=5)
            await js.add_stream(name="ENGINES_TEST", subjects=["engines.test"])
            acks = [await js.publish("engines.test", b"x", headers={"Nats-Msg-Id": "one"}) for _ in range(2)]
            info = await js.stream_info("ENGINES_TEST")
            await js.delete_stream("ENGINES_TEST")
            return info.state.messages, [bool(a.duplicate) for a in acks], acks[1].seq
        finally:
            await client.close()

    messages, duplicates, seq = asyncio.run(scenario())
    assert (messages, duplicates, seq) == (1, [False, True], 1)
