"""Fixtures for Rhone Local: an in-process app on a temporary store, users with roles, deterministic workers.

Everything runs in-process through `fastapi.testclient.TestClient(standalone_api(store, notifier))`; operations are run
to completion by the test itself (`LocalEnv.run_operations`), never by background worker threads, so a test sees
exactly the stages it asked for.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

try:  # where the token hash lives moved from the API layer to the domain
    from rhone_local.domain.access import hash_token
except ImportError:  # pragma: no cover
    from rhone_local.api.app import hash_token  # type: ignore[attr-defined,no-redef]
from rhone_local.domain.operations import NOT_RUNNABLE
from rhone_local.notify import ChangeNotifier
from rhone_local.pipeline import build_pipeline
from rhone_local.server import bootstrap, ensure_topology, standalone_api
from rhone_local.store import Store
from rhone_local.topology import Topology
from rhone_local.workers import Workers

WS = "local"
BASE = f"/v1/workspaces/{WS}"
# A project directory's rhone.toml for the app `web` of project `shop` in workspace `local`.
SHOP_WEB_TOML = """\
[project]
name = "shop"
workspace = "local"

[app]
name = "web"

[process]
start = "python app.py"
"""
# `audit` is compared separately from the other tables: a denial adds a row to it and changes nothing else.
AUDIT_TABLE = "audit"


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


@dataclass
class Actor:
    """Someone who calls the API: a user (with a role) or a runtime identity."""

    id: str
    token: str
    role: str | None = None
    email: str | None = None
    token_id: str | None = None
    kind: str = "user"
    app_id: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return auth(self.token)


@dataclass
class LocalEnv:
    data_dir: Path
    store: Store
    notifier: ChangeNotifier
    workers: Workers
    client: TestClient
    owner: Actor
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # -- naming ------------------------------------------------------------------------------------------------------
    def name(self, prefix: str = "n") -> str:
        """A fresh resource name matching the API's name pattern."""
        return f"{prefix}{next(self._names)}"

    # -- users -------------------------------------------------------------------------------------------------------
    def make_user(self, role: str, *, email: str | None = None) -> Actor:
        """The owner invites a member with `role`, then issues a token for them."""
        email = email or f"{self.name('user')}@example.test"
        invited = self.client.post(f"{BASE}/members", json={"email": email, "role": role}, headers=self.owner.headers)
        assert invited.status_code == 201, invited.text
        user_id = invited.json()["user_id"]
        issued = self.client.post(
            f"{BASE}/tokens", json={"name": f"token for {email}", "user_id": user_id}, headers=self.owner.headers
        )
        assert issued.status_code == 201, issued.text
        token = issued.json()
        assert token["subject_id"] == user_id
        return Actor(id=user_id, token=token["secret"], role=role, email=email, token_id=token["id"])

    def make_outsider(self) -> Actor:
        """A user with a valid token who is not a member of any workspace (the API cannot make one)."""
        from rhone_local.domain.ids import new_id
        from rhone_local.store import now_iso

        user_id, secret = new_id("user"), "rht_outsider_" + self.name("s")
        with self.store.write() as c:
            c.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?)", (user_id, "outsider", "outsider@example.test", now_iso())
            )
            token = self.store.create_token(
                c, subject_kind="user", subject_id=user_id, name="outsider", secret_hash=hash_token(secret)
            )
        return Actor(id=user_id, token=secret, role=None, token_id=token["id"])

    def issue_token(self, for_user: str, name: str = "extra") -> dict[str, Any]:
        issued = self.client.post(
            f"{BASE}/tokens", json={"name": name, "user_id": for_user}, headers=self.owner.headers
        )
        assert issued.status_code == 201, issued.text
        return issued.json()

    # -- operations --------------------------------------------------------------------------------------------------
    def run_operations(self, worker: str = "test-worker", max_ops: int = 200) -> list[str]:
        """Claim and drive every runnable operation until none is left; returns the ids driven, in order."""
        driven: list[str] = []
        for _ in range(max_ops):
            op = self.store.claim_operation(worker, self.workers.lease_seconds, NOT_RUNNABLE)
            if op is None:
                return driven
            self.workers.drive(op, worker)
            driven.append(op["id"])
        raise AssertionError(f"operations did not drain after {max_ops} claims")

    def operation(self, op_id: str) -> dict[str, Any]:
        op = self.store.operation(op_id)
        assert op is not None, op_id
        return op

    # -- tenancy helpers (as the owner, operations run to completion) -------------------------------------------------
    def create_project(self, name: str | None = None) -> dict[str, Any]:
        name = name or self.name("prj")
        started = self.client.post(f"{BASE}/projects", json={"name": name}, headers=self.owner.headers)
        assert started.status_code == 202, started.text
        self.run_operations()
        assert self.operation(started.json()["id"])["state"] == "succeeded"
        project = self.store.project(self.workspace_id, name)
        assert project is not None
        return project

    def create_app(self, project: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        name = name or self.name("app")
        started = self.client.post(
            f"{BASE}/projects/{project['name']}/apps", json={"name": name}, headers=self.owner.headers
        )
        assert started.status_code == 202, started.text
        self.run_operations()
        op = self.operation(started.json()["id"])
        assert op["state"] == "succeeded", op
        app = self.store.app(project["id"], name)
        assert app is not None
        return app

    def mint_runtime_identity(self, project: dict[str, Any], app: dict[str, Any]) -> Actor:
        minted = self.client.post(
            f"{BASE}/projects/{project['name']}/apps/{app['name']}/runtime-identities", headers=self.owner.headers
        )
        assert minted.status_code == 201, minted.text
        body = minted.json()
        assert body["app_id"] == app["id"]
        return Actor(
            id=body["id"], token=body["token"]["secret"], token_id=body["token"]["id"], kind="runtime", app_id=app["id"]
        )

    # -- observation ---------------------------------------------------------------------------------------------------
    @property
    def workspace_id(self) -> str:
        workspace = self.store.workspace(WS)
        assert workspace is not None
        return workspace["id"]

    def state_tables(self) -> list[str]:
        """Every table of the control database but the audit log (read from the schema, so new tables count)."""
        return [name for name in self.store.table_names() if name != AUDIT_TABLE]

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every row of every state table: equal snapshots mean nothing changed (not even a `revoked_at`)."""
        return {
            table: sorted((tuple(row) for row in self.store.conn.execute(f"SELECT * FROM {table}")), key=repr)
            for table in self.state_tables()
        }

    def counts(self) -> dict[str, int]:
        return {table: self.store.count(table) for table in self.state_tables()}

    def audit_rows(self) -> list[dict[str, Any]]:
        """Every audit record of the workspace, read through the API as the owner (all pages)."""
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(1000):
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = self.client.get(f"{BASE}/audit", params=params, headers=self.owner.headers)
            assert page.status_code == 200, page.text
            body = page.json()
            rows.extend(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                return rows
        raise AssertionError("audit pagination did not end")

    def audit_for(self, request_id: str) -> list[dict[str, Any]]:
        return [row for row in self.audit_rows() if row["request_id"] == request_id]


def queued_deployments(local: LocalEnv, app_path: str, count: int) -> list[str]:
    """`count` deployments of the app at `app_path`, created through the API and left queued (no worker runs them),
    oldest first: for tests of what lists and completion show."""
    import hashlib

    from rhone_cli.artifacts.manifest import digest_of

    content = b"print('hello')\n"
    digest = hashlib.sha256(content).hexdigest()
    stored = local.client.put(f"/v1/blobs/sha256:{digest}", content=content, headers=local.owner.headers)
    assert stored.status_code in (200, 201), stored.text
    manifest = {"version": 1, "files": [{"path": "app.py", "size": len(content), "mode": "644", "sha256": digest}]}
    body = {
        "environment": "preview",
        "manifest": manifest,
        "manifest_digest": digest_of(manifest),
        "config": {"build": {}, "process": {"start": "python app.py"}},
    }
    ids = []
    for _ in range(count):
        created = local.client.post(f"{app_path}/deployments", json=body, headers=local.owner.headers)
        assert created.status_code == 202, created.text
        ids.append(created.json()["target_id"])
    return ids


def database_at_version(path: Path, version: int) -> sqlite3.Connection:
    """A control database migrated only up to `version`, as an older Rhone Local left it (autocommit connection)."""
    db = sqlite3.connect(path, isolation_level=None)
    for script in sorted(resources.files("rhone_local.migrations").iterdir(), key=lambda p: p.name):
        if script.name.endswith(".sql") and (number := int(script.name.split("_", 1)[0])) <= version:
            db.executescript(f"BEGIN;\n{script.read_text()}\nPRAGMA user_version={number};\nCOMMIT;")
    return db


def open_env(
    data_dir: Path, notifier: ChangeNotifier | None = None, store: Store | None = None
) -> tuple[LocalEnv, TestClient]:
    """The `local` fixture's Rhone Local, over `store` when given (tests/cluster runs it on PostgreSQL)."""
    store = store or Store(data_dir / "rhone.db")
    bootstrap(store, data_dir)
    ensure_topology(store)
    notifier = notifier or ChangeNotifier()
    # Binding, scale and region stages run in process (scale's runner is never reached here: it needs a deploy);
    # deploy and promotion stages need the real pipeline and are driven end to end in tests/e2e.
    topology = Topology(store, build_pipeline(store, data_dir, edge_port=None))
    workers = Workers(store, notifier, count=1, lease_seconds=5.0, stage_delay=0, topology=topology)
    client = TestClient(standalone_api(store, notifier))
    owner_token = (data_dir / "owner.token").read_text().strip()
    owner_row = store.one("SELECT user_id FROM members WHERE role = 'owner'")
    assert owner_row is not None
    owner = Actor(id=owner_row["user_id"], token=owner_token, role="owner")
    return LocalEnv(data_dir, store, notifier, workers, client, owner), client


@pytest.fixture
def notifier() -> ChangeNotifier:
    """The change notifier handed to the app and the workers (a test module may override this fixture)."""
    return ChangeNotifier()


@pytest.fixture
def local(tmp_path: Path, notifier: ChangeNotifier) -> Iterator[LocalEnv]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env, client = open_env(data_dir, notifier)
    with client:
        yield env
    env.store.close()


@pytest.fixture
def live_url(local: LocalEnv) -> Iterator[str]:
    """Rhone Local's app on the test's store, served by uvicorn on a free 127.0.0.1 port in a thread."""
    with serve_live(local) as url:
        yield url


@contextlib.contextmanager
def serve_live(local: LocalEnv) -> Iterator[str]:
    """The `live_url` fixture's server over `local` (either backend)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the kernel picks a free port; uvicorn serves this very socket (no race)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        standalone_api(local.store, local.notifier),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Any]:
    """Rhone Local in process with the real deploy pipeline, promotion stages and runner (see `_stack.py`), and a
    project and app to deploy; every allocation process it started is stopped afterwards."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with open_stack(Store(data_dir / "rhone.db"), data_dir) as opened:
        yield opened


@contextlib.contextmanager
def open_stack(store: Store, data_dir: Path) -> Iterator[Any]:
    """The `stack` fixture's Rhone Local over `store` (either backend: tests/cluster runs it on PostgreSQL)."""
    from rhone_local.promotion import Promotions

    from ._stack import Stack

    bootstrap(store, data_dir)
    ensure_topology(store)
    notifier = ChangeNotifier()
    pipeline = build_pipeline(store, data_dir, edge_port=None)
    workers = Workers(
        store,
        notifier,
        count=2,
        lease_seconds=5.0,
        stage_delay=0,
        pipeline=pipeline,
        promotions=Promotions(store, pipeline),
        topology=Topology(store, pipeline),
    )
    client = TestClient(standalone_api(store, notifier, pipeline=pipeline))
    owner_row = store.one("SELECT user_id FROM members WHERE role = 'owner'")
    assert owner_row is not None
    owner = Actor(id=owner_row["user_id"], token=(data_dir / "owner.token").read_text().strip(), role="owner")
    env = LocalEnv(data_dir, store, notifier, workers, client, owner)
    try:
        with client:
            project = env.create_project("shop")
            yield Stack(env, project, env.create_app(project, "web"))
    finally:
        workers.stop()
        pipeline.runner.stop_all("the test is over")
        store.close()
