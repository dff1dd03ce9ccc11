"""Run Rhone Local in the foreground: open the store, bootstrap on first start, start workers, serve HTTP.

`rhone local up` starts this as a background process (`python -m rhone_local serve …`) and waits for `/v1/health`.
Files in the data directory:
- `rhone.db` (+ WAL files): the control database;
- `owner.token` (0600): the bootstrap owner's API token, read by `rhone local up` to write the `local` profile;
- `edge-affinity.key` (0600): the key that signs the edge's affinity cookies (created on first start);
- `server.json`: pid, ports and version of the running server, written atomically once both ports are bound (the
  ports it got: `--port 0`/`--edge-port 0` ask for any free one); removed on clean exit;
- `rhone-local.lock`: held (flock, exclusive) by the one server of this data directory for its whole life;
- `rhone-local.log`: the log (written by the parent's redirection when started in the background).
The directory is 0700, the database files and the token 0600 (rhone_local/datadir.py).

A server that must not start (the data directory is in use or broken) prints `error [<code>]: <message>` and
`hint: <hint>` on stderr and exits with status 3 (`REFUSED_STATUS`); `rhone local up` reads those two lines back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rhone_local import __version__
from rhone_local.api.app import create_app
from rhone_local.blobs import BlobStore, open_blob_store
from rhone_local.datadir import REFUSED_STATUS, StartRefused, database_errors, open_data_dir
from rhone_local.domain.access import hash_token, new_secret
from rhone_local.edge import affinity_key
from rhone_local.edge_feed import EdgeFeed
from rhone_local.edge_relay import raise_open_file_limit
from rhone_local.edge_supervisor import EdgeSupervisor
from rhone_local.nodes import (
    DEFAULT_NODE,
    ROLES,
    Membership,
    NodeIdentity,
    api_url_problem,
    node_name_problem,
    parse_roles,
)
from rhone_local.notify import ChangeNotifier
from rhone_local.operations.registry import registry
from rhone_local.pipeline import UNSANDBOXED, build_pipeline
from rhone_local.ports import ApiPorts
from rhone_local.promotion import Promotions
from rhone_local.reconciler import Reconciler
from rhone_local.retention import Retention
from rhone_local.sandbox import Sandbox, describe, detect, exposure_warning
from rhone_local.stopping import Deadline
from rhone_local.store import NodeNameTaken, NotRhoneDatabase, Store
from rhone_local.topology import Topology
from rhone_local.workers import Workers

log = logging.getLogger("rhone_local")

WORKSPACE = "local"
OWNER = "local-owner"
REGION = "local-1"
CELL = "local-1a"
# The topology this machine simulates: region, jurisdiction (residency is checked against it), cells. The first is
# primary — every environment serves there from its creation; the second serves an environment only after a Region
# Enablement made it eligible. Names stay internal: no public URL or app id contains them.
TOPOLOGY = (("local-1", "eu", ("local-1a",)), ("local-2", "us", ("local-2a",)))
# A stop waits this long, in all, for the background threads (workers, reconciler, retention) to finish what they
# are doing; what they leave is durable and taken up after the next start. The whole stop of a node that is not in a
# cluster is bounded well under `rhone local down`'s default wait (docs/architecture.md, "Stopping").
STOP_THREADS_SECONDS = 5.0
API_SHUTDOWN_SECONDS = 5


def bootstrap(store: Store, data_dir: Path) -> None:
    """First start only: a workspace, its owner and a token, and the topology (one region, one cell)."""
    if store.is_bootstrapped():
        return
    secret = new_secret()
    # The token file is written (atomically) before the database commits: a crash in between leaves an unused file
    # that the next start overwrites, never a bootstrapped database whose owner token was lost.
    token_file = _write_owner_token(data_dir, secret)
    ids = store.bootstrap(workspace=WORKSPACE, owner=OWNER, token_hash=hash_token(secret), region=REGION, cell=CELL)
    if not ids:  # another node sharing the store bootstrapped it first: its owner token is the one
        token_file.unlink(missing_ok=True)
        return
    log.info("bootstrapped workspace %s (%s), owner %s; token in %s", WORKSPACE, ids["workspace_id"], OWNER, token_file)


def _write_owner_token(data_dir: Path, secret: str) -> Path:
    """`owner.token`, mode 0600, replaced atomically."""
    return _write_atomically(data_dir / "owner.token", secret + "\n")


def _write_atomically(path: Path, text: str) -> Path:
    """`path`, mode 0600, replaced in one step: a reader sees the old file or the whole new one, never a part."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)
    return path


