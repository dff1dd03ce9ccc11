"""`rhone local`: Rhone Local, the embedded single-machine control plane."""

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from rhone_cli.commands._common import group, invocation
from rhone_cli.errors import Interrupted
from rhone_cli.output import Output

app = group("local", "Rhone Local: the embedded single-machine control plane.")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory [env: RHONE_LOCAL_DATA_DIR; default ~/.local/share/rhone/local].",
        metavar="DIR",
    ),
]


def _render_status(doc: dict):
    from rhone_cli.output import human_size

    def human(out: Output) -> None:
        if doc["running"]:
            out.line(f"Rhone Local {doc.get('version') or ''} is running at {doc['api_url']} (pid {doc['pid']})")
        else:
            out.line("Rhone Local is not running" + (" (stale pid file)" if doc.get("stale_pid_file") else ""))
        out.line(f"  data:    {doc['data_dir']}")
        out.line(f"  log:     {doc['log_file']}")
        sandbox = doc.get("sandbox")
        if sandbox:
            reason = f" ({sandbox['reason']})" if sandbox.get("reason") else ""
            extra = f"; read-only: {', '.join(sandbox['read_only_paths'])}" if sandbox.get("read_only_paths") else ""
            out.line(f"  sandbox: {sandbox['mode']}{reason}{extra}")
        if doc.get("node"):
            out.line(f"  node:    {doc['node']} ({','.join(doc.get('roles') or [])})")
        if doc.get("disk"):
            out.line("  disk:    " + ", ".join(f"{kind} {human_size(size)}" for kind, size in doc["disk"].items()))

    return human


