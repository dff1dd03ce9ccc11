"""The distributed engines Rhone runs on beyond one machine (docs/multi-node.md), started for real by tests: a
throw-away PostgreSQL 15 cluster and a JetStream `nats-server`, each in a temporary directory, stopped in a `finally`.

Outside CI a missing binary skips the test, naming what to install; under `CI=true` it fails instead, since `.ci/run`
installs every engine (a skipped engine there would hide a missing install step).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Read when this module is imported (tests/conftest.py imports it at collection): an autouse fixture removes CI from
# each test's environment, so the CLI under test never sees it.
IN_CI = os.environ.get("CI") == "true"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PASSWORD = "admin-secret"


def require(found: bool, what: str) -> None:
    """Skip (or, in CI, fail) the calling test when an engine `what` needs is not installed."""
    if found:
        return
    if IN_CI:
        pytest.fail(f"{what}: .ci/run installs it, so CI never skips it", pytrace=False)
    pytest.skip(what)


def nats_binary() -> str | None:
    return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin")


@dataclass(frozen=True)
class PostgresCluster:
    root: Path
    socket_dir: Path
    url: str  # as the `postgres` superuser, over the unix socket

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        command = [*_as_postgres(), str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), *args]
        return subprocess.run(command, check=True, capture_output=True, timeout=120)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut, the server is back on the same socket. Its output goes
        to the log file, as at the first start (a server writing into this call's pipe would keep it open)."""
        self.pg_ctl("-l", str(self.root / "log"), "-m", "fast", "-w", "restart")


def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL 15 cluster of its own, listening only on a unix socket in its directory (PostgreSQL cannot bind
    port 0 and say which port it got), passwords checked (scram) as on a real server."""
    require((PG_BIN / "initdb").exists(), f"PostgreSQL 15 binaries are not installed at {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="rhone-pg-"))  # not under pytest's 0700 tmp: the postgres user must enter
    as_postgres = _as_postgres()
    # The socket has a directory of its own that anyone may enter (apps in the sandbox connect to it as an
    # unprivileged uid); the cluster's data stays private to the postgres user.
    data, socket_dir = root / "data", root / "socket"
    socket_dir.mkdir()
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(socket_dir, "postgres")
    root.chmod(0o711)
    socket_dir.chmod(0o755)
    run = {"check": True, "capture_output": True, "timeout": 120}
    cluster = PostgresCluster(root, socket_dir, f"postgresql://postgres:{PG_PASSWORD}@/postgres?host={socket_dir}")
    try:
        (root / "pw").write_text(PG_PASSWORD + "\n")
        if as_postgres:
            shutil.chown(root / "pw", "postgres")
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "scram-sha-256"]
        subprocess.run([*as_postgres, *initdb, f"--pwfile={root / 'pw'}"], **run)
        (root / "pw").unlink()
        cluster.pg_ctl("-o", f"-c listen_addresses='' -k {socket_dir}", "-w", "-l", str(root / "log"), "start")
        try:
            yield cluster
        finally:
            cluster.pg_ctl("-m", "immediate", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def nats_jetstream(directory: Path) -> Iterator[NatsServer]:
    """A JetStream nats-server on a loopback port it picks itself (`-1`, read back from its ports file), started and
    supervised by the same code as Rhone Local's runtime-service engines (rhone_local/engines.py)."""
    require(nats_binary() is not None, "nats-server is not installed (apt-get install nats-server)")
    from rhone_local.engines import ADMIN_USER, Lane, NatsEngine

    engine = NatsEngine(Lane("tests", "tests", "nats"), directory, b"test-only key")
    engine.ensure()
    server = NatsServer(engine, engine.url(ADMIN_USER, "broadcast"))
    try:
        yield server
    finally:
        server.stop()


@dataclass
class NatsServer:
    engine: object  # rhone_local.engines.NatsEngine
    url: str

    def restart(self, *, lose_data: bool = False) -> None:
        """Stop the server and start it again on the same port (clients keep their URL), as a restarted server would
        be; `lose_data` also deletes JetStream's store, as a server replaced by a fresh one would have."""
        from rhone_local.engines import ADMIN_USER

        port = self.engine.port
        for _ in range(50):  # the port is free again once the old listener is gone, unless another socket took it
            self.stop()
            if lose_data:
                shutil.rmtree(self.engine.directory / "jetstream", ignore_errors=True)
            self.engine.port = port
            self.engine.ensure()
            if self.engine.port == port:
                self.url = self.engine.url(ADMIN_USER, "broadcast")
                return
            time.sleep(0.1)
        pytest.fail(f"nats-server could not listen on port {port} again: another socket holds it")

    def stop(self) -> None:
        child = self.engine.child
        self.engine.stop()
        if child is not None:
            child.wait(5)  # reaped: no zombie, and no "still running" warning from its Popen


# -- an S3-API server ------------------------------------------------------------------------------------------------
# The credentials moto accepts, as the standard AWS variables (what `rhone local up --blobs` reads) and as boto3's
# keyword arguments.
S3_ENVIRON = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
S3_CLIENT_ARGS = {
    "aws_access_key_id": S3_ENVIRON["AWS_ACCESS_KEY_ID"],
    "aws_secret_access_key": S3_ENVIRON["AWS_SECRET_ACCESS_KEY"],
    "region_name": S3_ENVIRON["AWS_DEFAULT_REGION"],
}


@contextlib.contextmanager
def s3_api_server() -> Iterator[str]:
    """An S3-API server (moto's) on 127.0.0.1, on a port the kernel picked, in a thread; its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