def recover_owner(data_dir: Path, workspace_ref: str = WORKSPACE) -> dict[str, str]:
    """Mint a new owner token for the workspace's first owner and write it to `owner.token`, for an owner who lost or
    revoked every token. Its authority is write access to the data directory (the database and the token file): the
    API never offers it. Audited as `token.recover`."""
    from rhone_local.domain.access import Principal
    from rhone_local.domain.ids import new_id

    database = data_dir / "rhone.db"
    if not database.is_file() or database.stat().st_size == 0:
        raise SystemExit(f"{database} does not exist or is empty: there is no workspace to recover")
    try:
        store = Store(database, must_exist=True)
    except NotRhoneDatabase as error:
        raise SystemExit(f"{error}: there is no workspace to recover") from None
    try:
        workspace = store.workspace(workspace_ref)
        owner = store.first_owner(workspace["id"]) if workspace else None
        if workspace is None or owner is None:
            raise SystemExit(f"no workspace {workspace_ref!r} with an owner in {database}")
        secret = new_secret()
        token_file = _write_owner_token(data_dir, secret)
        with store.write() as c:
            token = store.create_token(
                c,
                subject_kind="user",
                subject_id=owner["id"],
                name="recovered owner token",
                secret_hash=hash_token(secret),
                workspace_id=workspace["id"],
                role="owner",
            )
            store.audit(
                workspace_id=workspace["id"],
                principal=Principal("user", owner["id"], owner["name"], token["id"]),
                action="token.recover",
                target=token["id"],
                request_id=new_id("request"),
                result="allowed",
                detail={"via": "data directory"},
                tx=c,
            )
    finally:
        store.close()
    return {
        "workspace": workspace["name"],
        "owner": owner["name"],
        "token_id": token["id"],
        "token_file": str(token_file),
    }


def ensure_topology(store: Store) -> None:
    """Every start: the regions and cells of TOPOLOGY exist (a database from an older version gains the second)."""
    for index, (region, jurisdiction, cells) in enumerate(TOPOLOGY):
        store.ensure_region(region, jurisdiction, list(cells), primary=index == 0)


def _restore_previews(reconciler: Reconciler) -> None:
    try:
        restarted = reconciler.restore_previews()
        if restarted:
            log.info("restarted the preview allocations of %s", ", ".join(restarted))
    except Exception:  # a failed restore must not take the server down; the log says why
        log.exception("restoring preview allocations failed")
    finally:
        reconciler.store.close()


def _sandbox(mode: str, data_dir: Path, read_only: Sequence[str]) -> Sandbox:
    """The sandbox builds and apps run in, decided once; a mode that cannot be had refuses the start."""
    try:
        return detect(mode, state_dir=data_dir / "sandbox", extra_ro=read_only)
    except ValueError as error:
        raise StartRefused(
            "sandbox_unavailable",
            str(error),
            "install bubblewrap (`apt-get install bubblewrap`), or start with --sandbox auto or --sandbox none",
        ) from None


def _blob_store(url: str | None, endpoint: str | None, data_dir: Path) -> BlobStore | None:
    """The `--blobs` store, reachable now, or a refused start saying what to fix (docs/multi-node.md, "Blobs")."""
    hint = "give --blobs s3://BUCKET[/PREFIX] with --blobs-endpoint URL (or AWS_ENDPOINT_URL) and AWS credentials"
    try:
        blobs = open_blob_store(url, data_dir, endpoint=endpoint)
    except ValueError as error:
        raise StartRefused("blobs_unavailable", str(error), hint) from None
    except ImportError as error:
        raise StartRefused("blobs_unavailable", f"--blobs needs {error.name}", "pip install 'rhone[cluster]'") from None
    if blobs is None:
        return None
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        blobs.remote.check()
    except (BotoCoreError, ClientError) as error:  # unreachable endpoint, no credentials, no such bucket
        raise StartRefused("blobs_unavailable", f"the blob store {url} is not reachable: {error}", hint) from None
    return blobs