@app.command("up")
def up(
    ctx: typer.Context,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", help="API port on 127.0.0.1 (default 8470; 0: any free port).", min=0, max=65535, metavar="PORT"
        ),
    ] = None,
    edge_port: Annotated[
        int | None,
        typer.Option(
            "--edge-port",
            help="Edge (app traffic) port (default 8471; 0: any free port).",
            min=0,
            max=65535,
            metavar="PORT",
        ),
    ] = None,
    data_dir: DataDir = None,
    foreground: Annotated[bool, typer.Option("--foreground", help="Run in this terminal (for debugging).")] = False,
    app_databases: Annotated[
        str | None,
        typer.Option(
            "--app-databases",
            help="A PostgreSQL server for app databases (postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, a role that "
            "may create roles and databases), apart from Rhone Local's own store: `env bind --kind postgres "
            "--provision` creates each environment's database there [env: RHONE_LOCAL_APP_DATABASES].",
            metavar="URL",
        ),
    ] = None,
    blobs: Annotated[
        str | None,
        typer.Option(
            "--blobs",
            help="Keep blobs in an S3 bucket (s3://BUCKET[/PREFIX]; credentials from the AWS environment variables), "
            "for nodes that share no disk; needs rhone[cluster] [env: RHONE_LOCAL_BLOBS].",
            metavar="URL",
        ),
    ] = None,
    blobs_endpoint: Annotated[
        str | None,
        typer.Option(
            "--blobs-endpoint",
            help="The S3 API's endpoint for --blobs (default AWS's, or AWS_ENDPOINT_URL) "
            "[env: RHONE_LOCAL_BLOBS_ENDPOINT].",
            metavar="URL",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="Keep Rhone Local's control database in PostgreSQL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DB) "
            "instead of SQLite in the data directory, so several nodes can share it; needs rhone[cluster] "
            "[env: RHONE_LOCAL_STORE].",
            metavar="URL",
        ),
    ] = None,
    events: Annotated[
        str | None,
        typer.Option(
            "--events",
            help="Publish route events to NATS JetStream, and have the edge follow them there "
            "(nats://HOST:PORT); needs rhone[cluster] [env: RHONE_LOCAL_EVENTS].",
            metavar="URL",
        ),
    ] = None,
    sandbox: Annotated[
        str,
        typer.Option(
            "--sandbox",
            help="Where builds and apps run: auto (bubblewrap when it works), bubblewrap (required), or none "
            "(unsealed: they can read everything this user can).",
            metavar="MODE",
        ),
    ] = "auto",
    sandbox_ro: Annotated[
        list[Path] | None,
        typer.Option(
            "--sandbox-ro",
            help="Expose a host path read-only to builds and apps, at the same path (a toolchain such as Go). "
            "Repeatable.",
            metavar="PATH",
        ),
    ] = None,
    build_cache_mb: Annotated[
        int | None,
        typer.Option("--build-cache-mb", help="Per-app build cache limit in MiB (default 2048).", min=1, metavar="MIB"),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            help="This server's node name in a cluster sharing one store (lowercase letters, digits, '-'; default "
            "local).",
            metavar="NAME",
        ),
    ] = None,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            help="The parts this node runs: a comma-separated subset of api,worker,runner,edge (default all).",
            metavar="ROLES",
        ),
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            help="For a node with the edge role and not the api role: the http://HOST:PORT of the API its edges "
            "follow.",
            metavar="URL",
        ),
    ] = None,
) -> None:
    """Start Rhone Local in the background, wait until it is healthy, and point the `local` profile at it."""
    from rhone_cli.errors import usage_error
    from rhone_cli.services import local

    inv = invocation(ctx)
    if sandbox not in ("auto", "bubblewrap", "none"):
        raise usage_error(f"--sandbox {sandbox!r}: choose auto, bubblewrap or none")
    for path in sandbox_ro or []:
        if not path.exists():
            raise usage_error(f"--sandbox-ro {path}: no such file or directory")
    options = local.SandboxOptions(sandbox, tuple(str(p.resolve()) for p in sandbox_ro or []), build_cache_mb)
    node_options = local.node_options(node, role, api)
    root = local.data_dir(inv, data_dir)
    if not foreground:  # --foreground is this server, here: its own data-directory lock refuses a second one
        _refuse_other_ports(local.status(inv, root), port, edge_port)
    port = local.DEFAULT_PORT if port is None else port
    edge_port = local.DEFAULT_EDGE_PORT if edge_port is None else edge_port
    server_environ = local.app_databases_environ(inv, app_databases)
    server_environ.update(local.cluster_environ(inv, blobs, blobs_endpoint, events, store))
    if foreground:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        local.require_server_packages()
        command = local.server_command(root, port, edge_port, options, node_options)
        os.environ.update(server_environ)
        os.execv(sys.executable, command)
    doc = local.up(
        inv, root, port=port, edge_port=edge_port, server_environ=server_environ, sandbox=options, node=node_options
    )
    inv.out.result(doc, _render_status(doc))


def _refuse_other_ports(running: dict, port: int | None, edge_port: int | None) -> None:
    """`rhone local up --port X` while Rhone Local runs on other ports must not report success on the old ones."""
    if not running["running"]:
        return
    from urllib.parse import urlsplit

    from rhone_cli.errors import ExitCode, RhoneError

    actual = {"--port": urlsplit(running["api_url"]).port, "--edge-port": running["edge_port"]}
    asked = {"--port": port, "--edge-port": edge_port}
    # Port 0 asks for any free port: the ports it runs on are as good as any.
    clashes = [f"{flag} {asked[flag]}" for flag in asked if asked[flag] and asked[flag] != actual[flag]]
    if clashes:
        raise RhoneError(
            f"Rhone Local is already running at {running['api_url']} with its edge on port {actual['--edge-port']} "
            f"(pid {running['pid']}), not with {' and '.join(clashes)}",
            code="local_running_elsewhere",
            exit_code=ExitCode.CONFLICT,
            hint="stop it with `rhone local down`, then start it again with these ports (its data is kept)",
            details={"api_url": running["api_url"], "edge_port": actual["--edge-port"]},
        )


