"""Shared test helpers.

`rhone` runs in-process through `rhone_cli.main.main(argv, Environment(...))` with StringIO streams and an explicit
environment dict, so tests never depend on the developer's HOME, keyring or terminal. `rhone_subprocess` runs the
installed console script for what only a real process shows (start-up imports, TTY detection, exit status).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rhone_cli.environment import Environment
from rhone_cli.main import main
from tests.engines import postgres_cluster

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = REPO / "schemas"
RHONE_BIN = Path(sys.executable).parent / "rhone"


def default_signal_dispositions() -> None:
    """`preexec_fn` of a child the test will signal. An ignored signal stays ignored across exec: a suite started with
    SIGINT ignored (a background job of a non-interactive shell) would hand that on, and a Python child would then
    never see its Ctrl-C. Handlers are reset by exec anyway; ignored dispositions only by this."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


# Popen keyword arguments for a child the test will signal: default dispositions (restore_signals adds SIGPIPE).
SIGNALLED_CHILD = {"restore_signals": True, "preexec_fn": default_signal_dispositions}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # schemathesis names each operation's test `test_api[METHOD /path]`, but under pytest 9.2 they all get the
        # node id `…::test_api`; pytest-xdist schedules by node id and would run only one of them.
        if isinstance(item, pytest.Function) and not item.nodeid.endswith("::" + item.name):
            _set_node_id(item, f"{item.nodeid.rsplit('::', 1)[0]}::{item.name}")


def _set_node_id(item: pytest.Item, node_id: str) -> None:
    try:
        from _pytest.nodeid import NodeId  # pytest >= 9.2 keeps a structured id
    except ImportError:
        item._nodeid = node_id
    else:
        item._id = NodeId.parse(node_id)


def duplicate_node_ids(node_ids: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({n for n in node_ids if n in seen or seen.add(n)})


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse a suite with two tests under one node id: the parallel run (pytest-xdist, README "Running the tests")
    keeps one test per id, so the others would silently never run."""
    duplicates = duplicate_node_ids([item.nodeid for item in session.items])
    if duplicates:
        raise pytest.UsageError(
            "tests share a node id (only one of each would run in parallel):\n" + "\n".join(duplicates)
        )


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


class _Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool) -> None:
        super().__init__(text)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture
def base_environ(tmp_path: Path) -> dict[str, str]:
    """A clean environment: temporary HOME and config dir, a keyring that fails, no CI, no token."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "HOME": str(home),
        "RHONE_CONFIG_DIR": str(home / ".config" / "rhone"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "PATH": os.environ.get("PATH", ""),
    }


@pytest.fixture
def rhone(tmp_path: Path, base_environ: dict[str, str]):
    """Run rhone in-process: rhone(*args, stdin="", cwd=..., environ={...}, tty=False, transport=None) -> Result.
    `transport` is the httpx transport every API client of the run uses (see `RecordingTransport`)."""

    def run(
        *args: str,
        stdin: str = "",
        cwd: Path | None = None,
        environ: dict[str, str] | None = None,
        tty: bool = False,
        transport=None,
    ) -> Result:
        environ = {**base_environ, **(environ or {})}
        return run_in_process(args, environ, cwd or tmp_path, stdin=stdin, tty=tty, transport=transport)

    return run


def run_in_process(
    args, environ: dict[str, str], cwd: Path, *, stdin: str = "", tty: bool = False, transport=None, client_factory=None
) -> Result:
    """One `rhone` run through main(), its streams captured; `transport` or `client_factory` carry its requests."""
    out, err = io.StringIO(), io.StringIO()
    env = Environment(
        stdin=_Stdin(stdin, tty), stdout=out, stderr=err, environ=environ, cwd=cwd, http_transport=transport
    )
    code = main(list(args), env, client_factory=client_factory)
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def rhone_subprocess(tmp_path: Path, base_environ: dict[str, str]):
    """Run the installed `rhone` console script in a clean environment."""

    def run(
        *args: str, stdin: str = "", cwd: Path | None = None, environ: dict[str, str] | None = None, timeout: float = 60
    ) -> Result:
        proc = subprocess.run(
            [str(RHONE_BIN), *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=cwd or tmp_path,
            env={**base_environ, **(environ or {})},
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


class RecordingTransport(httpx.BaseTransport):
    """An httpx transport that records every request and forwards it to `inner` (real sockets by default).
    `RecordingTransport.refusing()` refuses every request instead: for tests that prove nothing was sent."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self.inner = inner if inner is not None else httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []

    @classmethod
    def refusing(cls) -> RecordingTransport:
        return cls(_RefusingTransport())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class _RefusingTransport(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused by the test's transport", request=request)


def load_schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def assert_matches_schema(document, schema_name: str) -> None:
    import jsonschema

    schema = load_schema(schema_name)
    jsonschema.validators.validator_for(schema)(schema).validate(document)


VALID_TOML = """\
[project]
name = "hello"

[app]
name = "web"

[process]
start = "python app.py"
"""


@pytest.fixture(autouse=True)
def _never_touch_a_real_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    # keyring reads os.environ (not rhone's Environment): make sure an in-process test can never reach the
    # developer's real keyring. Tests that want a working keyring run rhone in a subprocess with their own backend.
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.delenv("CI", raising=False)


@dataclass
class ApiApp:
    """Rhone Local in process: the real API app (`app`, an ASGI app: no socket), its store and workers on a temporary
    data directory, and the owner's token. `run_operations()` drives every runnable operation to its end through
    the workers' own driver, synchronously (no worker thread runs: a test sees exactly the stages it caused)."""

    app: Any
    owner_token: str
    data_dir: Path
    plane: Any  # the wired control plane (rhone_local.server.ControlPlane): store, runner, workers

    @property
    def store(self) -> Any:
        return self.plane.store

    def run_operations(self, max_ops: int = 200) -> list[str]:
        """Claim and drive every runnable operation until none is left; the ids driven, in order. Drains the
        operations started end as the reconciler would end them (nothing relays connections in process)."""
        driven = self.plane.run_operations(max_ops=max_ops)
        self.plane.settle_drains()
        return driven


@pytest.fixture
def api_app(tmp_path: Path):
    """`ApiApp`: the real API and workers over a temporary data directory, no sandbox, no edge; every allocation
    process started during the test is stopped after it."""
    from rhone_local.server import open_control_plane

    data_dir = tmp_path / "rhone-local"
    data_dir.mkdir(mode=0o700)
    plane = open_control_plane(data_dir)
    try:
        yield ApiApp(plane.app, (data_dir / "owner.token").read_text().strip(), data_dir, plane)
    finally:
        plane.close()


@pytest.fixture
def postgres():
    """The superuser URL of a PostgreSQL 15 cluster of this test's own (tests/engines.py)."""
    with postgres_cluster() as cluster:
        yield cluster.url


_buckets = itertools.count(1)


@pytest.fixture(scope="session")
def s3_server():
    """An S3-API server (moto's) on 127.0.0.1, on a port the kernel picked, in a thread; its URL."""
    from tests.engines import s3_api_server

    with s3_api_server() as url:
        yield url


@pytest.fixture
def s3_client(s3_server: str, monkeypatch: pytest.MonkeyPatch):
    """A client of the loopback S3 server, with a bucket of this test's own, made from the standard AWS variables
    as `--blobs` reads them."""
    from tests.engines import S3_ENVIRON

    for name, value in S3_ENVIRON.items():
        monkeypatch.setenv(name, value)
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    bucket = f"rhone-blobs-{next(_buckets)}"
    client.create_bucket(Bucket=bucket)
    return client, bucket