def _route_publisher(url: str | None, store: Store) -> Any:
    """The `--events nats://…` publisher of route events (not started), or None; a URL it cannot use refuses the
    start."""
    if not url:
        return None
    from urllib.parse import urlsplit

    if urlsplit(url).scheme not in ("nats", "tls") or not urlsplit(url).hostname:
        raise StartRefused("events_unavailable", f"--events {url!r}: expected nats://HOST:PORT", "give a NATS URL")
    try:
        import nats  # noqa: F401 - a missing package refuses the start, not the first publish
    except ImportError:
        raise StartRefused("events_unavailable", "--events needs nats-py", "pip install 'rhone[cluster]'") from None
    from rhone_local.route_stream import RouteEventPublisher

    return RouteEventPublisher(url, store.route_events_after, lock=store.session_lock("route-events"))


def _api_server(config: Any, feed: EdgeFeed | None, before_shutdown: Callable[[], None]) -> Any:
    """uvicorn's server, whose graceful shutdown first runs `before_shutdown` (the allocations' drains, while the
    edges still carry their connections and report them through this API), then answers the edges' long-polls (it
    waits for every request)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            await asyncio.get_running_loop().run_in_executor(None, before_shutdown)
            if feed is not None:
                feed.close()
            await super().shutdown(sockets)

    return Server(config)


def _listen(host: str, port: int, flag: str) -> socket.socket:
    """A listening socket bound here, so that the port it got (any free one for port 0) is known before anything
    reports it; a taken port refuses the start."""
    try:
        return socket.create_server((host, port), backlog=2048)  # SO_REUSEADDR: a restart finds it free
    except OSError as error:
        raise _port_refused(host, port, flag, error) from None


def _port_refused(host: str, port: int, flag: str, error: OSError) -> StartRefused:
    return StartRefused(
        "port_in_use",
        f"cannot listen on {host}:{port} for {flag} ({error.strerror or error})",
        f"free it, or choose another with `rhone local up {flag} N` (0 picks any free port)",
    )


@dataclass
class ControlPlane:
    """Everything of Rhone Local but its listeners, wired together over one store: what `serve` runs, and what tests
    drive in process (tests/conftest.py, `standalone_api`)."""

    store: Store
    notifier: ChangeNotifier
    pipeline: Any
    workers: Workers
    retention: Retention
    reconciler: Reconciler
    app: Any  # the ASGI app of the API
    feed: EdgeFeed | None = None
    node: NodeIdentity = field(default_factory=NodeIdentity)
    membership: Membership | None = None
    clock: Callable[[], float] = time.monotonic  # what a stop's deadline is measured on (tests give their own)

    @property
    def runner(self) -> Any:
        return self.pipeline.runner

    def run_operations(self, worker: str = "in-process", max_ops: int = 200) -> list[str]:
        """Drive every runnable operation to its end in this thread; the ids driven, in order."""
        return self.workers.run_until_idle(worker, max_ops=max_ops)

    def settle_drains(self, timeout: float = 60) -> None:
        """End the drains under way as the reconciler's tick would (with no edge, no connection holds one open)."""
        deadline = time.monotonic() + timeout  # generous: a busy machine delays the apps' exits, never the outcome
        while time.monotonic() < deadline:
            self.runner.tick()
            if not self.runner.own_allocations_in("draining"):
                return
            time.sleep(0.05)  # an app given SIGTERM exits on its own time; the runner's kill grace bounds it
        draining = [a["id"] for a in self.runner.own_allocations_in("draining")]
        raise RuntimeError(f"allocations still draining: {draining}")

    def join(self, *, takeover: bool = False, **timing: float) -> Membership:
        """Register this control plane as its node in the store (NodeNameTaken when another live process holds the
        name, unless `takeover`: every other instance is known dead), without starting the heartbeat
        (`membership.start()` does; tests beat by hand). `timing`: heartbeat, lapse (docs/multi-node.md, "Nodes")."""
        self.membership = Membership(self.store, self.node, on_lost=self.runner.abandon_processes, **timing)
        self.membership.register(takeover=takeover)
        self.runner.lapse = self.membership.lapse
        return self.membership

    def stop(self) -> None:
        """Nothing starts from now on and probes under way give up (their stages resume after the next start); then
        the workers finish, the node leaves the cluster (nothing more is placed on it; its name stays held), each
        ready instance of a route owner here gets a ready replacement on another live runner node (`hand_over`,
        bounded), and every allocation of this node drains — the edges still carry the connections they have, and
        send them nothing new — for a bounded time, and stops; then the engines; then the name is freed. Other nodes'
        allocations are never touched. A node whose name was taken over (it lapsed) leaves its rows alone: they are
        the new holder's."""
        self.runner.closing.set()
        self.pipeline.engines.stop_supervising()
        background = (self.reconciler, self.workers, self.retention)
        for part in background:  # all told at once: none goes on claiming work while another is waited for
            part.request_stop()
        deadline = Deadline(STOP_THREADS_SECONDS, self.clock)  # one wait shared by every background thread
        left = [thread.name for part in background for thread in part.join(deadline)]
        if left:
            log.warning("stopped waiting for %s: what they were doing resumes after the next start", left)
        if self.membership is not None:
            # Before the drains: a node still live while it drains is where the leader's healing would place the
            # instances it drains (it is the least loaded once they stopped), on a runner that starts nothing more.
            self.membership.leave()
            if not self.membership.lost.is_set() and self.runner.runs_processes:
                self.runner.hand_over()  # a planned stop interrupts no app another live runner can serve
        if self.membership is None or not self.membership.lost.is_set():
            self.runner.stop_all("Rhone Local stopped")
        self.pipeline.engines.stop_all()  # after the apps, which may write their sessions while they drain
        if self.membership is not None:
            self.membership.stop()

    def close(self) -> None:
        self.stop()
        self.store.close()