@app.command("down")
def down(
    ctx: typer.Context,
    data_dir: DataDir = None,
    timeout: Annotated[
        int,
        typer.Option(
            "--timeout",
            help="Seconds to let it stop cleanly (drains, then engines; on a node of a cluster, handing its "
            "instances over first) before SIGKILL.",
            min=1,
            max=3600,
            metavar="SECONDS",
        ),
    ] = 90,
) -> None:
    """Stop Rhone Local (SIGTERM, then SIGKILL after --timeout seconds, default 90). Data is kept."""
    from rhone_cli.services import local

    inv = invocation(ctx)
    doc = local.down(inv, local.data_dir(inv, data_dir), timeout=timeout)
    if doc.get("forced"):
        inv.out.warn(
            f"Rhone Local did not stop within {timeout}s and was killed (SIGKILL): apps and service engines it had "
            "not stopped yet may still run; the next `rhone local up` adopts or stops them"
        )

    def human(out: Output) -> None:
        if doc["was_running"]:
            out.line(f"stopped Rhone Local (pid {doc['pid']}{', forced' if doc.get('forced') else ''})")
        elif doc.get("stale_pid_file"):
            out.line("Rhone Local was not running (removed a stale pid file; the process it named was left alone)")
        else:
            out.line("Rhone Local was not running")

    inv.out.result(doc, human)


@app.command("recover-owner")
def recover_owner(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """Mint a new owner token into <data dir>/owner.token, for an owner who lost or revoked every token. Needs write
    access to the data directory; audited as token.recover."""
    from rhone_cli.services import local

    inv = invocation(ctx)
    doc = local.recover_owner(inv, local.data_dir(inv, data_dir))
    inv.out.result(
        doc, lambda out: out.line(f"new owner token for {doc['owner']} ({doc['workspace']}) in {doc['token_file']}")
    )


@app.command("status")
def status(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """Show whether Rhone Local is running, where, and which version."""
    from rhone_cli.services import local

    inv = invocation(ctx)
    doc = local.status(inv, local.data_dir(inv, data_dir))
    inv.out.result(doc, _render_status(doc))


@app.command("gc")
def gc(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
) -> None:
    """Remove what no deployment will run again: finished builds' work folders, stopped allocations' trees, and
    unreferenced blobs (route owners, rollback targets, recent route history and the last 10 deployments per app
    are kept). Also runs automatically after deploys and hourly."""
    from rhone_cli.output import human_size
    from rhone_cli.services import local

    inv = invocation(ctx)
    doc = local.gc(inv, dry_run=dry_run)

    def human(out: Output) -> None:
        verb = "would remove" if doc["dry_run"] else "removed"
        removed = doc["removed"]
        out.line(
            f"{verb} {human_size(doc['total_bytes'])}: {removed['builds']} build folder(s), "
            f"{removed['allocations']} allocation folder(s), {removed['blobs']} blob(s); "
            f"kept {doc['kept_deployments']} deployment(s)"
        )

    inv.out.result(doc, human)


@app.command("logs")
def logs(
    ctx: typer.Context,
    data_dir: DataDir = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines from the end.", min=1, metavar="N")] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C to stop).")] = False,
) -> None:
    """Show Rhone Local's log."""
    from rhone_cli.services import local

    inv = invocation(ctx)
    root = local.data_dir(inv, data_dir)
    text = local.logs(root, lines)
    if inv.env.options.json:
        inv.out.result({"log_file": str(local.Paths(root).log), "lines": text.splitlines()})
        return
    if text:
        inv.out.line(text)
    if follow:
        path = local.Paths(root).log
        with path.open(errors="replace") as handle:
            handle.seek(0, 2)
            try:
                while True:
                    line = handle.readline()
                    if line:
                        inv.out.raw(line)
                    else:
                        time.sleep(0.2)
            except (Interrupted, KeyboardInterrupt):
                return
