"""Two real servers, `rhone local up --store postgresql://… --node a|b`, sharing one PostgreSQL store, each with its
own data directory, ports and edge, and one S3 bucket for blobs (`--blobs`: a replacement on another node pulls
the artifact from there) (docs/multi-node.md, "Nodes").

The bug the issue opens with, across processes: a second control plane on the same store adopted the first one's
allocations, and stopping it stopped the first one's production app (its edge then answered 503). Here node b starts
and stops beside node a: a's allocation rows, process and route epoch are unchanged and its edge keeps serving. Then
node a is killed with -9: its heartbeat lapses, node b replaces its production allocation on itself (the route epoch
unchanged), and node a, started again, stops its stale process itself.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import httpx

from rhone_cli.services.local import process_alive
from tests.e2e.cluster import node_server
from tests.e2e.conftest import LocalServer
from tests.e2e.helpers import HELLO, wait_until
from tests.engines import postgres_cluster

# Every column but the heartbeat, which the live nodes renew meanwhile.
NODE_ROWS = "SELECT name, roles, address, instance_id, started_at, left_at FROM nodes ORDER BY name"
LAPSE_AND_HEAL = 120.0  # generous: a lapse is 10 s, the replacement's start a few more on a loaded machine


def _node(tmp_path: Path, name: str, store_url: str, blobs: tuple[str, ...]) -> LocalServer:
    return node_server(tmp_path, name, ("--store", store_url, *blobs))


def _production(db) -> list[tuple]:
    return db.execute(
        "SELECT a.id, a.node, a.state, a.version, a.pid, a.pid_start_time FROM allocations a "
        "JOIN environments e ON e.id = a.environment_id WHERE e.name = 'production' ORDER BY a.id"
    ).fetchall()


def _route(db) -> tuple:
    return db.execute("SELECT deployment_id, epoch FROM route_owners").fetchone()


def _serves(server: LocalServer) -> bool:
    try:
        answer = httpx.get(
            f"http://127.0.0.1:{server.edge_port}/", headers={"Host": "hello--production.localhost"}, timeout=10
        )
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


def test_two_nodes_on_one_postgresql_store_stop_and_lapse_one_at_a_time(tmp_path: Path, s3_server, s3_client):
    import psycopg

    from rhone_local import processes

    with postgres_cluster() as cluster:
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE rhone")
        url = cluster.url.replace("/postgres?", "/rhone?")
        blobs = ("--blobs", f"s3://{s3_client[1]}/cluster", "--blobs-endpoint", s3_server)
        node_a, node_b = _node(tmp_path, "a", url, blobs), _node(tmp_path, "b", url, blobs)
        stale: list[tuple] = []
        try:
            assert (started := node_a.up()).exit_code == 0, started.stderr
            app_dir = tmp_path / "hello"
            shutil.copytree(HELLO, app_dir)
            assert node_a.rhone("init", "--link", "--json", cwd=app_dir).exit_code == 0
            deployed = node_a.json("deploy", "--promote", cwd=app_dir, timeout=180)
            assert deployed["promotion"]["state"] == "healthy", deployed
            with psycopg.connect(url, autocommit=True) as db:
                before, route = _production(db), _route(db)
            (alloc,) = before
            assert alloc[1:3] == ("a", "ready") and route[1] == 1
            assert _serves(node_a)

            # Node b starts beside it (it adopts and releases nothing of a's), then stops (SIGTERM, its own only). The
            # workspace's owner token is node a's (its start bootstrapped the store): b's `rhone local up` reads it.
            node_b.data_dir.mkdir(mode=0o700)
            shutil.copy2(node_a.data_dir / "owner.token", node_b.data_dir / "owner.token")
            assert (started := node_b.up()).exit_code == 0, started.stderr
            # A third server under b's name (another data directory) is refused: the name's lock is b's.
            impostor = _node(tmp_path, "b-again", url, blobs)
            impostor.up_options = (*impostor.up_options[:-4], "--node", "b", "--sandbox", "none")
            with psycopg.connect(url, autocommit=True) as db:
                nodes_before = db.execute(NODE_ROWS).fetchall()
            refused = impostor.up()
            assert refused.exit_code == 5, (refused.stdout, refused.stderr)
            assert refused.json()["error"]["code"] == "local_node_name_taken"
            with psycopg.connect(url, autocommit=True) as db:
                assert db.execute(NODE_ROWS).fetchall() == nodes_before
            status = node_b.json("local", "status")
            assert (status["node"], status["roles"]) == ("b", ["api", "worker", "runner", "edge"])
            assert node_b.rhone("local", "down").exit_code == 0
            with psycopg.connect(url, autocommit=True) as db:
                assert (_production(db), _route(db)) == (before, route)
                nodes = db.execute("SELECT name, left_at IS NOT NULL FROM nodes ORDER BY name").fetchall()
            assert nodes == [("a", False), ("b", True)]
            assert processes.leader_alive(alloc[4], alloc[5]) and _serves(node_a)

            # Node a dies (kill -9): b, started again, replaces its allocation once a's heartbeat lapsed.
            assert node_b.up().exit_code == 0
            os.kill(node_a.pid(), signal.SIGKILL)
            assert wait_until(lambda: not process_alive(node_a.started[-1]), timeout=30)
            stale.append(alloc)

            def replaced() -> bool:
                with psycopg.connect(url, autocommit=True) as db:
                    return any(row[1:3] == ("b", "ready") for row in _production(db))

            assert wait_until(replaced, timeout=LAPSE_AND_HEAL, interval=0.5)
            with psycopg.connect(url, autocommit=True) as db:
                rows, now_route = _production(db), _route(db)
            assert now_route == route  # the same deployment serves: the epoch did not change
            assert [r[1:3] for r in rows] == [("a", "draining"), ("b", "ready")]
            assert processes.leader_alive(alloc[4], alloc[5])  # only node a may signal its process
            assert wait_until(lambda: _serves(node_b), timeout=30)

            # Node a comes back: it stops its stale process itself, and serves the replacement through its edge.
            assert (started := node_a.up()).exit_code == 0, started.stderr

            def ended() -> bool:  # the process goes first, then the row (the next round of a's reconciler)
                with psycopg.connect(url, autocommit=True) as db:
                    return _production(db)[0][2] == "failed"

            assert wait_until(ended, timeout=60, interval=0.2)
            assert not processes.leader_alive(alloc[4], alloc[5])
            with psycopg.connect(url, autocommit=True) as db:
                assert [r[1:3] for r in _production(db)] == [("a", "failed"), ("b", "ready")]
            stale.clear()
            assert wait_until(lambda: _serves(node_a), timeout=30)
        finally:
            for node in (node_b, node_a):
                node.rhone("local", "down")
                for pid in node.started:
                    if process_alive(pid):
                        os.kill(pid, signal.SIGKILL)
            for row in stale:  # node a never came back: its app process must not outlive the test
                members = processes.allocation_processes(row[0], row[4], row[5])
                processes.signal_allocation(members, row[4], row[5], signal.SIGKILL)