def api_ports(pipeline: Any, retention: Any = None, edge_feed: EdgeFeed | None = None) -> ApiPorts:
    """What the API uses of the control plane, taken from the pipeline (its runner, provisioner and engines)."""
    return ApiPorts(
        data_dir=pipeline.data_dir,
        blobs=pipeline.blobs,
        deployments=pipeline,
        logs=pipeline.runner,
        databases=pipeline.provisioner,
        retention=retention if retention is not None else Retention(pipeline),
        engines=pipeline.engines,
        edge_feed=edge_feed,
    )


def standalone_api(
    store: Store,
    notifier: ChangeNotifier | None = None,
    *,
    pipeline: Any = None,
    edge_feed: EdgeFeed | None = None,
) -> Any:
    """The API app alone over `store` (tests, the OpenAPI document): its pipeline, unless given, rooted beside the
    database, with no edge."""
    pipeline = pipeline or build_pipeline(store, store.path.parent, edge_port=None)
    return create_app(store, notifier, ports=api_ports(pipeline, edge_feed=edge_feed))


def wire(
    store: Store,
    data_dir: Path,
    *,
    notifier: ChangeNotifier | None = None,
    edge_feed: EdgeFeed | None = None,
    edge_port: int | None = None,
    sandbox: Sandbox | None = None,
    app_databases: str | None = None,
    cache_limit: int | None = None,
    blobs: BlobStore | None = None,
    node: NodeIdentity | None = None,
) -> ControlPlane:
    """Build the control plane over `store`: the pipeline and runner, the stage handlers, the workers, retention, the
    reconciler and the API app (nothing is started). `blobs` replaces the default filesystem blob store (`--blobs`);
    `node` names this node and its roles (default: the single node `local` with every role)."""
    node = node or NodeIdentity()
    notifier = notifier or ChangeNotifier()
    store.listen_for_changes(notifier)  # commits of other nodes sharing the store wake this one's waiters
    limits = {"cache_limit": cache_limit} if cache_limit is not None else {}
    pipeline = build_pipeline(
        store, data_dir, edge_port=edge_port, sandbox=sandbox or UNSANDBOXED, app_databases=app_databases, **limits
    )
    if blobs is not None:  # before anything below holds on to the pipeline's
        pipeline.blobs = pipeline.runner.blobs = blobs
    runner = pipeline.runner
    runner.node, runner.address, runner.runs_processes = node.name, node.address, node.has("runner")
    if edge_feed is not None:
        pipeline.runner.open_connections = edge_feed.open_connections  # drains read what the edges report
    promotions, topology = Promotions(store, pipeline, edge_feed), Topology(store, pipeline)
    # Every operation kind's stages, over the implementations built here (docs/architecture.md, "Operations").
    kinds = registry(store, pipeline=pipeline, promotions=promotions, topology=topology)
    workers = Workers(store, notifier, pipeline=pipeline, promotions=promotions, topology=topology, kinds=kinds)
    workers.node = node.name
    retention = Retention(pipeline)
    pipeline.on_deploy_finished = retention.wanted.set
    app = create_app(store, notifier, ports=api_ports(pipeline, retention, edge_feed))
    reconciler = Reconciler(store, pipeline, heals=node.has("worker"))
    return ControlPlane(store, notifier, pipeline, workers, retention, reconciler, app, edge_feed, node)


