"""The middle tier: real `rhone` commands, in process, against the real Rhone Local API app and its workers.

Nothing listens on a socket and no rhone process is started: `main()` receives a client factory whose transport
hands each request to the API app in this process (`InProcessApi`), and after every mutating request the real
workers' stage handlers drive each runnable operation to its end, synchronously — what the server's worker threads
would do while the command waits. A command therefore sees exactly what it would see against `rhone local up`, in
about a tenth of a second.

`api_app` is the shared fixture of tests/conftest.py (`.app`, `.owner_token`, `.data_dir`, `.run_operations()`). The
deploy pipeline is the real one, without a sandbox: a deployment builds and starts its preview as real processes, so
the tests that deploy are marked slow.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from rhone_cli.http import ApiClient
from tests.conftest import ApiApp, Result, run_in_process

API_URL = "http://rhone.test"  # any URL: the transport never opens a socket
MUTATIONS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUDIT_TABLE = "audit"


class InProcessApi(httpx.BaseTransport):
    """An httpx transport into the API app (no socket). After a mutating request, every runnable operation is
    driven to its end before the answer returns (unless `drive` is off), so the command's wait sees it finished."""

    def __init__(self, api_app: ApiApp) -> None:
        self.api_app = api_app
        self.client = TestClient(api_app.app, base_url=API_URL, raise_server_exceptions=False)
        self.requests: list[httpx.Request] = []
        self.drive = True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        request.read()
        answer = self.client.send(request)
        if request.method in MUTATIONS and self.drive:
            self.api_app.run_operations()
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content, request=request)

    def close(self) -> None:
        """Each command's client closes its transport; the app stays up for the next command (the fixture closes
        it)."""


@dataclass
class Cli:
    """`rhone` in process against `api_app`: cli(*args, cwd=, environ=, stdin=, tty=) -> Result; every request goes
    through `transport`."""

    api_app: ApiApp
    transport: InProcessApi
    home: Path
    cwd: Path
    base_environ: dict[str, str] = field(default_factory=dict)

    def __call__(
        self,
        *args: str,
        cwd: Path | None = None,
        environ: dict[str, str] | None = None,
        stdin: str = "",
        tty: bool = False,
    ) -> Result:
        environ = {**self.base_environ, **(environ or {})}
        return run_in_process(args, environ, cwd or self.cwd, stdin=stdin, tty=tty, client_factory=self.client_factory)

    def client_factory(self, api_url: str, token: str | None, **settings: Any) -> ApiClient:
        return ApiClient(api_url, token, **{**settings, "transport": self.transport, "sleep": lambda seconds: None})

    def json(self, *args: str, **kwargs: Any) -> Any:
        """The --json document of a command that must succeed."""
        result = self(*args, "--json", **kwargs)
        assert result.exit_code == 0, (args, result.exit_code, result.stdout, result.stderr)
        return json.loads(result.stdout)

    def fails(self, expected_exit: int, *args: str, **kwargs: Any) -> dict[str, Any]:
        """The --json error document of a command that must fail with `expected_exit` and write nothing else."""
        result = self(*args, "--json", **kwargs)
        assert result.exit_code == expected_exit, (args, result.exit_code, result.stdout, result.stderr)
        error = json.loads(result.stdout)["error"]
        assert error["exit_code"] == expected_exit
        return error


@pytest.fixture
def cli(api_app: ApiApp, tmp_path: Path, base_environ: dict[str, str]) -> Iterator[Cli]:
    """Logged in as the workspace's owner, as `rhone local up` leaves a machine: a current profile with the API URL,
    the workspace and the owner's token (in the credentials file: the test's keyring refuses)."""
    transport = InProcessApi(api_app)
    work = tmp_path / "work"
    work.mkdir()
    with transport.client:  # the app's lifespan, and one event-loop thread for every request of the test
        cli = Cli(api_app, transport, Path(base_environ["HOME"]), work, dict(base_environ))
        login = cli("login", "--api-url", API_URL, "--with-token", "--insecure-storage", stdin=api_app.owner_token)
        assert login.exit_code == 0, login.stderr
        transport.requests.clear()
        yield cli


# -- what changed ------------------------------------------------------------------------------------------------------
def rows(api_app: ApiApp, *, with_audit: bool = False) -> dict[str, list[tuple]]:
    """Every row of every table of the control database (read-only, beside the app's own connection): equal results
    mean nothing changed. The audit log is left out unless asked for (a refused request adds a record to it)."""
    db = sqlite3.connect(f"file:{api_app.data_dir / 'rhone.db'}?mode=ro", uri=True)
    try:
        listed = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        tables = [name for (name,) in listed if with_audit or name != AUDIT_TABLE]
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in sorted(tables)}
    finally:
        db.close()


def counts(api_app: ApiApp) -> dict[str, int]:
    return {table: len(found) for table, found in rows(api_app, with_audit=True).items()}


TARGET = ("-w", "local", "-p", "shop", "-a", "web")


@pytest.fixture
def shop_web(cli: Cli) -> Cli:
    """A project `shop` with an app `web` (preview and production environments), made with the CLI."""
    cli.json("project", "create", "shop", "-w", "local")
    cli.json("app", "create", "web", "-w", "local", "-p", "shop")
    return cli
