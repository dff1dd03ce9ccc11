"""Run Rhone Local in the foreground: open the store, bootstrap on first start, start workers, serve HTTP.

`rhone local up` starts this as a background process (`python -m rhone_local serve …`) and waits for `/v1/health`.
Files in the data directory:
- `rhone.db` (+ WAL files): the control database;
- `owner.token` (0600): the bootstrap owner's API token, read by `rhone local up` to write the `local` profile;
- `edge-affinity.key` (0600): the key that signs the edge's affinity cookies (created on first start);
- `server.json`: pid, ports and version of the running server (removed on clean exit);
- `rhone-local.lock`: held (flock, exclusive) by the one server of this data directory for its whole life;
- `rhone-local.log`: the log (written by the parent's redirection when started in the background).
The directory is 0700, the database files and the token 0600 (rhone_local/datadir.py).

A server that must not start (the data directory is in use or broken) prints `error [<code>]: <message>` and
`hint: <hint>` on stderr and exits with status 3 (`REFUSED_STATUS`); `rhone local up` reads those two lines back.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rhone_local import __version__
from rhone_local.api.app import create_app
from rhone_local.datadir import REFUSED_STATUS, StartRefused, database_errors, open_data_dir
from rhone_local.domain.access import hash_token
from rhone_local.edge import Edge, affinity_key
from rhone_local.edge_relay import Limits, Relay, client_cap, raise_open_file_limit
from rhone_local.notify import ChangeNotifier
from rhone_local.pipeline import build_pipeline
from rhone_local.promotion import Promotions
from rhone_local.store import Store
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
PROCESS_CHECK_SECONDS = 1.0


def bootstrap(store: Store, data_dir: Path) -> None:
    """First start only: a workspace, its owner and a token, and the topology (one region, one cell)."""
    if store.is_bootstrapped():
        return
    secret = "rht_" + secrets.token_urlsafe(32)
    # The token file is written (atomically) before the database commits: a crash in between leaves an unused file
    # that the next start overwrites, never a bootstrapped database whose owner token was lost.
    token_file = _write_owner_token(data_dir, secret)
    ids = store.bootstrap(workspace=WORKSPACE, owner=OWNER, token_hash=hash_token(secret), region=REGION, cell=CELL)
    log.info("bootstrapped workspace %s (%s), owner %s; token in %s", WORKSPACE, ids["workspace_id"], OWNER, token_file)


def _write_owner_token(data_dir: Path, secret: str) -> Path:
    """`owner.token`, mode 0600, replaced atomically."""
    token_file = data_dir / "owner.token"
    temporary = data_dir / f".owner.token.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    os.replace(temporary, token_file)
    return token_file


def recover_owner(data_dir: Path, workspace_ref: str = WORKSPACE) -> dict[str, str]:
    """Mint a new owner token for the workspace's first owner and write it to `owner.token`, for an owner who lost or
    revoked every token. Its authority is write access to the data directory (the database and the token file): the
    API never offers it. Audited as `token.recover`."""
    from rhone_local.domain.access import Principal
    from rhone_local.domain.ids import new_id

    database = data_dir / "rhone.db"
    if not database.is_file() or database.stat().st_size == 0:
        raise SystemExit(f"{database} does not exist or is empty: there is no workspace to recover")
    store = Store(database)
    try:
        workspace = store.workspace(workspace_ref)
        owner = store.first_owner(workspace["id"]) if workspace else None
        if workspace is None or owner is None:
            raise SystemExit(f"no workspace {workspace_ref!r} with an owner in {database}")
        secret = "rht_" + secrets.token_urlsafe(32)
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
                conn=c,
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


def _restore_previews(pipeline: Any) -> None:
    try:
        restarted = pipeline.restore_previews()
        if restarted:
            log.info("restarted the preview allocations of %s", ", ".join(restarted))
    except Exception:  # a failed restore must not take the server down; the log says why
        log.exception("restoring preview allocations failed")
    finally:
        pipeline.store.close()


def _watch_processes(runner: Any, stop: threading.Event) -> None:
    """Fail ready allocations whose process died, so their state (and every view of it) tells the truth."""
    try:
        while not stop.wait(PROCESS_CHECK_SECONDS):
            try:
                for alloc_id in runner.check_processes():
                    log.warning("allocation %s: its process exited; marked failed", alloc_id)
            except Exception:
                log.exception("checking allocation processes failed; retrying")
    finally:
        runner.store.close()


def serve(data_dir: Path, host: str, port: int, edge_port: int | None) -> int:
    import uvicorn

    open_files = raise_open_file_limit()  # the edge's connection cap is a share of it
    store = open_data_dir(data_dir)  # holds the data directory's lock until this process exits
    with database_errors(store.path):
        bootstrap(store, data_dir)
        ensure_topology(store)
    notifier = ChangeNotifier()
    pipeline = build_pipeline(store, data_dir, edge_port=edge_port)
    if 0 < store.migrated_from < 5:
        # Schema 5 records the migrations each environment applied; a database routed before it learns them from
        # its route history (the artifacts are immutable, so this is what they carried then).
        log.info("recorded applied migrations from %d route owner(s)", pipeline.record_route_history_migrations())
    adopted = pipeline.runner.reconcile()
    if adopted:
        log.info("adopted %d running allocation(s) that survived the previous server", len(adopted))
    edge = relay = None
    if edge_port:
        edge = Edge(store, key=affinity_key(data_dir))
        relay = Relay(edge.candidates, host, edge_port, Limits(max_clients=client_cap(open_files)))
        edge.on_rotation = relay.update_rotation  # before the first sync: the relay learns every rotation
        pipeline.runner.open_connections = relay.open_connections
        edge.start_sync()
    workers = Workers(
        store,
        notifier,
        pipeline=pipeline,
        promotions=Promotions(store, pipeline, edge),
        topology=Topology(store, pipeline),
    )
    app = create_app(store, notifier, pipeline=pipeline)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    )
    if relay is not None:
        relay.start()  # its own thread and event loop; a taken port fails here, before the state file is written
        log.info("edge: up to %d concurrent client connections (open-file limit %d)", relay.max_clients, open_files)
    state_file = data_dir / "server.json"
    state_file.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "api_url": f"http://{host}:{port}",
                "port": port,
                "edge_port": edge_port,
                "version": __version__,
                "started_at": time.time(),
                "data_dir": str(data_dir),
            }
        )
    )
    workers.start()
    # Previews come back in the background: the API answers meanwhile, and the edge says 503 until they are ready.
    threading.Thread(target=_restore_previews, args=(pipeline,), name="restore-previews", daemon=True).start()
    watching = threading.Event()
    threading.Thread(
        target=_watch_processes, args=(pipeline.runner, watching), name="process-watch", daemon=True
    ).start()
    log.info("Rhone Local %s listening on http://%s:%s (data in %s)", __version__, host, port, data_dir)
    try:
        server.run()
    finally:
        if relay is not None:
            relay.stop()
            edge.stop_sync()
        # Nothing starts from now on and probes under way give up (their stages resume after the next start); then
        # the workers finish, and every allocation stops.
        pipeline.runner.closing.set()
        watching.set()
        workers.stop()
        pipeline.runner.stop_all("Rhone Local stopped")
        state_file.unlink(missing_ok=True)
    return 0 if server.started else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rhone_local", description="Run Rhone Local in the foreground.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="serve the API on host:port")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8470)
    run.add_argument("--edge-port", type=int, default=None)
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
    try:
        return serve(args.data_dir.resolve(), args.host, args.port, args.edge_port)
    except StartRefused as refused:
        print(f"error [{refused.code}]: {refused.message}\nhint: {refused.hint}", file=sys.stderr, flush=True)
        return REFUSED_STATUS