def open_control_plane(data_dir: Path, **options: Any) -> ControlPlane:
    """A control plane on `data_dir`'s database, bootstrapped on first use (no lock taken, nothing started)."""
    store = Store(data_dir / "rhone.db")
    bootstrap(store, data_dir)
    ensure_topology(store)
    return wire(store, data_dir, **options)


def serve(
    data_dir: Path,
    host: str,
    port: int,
    edge_port: int | None,
    *,
    edge_processes: int = 1,
    sandbox_mode: str = "auto",
    sandbox_ro: Sequence[str] = (),
    cache_limit: int | None = None,
    app_databases: str | None = None,
    blobs_url: str | None = None,
    blobs_endpoint: str | None = None,
    events_url: str | None = None,
    node: NodeIdentity | None = None,
    api_url: str | None = None,
    store_url: str | None = None,
) -> int:
    """Run this node: only the parts of its roles (rhone_local/nodes.py); the default node has them all."""
    import uvicorn

    node = node or NodeIdentity(address=host)
    raise_open_file_limit()  # edge processes inherit it: their connection cap is a share of it
    store = open_data_dir(data_dir, store_url)  # holds the data directory's lock until this process exits
    blobs = _blob_store(blobs_url, blobs_endpoint, data_dir)
    publisher = _route_publisher(events_url, store) if node.has("api") else None
    with database_errors(store.path):
        bootstrap(store, data_dir)
        ensure_topology(store)
    if node.has("edge") and not node.has("api") and not api_url:
        raise StartRefused(
            "edge_needs_api",
            f"node {node.name}: an edge without the api role on its node follows another node's API",
            "give --api URL (the API of a node with the api role), or add api to --role",
        )
    sandbox = _sandbox(sandbox_mode, data_dir, sandbox_ro)
    warning = exposure_warning(sandbox)
    if warning:
        log.warning("%s", warning)
    # Both ports are bound before anything is wired: the pipeline's URLs and the edges' API URL name the ports got.
    listener = _listen(host, port, "--port")
    port = listener.getsockname()[1]
    feed = EdgeFeed(store, node.name) if edge_port is not None and node.has("api") else None
    edges = None
    if edge_port is not None and node.has("edge"):
        affinity_key(data_dir)  # created here, before edge processes read it
        # Without the api role the edges follow another node's API; a feed here only registers them in the store.
        registry = feed or EdgeFeed(store, node.name)
        followed = f"http://{host}:{port}" if node.has("api") else str(api_url)
        edges = _edge_supervisor(registry, host, edge_port, followed, data_dir, edge_processes)
        edge_port = edges.port
    plane = wire(
        store,
        data_dir,
        edge_feed=feed,
        edge_port=edge_port if edges is not None else None,
        sandbox=sandbox,
        app_databases=app_databases,
        cache_limit=cache_limit,
        blobs=blobs,
        node=node,
    )
    membership = _join(plane)
    pipeline, workers, retention, reconciler = plane.pipeline, plane.workers, plane.retention, plane.reconciler
    if 0 < store.migrated_from < 5:
        # Schema 5 records the migrations each environment applied; a database routed before it learns them from
        # its route history (the artifacts are immutable, so this is what they carried then).
        log.info("recorded applied migrations from %d route owner(s)", pipeline.record_route_history_migrations())
    adopted = pipeline.runner.reconcile()  # this node's allocations only
    if adopted:
        log.info("adopted %d running allocation(s) that survived the previous server", len(adopted))
    wound_down = threading.Event()

    def wind_down() -> None:
        if not wound_down.is_set():
            wound_down.set()
            plane.stop()  # only then do the edges close

    app = plane.app if node.has("api") else _health_only_app(node)
    server = _api_server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # After the plane stopped: requests still open then (a long-poll, a log follow) get this long, then are
            # cut; their clients poll again or reconnect to the next start.
            timeout_graceful_shutdown=API_SHUTDOWN_SECONDS,
        ),
        feed,
        wind_down,
    )
    if feed is not None:
        feed.start()
    if edges is not None:
        edges.start()  # they follow the feed as soon as the API answers
        log.info("edge: %d process(es) on %s:%d", edges.slots, host, edges.port)
    state_file = _write_atomically(
        data_dir / "server.json",
        json.dumps(
            {
                "pid": os.getpid(),
                "api_url": f"http://{host}:{port}",
                "port": port,
                "edge_port": edge_port if edges is not None else None,
                "version": __version__,
                "started_at": time.time(),
                "data_dir": str(data_dir),
                "sandbox": describe(sandbox),
                "node": node.name,
                "roles": node.ordered_roles(),
            }
        ),
    )
    membership.start()
    if node.has("worker"):
        workers.start()
        retention.start()
    if publisher is not None:
        publisher.start()  # route events on NATS, after they commit (docs/multi-node.md, "Route events")
        if feed is not None:
            feed.on_change(publisher.poke)  # the feed's watcher sees each commit first: publish at once
    if node.has("worker"):
        # Previews come back in the background: the API answers meanwhile, and the edge says 503 until they are ready.
        threading.Thread(target=_restore_previews, args=(reconciler,), name="restore-previews", daemon=True).start()
    # Drains, dead and unresponsive instances, and each route owner's instance count (also after this restart).
    reconciler.start()
    if node.has("runner"):
        pipeline.engines.start()  # runtime-service engines: adopted or started again, and kept running
    log.info(
        "Rhone Local %s node %s (%s) listening on http://%s:%s (data in %s)",
        __version__,
        node.name,
        ",".join(node.ordered_roles()),
        host,
        port,
        data_dir,
    )
    try:
        server.run(sockets=[listener])
    finally:
        wind_down()  # already done when the API shut down gracefully; here after a failed start
        if edges is not None:
            edges.stop()
        if feed is not None:
            feed.stop()
        if publisher is not None:
            publisher.stop()
        state_file.unlink(missing_ok=True)
        listener.close()
    return 0 if server.started else 1


