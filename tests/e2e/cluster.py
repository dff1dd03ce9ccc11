"""A real Rhone cluster on loopback for the failure tests (docs/multi-node.md, "Failure behaviour"): one PostgreSQL
cluster and one JetStream nats-server of its own (tests/engines.py), a bucket on the session's S3-API server, and
two servers started as separate processes by the real `rhone local up --store … --events … --blobs … --node NAME`,
each with its own HOME, data directory, ports and edge.

The issue's topology is two api/worker nodes, two runner nodes and two edges. On a 2-core machine six servers would
measure the machine rather than Rhone, so each of the two nodes runs every role (`api,worker,runner,edge`): a
failure of one node is then a failure of an API, a worker, a runner and an edge at once, and the other node must
take each of them over — the point of every test here.

Everything started is stopped in `finally`: the servers (`rhone local down`, then SIGKILL for any still alive), the
app processes of allocations a killed node left behind, then the engines.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rhone_cli.services.local import process_alive
from tests.e2e.conftest import LocalServer
from tests.e2e.helpers import HELLO
from tests.engines import S3_CLIENT_ARGS, S3_ENVIRON, NatsServer, PostgresCluster, nats_jetstream, postgres_cluster

_buckets = itertools.count(1)
LIVE_PROCESSES = (
    "SELECT id, pid, pid_start_time FROM allocations WHERE pid IS NOT NULL AND state NOT IN ('failed', 'stopped')"
)


@dataclass
class Cluster:
    root: Path
    pg: PostgresCluster
    store_url: str
    nats: NatsServer
    nodes: dict[str, LocalServer] = field(default_factory=dict)

    def db(self):
        import psycopg

        return psycopg.connect(self.store_url, autocommit=True)

    def rows(self, query: str, *params) -> list[tuple]:
        with self.db() as db:
            return db.execute(query, params).fetchall()

    def lease_node(self, op_id: str) -> str | None:
        """The node whose worker holds the operation's lease now (lease owners are `<node>/worker-…`)."""
        ((owner,),) = self.rows("SELECT lease_owner FROM operations WHERE id = %s", op_id)
        return owner.split("/")[0] if owner else None

    def token(self) -> str:
        return self.nodes["a"].owner_token()

    def http(self, node: str) -> httpx.Client:
        server = self.nodes[node]
        return httpx.Client(base_url=server.api_url, headers={"Authorization": f"Bearer {self.token()}"}, timeout=60)

    def app(self, name: str, *, build: str | None = None, start: str | None = None) -> Path:
        """examples/hello as app (and project) `name`, linked through node a (the link's ids are the cluster's, so
        any node's CLI can use the directory)."""
        app_dir = self.root / name
        shutil.copytree(HELLO, app_dir)
        toml = (app_dir / "rhone.toml").read_text().replace('name = "hello"', f'name = "{name}"')
        if build is not None:
            toml = toml.replace('command = "python3 -m py_compile app.py"', f"command = {json.dumps(build)}")
        if start is not None:
            toml = toml.replace('start = "python3 app.py"', f"start = {json.dumps(start)}")
        # It keeps no server sessions, so it may run several instances without a session store.
        (app_dir / "rhone.toml").write_text(toml + "\n[runtime]\nserver_sessions = false\n")
        linked = self.nodes["a"].rhone("init", "--link", "--json", cwd=app_dir)
        assert linked.exit_code == 0, linked.stderr
        return app_dir


def node_server(root: Path, name: str, options: tuple[str, ...], extra: dict[str, str] | None = None) -> LocalServer:
    """`rhone local up --node NAME` with `options`, its own HOME and data directory under `root` (not started)."""
    home = root / f"home-{name}"
    home.mkdir()
    environ = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", ""),
        "RHONE_CONFIG_DIR": str(home / ".config" / "rhone"),
        "RHONE_LOCAL_DATA_DIR": str(root / f"data-{name}"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        **S3_ENVIRON,
        **(extra or {}),
    }
    server = LocalServer(home, environ, root / f"data-{name}", root)
    server.up_options = (*options, "--node", name, "--sandbox", "none")
    return server


@contextlib.contextmanager
def running_cluster(
    s3_server: str, *, names: tuple[str, ...] = ("a", "b"), environ: dict[str, dict[str, str]] | None = None
) -> Iterator[Cluster]:
    """The cluster with nodes `names` started (the first bootstraps the store; the others get its owner token);
    `environ` adds variables to a node's CLI and server (by node name)."""
    import boto3

    root = Path(tempfile.mkdtemp(prefix="rhone-cluster-"))
    try:
        with postgres_cluster() as pg, nats_jetstream(root / "nats") as nats:
            import psycopg

            with psycopg.connect(pg.url, autocommit=True) as admin:
                admin.execute("CREATE DATABASE rhone")
            bucket = f"rhone-cluster-{os.getpid()}-{next(_buckets)}"
            boto3.client("s3", endpoint_url=s3_server, **S3_CLIENT_ARGS).create_bucket(Bucket=bucket)
            cluster = Cluster(root, pg, pg.url.replace("/postgres?", "/rhone?"), nats)
            options = (
                "--store", cluster.store_url, "--events", nats.url,
                "--blobs", f"s3://{bucket}/cluster", "--blobs-endpoint", s3_server,
            )  # fmt: skip
            try:
                for name in names:
                    server = cluster.nodes[name] = node_server(root, name, options, (environ or {}).get(name, {}))
                    if name != names[0]:
                        server.data_dir.mkdir(mode=0o700)
                        shutil.copy2(cluster.nodes[names[0]].data_dir / "owner.token", server.data_dir)
                    started = server.up()
                    assert started.exit_code == 0, (name, started.stdout, started.stderr)
                yield cluster
            finally:
                stop_cluster(cluster)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def stop_cluster(cluster: Cluster) -> None:
    """Stop every node, then kill any app process an allocation of a killed node left running (only its node could
    have stopped it)."""
    leftovers: list[tuple] = []
    with contextlib.suppress(Exception):
        leftovers = cluster.rows(LIVE_PROCESSES)
    for server in cluster.nodes.values():
        with contextlib.suppress(Exception):
            server.rhone("local", "down", timeout=120)
        for pid in server.started:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
    kill_leftovers(leftovers)


def kill_leftovers(leftovers: list[tuple]) -> None:
    """SIGKILL the app processes of allocations (rows of LIVE_PROCESSES, read while the nodes ran) that no node
    stopped: only their node could have, and it was killed."""
    from rhone_local import processes

    for allocation_id, pid, start_time in leftovers:
        if processes.leader_alive(pid, start_time):
            members = processes.allocation_processes(allocation_id, pid, start_time)
            processes.signal_allocation(members, pid, start_time, signal.SIGKILL)


def kill_node(server: LocalServer) -> int:
    """kill -9 the node's server process (its app processes, in their own groups, live on); its pid."""
    pid = server.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


def follows_history(observed: list[str], history: list[str]) -> bool:
    """Whether the owners an edge served, in order (`observed`), are a subsequence of the route's owners in event
    order (`history`): an edge may skip an owner, never go back to one the route had left."""
    remaining = iter(history)
    return all(any(item == owner for owner in remaining) for item in observed)