def _join(plane: ControlPlane) -> Membership:
    """Register the node (a live name held by another process refuses the start, nothing changed); when its name is
    later taken over after a lapse, its processes stop at once and the server shuts down.

    The name is held by a lock, not only by a heartbeat: on SQLite the data directory's (taken at open: one server
    per store), on a shared store a session advisory lock per name held for the process's life. Holding it proves a
    previous holder dead, so a name still beating is taken over (a restart after kill -9 does not wait for the
    lapse); not getting it means another live process holds the name."""
    lock = plane.store.session_lock(f"node:{plane.node.name}")
    hint = f"choose another name with --node, or stop the node {plane.node.name!r} first"
    if lock is not None and not lock.acquire():
        raise StartRefused("node_name_taken", f"node {plane.node.name!r} is held by another live process", hint)
    try:
        membership = plane.join(takeover=True)
    except NodeNameTaken as taken:  # only a control plane in this process that registered without the lock
        if lock is not None:
            lock.release()
        raise StartRefused("node_name_taken", str(taken), hint) from None
    membership.name_lock = lock

    def lost() -> None:
        plane.runner.abandon_processes()
        os.kill(os.getpid(), signal.SIGTERM)  # the API's graceful shutdown, then `wind_down`

    membership.on_lost = lost
    return membership


def _health_only_app(node: NodeIdentity) -> Any:
    """What a node without the api role serves on its port: `/v1/health` (how `rhone local up` and `status` know it
    runs, with its node and roles), nothing else."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from rhone_local.store import SCHEMA_VERSION

    document = {
        "status": "ok",
        "version": __version__,
        "schema_version": SCHEMA_VERSION,
        "node": node.name,
        "roles": node.ordered_roles(),
    }
    return Starlette(routes=[Route("/v1/health", lambda request: JSONResponse(document))])


def _edge_supervisor(
    feed: EdgeFeed, host: str, port: int, api_url: str, data_dir: Path, processes: int
) -> EdgeSupervisor:
    """The edges' supervisor, whose listening socket is bound at construction (a taken port refuses the start)."""
    try:
        return EdgeSupervisor(feed, host=host, port=port, api_url=api_url, data_dir=data_dir, processes=processes)
    except OSError as error:
        raise _port_refused(host, port, "--edge-port", error) from None


def _node_name(text: str) -> str:
    problem = node_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _api_url(text: str) -> str:
    problem = api_url_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text.rstrip("/")


def _roles(text: str) -> frozenset[str]:
    roles, problem = parse_roles(text)
    if roles is None:
        raise argparse.ArgumentTypeError(problem)
    return roles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rhone_local", description="Run Rhone Local in the foreground.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="serve the API on host:port")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8470)
    run.add_argument("--edge-port", type=int, default=None)
    run.add_argument("--sandbox", choices=("auto", "bubblewrap", "none"), default="auto")
    run.add_argument("--sandbox-ro", action="append", default=[], metavar="PATH", help="expose PATH read-only")
    run.add_argument("--build-cache-mb", type=int, default=None, help="per-app build cache limit (MiB)")
    run.add_argument(
        "--edge-processes",
        type=int,
        choices=range(1, 9),
        default=int(os.environ.get("RHONE_LOCAL_EDGE_PROCESSES") or 1),
        help="edge processes sharing the edge port (default 1, or $RHONE_LOCAL_EDGE_PROCESSES)",
    )
    run.add_argument("--node", default=DEFAULT_NODE, type=_node_name, help="this node's name (default local)")
    roles = ",".join(ROLES)
    run.add_argument("--role", default=roles, type=_roles, help=f"comma-separated subset of {roles} (default all)")
    run.add_argument("--api-url", default=None, type=_api_url, help="the API an edge-only node's edges follow")
    sub.add_parser("edge", help="run one edge process (`serve` starts them; see rhone_local/edge_process.py)")
    recover = sub.add_parser(
        "recover-owner", help="write a new owner token to <data dir>/owner.token (needs write access to the data dir)"
    )
    recover.add_argument("--data-dir", type=Path, required=True)
    recover.add_argument("--workspace", default=WORKSPACE)
    args = parser.parse_args(argv)
    if args.command == "recover-owner":
        print(json.dumps(recover_owner(args.data_dir.resolve(), args.workspace)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # uvicorn captures SIGTERM/SIGINT while serving, shuts down gracefully, then re-raises the signal against the
    # handler installed here: exit cleanly (status 0, `finally` blocks run) instead of dying with a traceback.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    # A PostgreSQL server for app databases (`rhone local up --app-databases`): from the environment, since a
    # password in argv would show in `ps`.
    app_databases = os.environ.get("RHONE_LOCAL_APP_DATABASES") or None
    cache_limit = args.build_cache_mb * 1024 * 1024 if args.build_cache_mb is not None else None
    # Beyond one machine (docs/multi-node.md): also from the environment, since their URLs may carry credentials.
    blobs_url = os.environ.get("RHONE_LOCAL_BLOBS") or None
    blobs_endpoint = os.environ.get("RHONE_LOCAL_BLOBS_ENDPOINT") or None
    events_url = os.environ.get("RHONE_LOCAL_EVENTS") or None
    store_url = os.environ.get("RHONE_LOCAL_STORE") or None
    try:
        return serve(
            args.data_dir.resolve(),
            args.host,
            args.port,
            args.edge_port,
            edge_processes=args.edge_processes,
            sandbox_mode=args.sandbox,
            sandbox_ro=args.sandbox_ro,
            cache_limit=cache_limit,
            app_databases=app_databases,
            blobs_url=blobs_url,
            blobs_endpoint=blobs_endpoint,
            events_url=events_url,
            node=NodeIdentity(args.node, args.role, address=args.host),
            api_url=args.api_url,
            store_url=store_url,
        )
    except StartRefused as refused:
        print(f"error [{refused.code}]: {refused.message}\nhint: {refused.hint}", file=sys.stderr, flush=True)
        return REFUSED_STATUS
