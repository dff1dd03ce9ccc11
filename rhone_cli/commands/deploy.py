"""`rhone deploy`: build an artifact, upload what the server lacks, and drive the deploy operation."""

from __future__ import annotations

from typing import Annotated

import typer

from rhone_cli.commands import _tenancy as t
from rhone_cli.commands._common import invocation, new_typer
from rhone_cli.output import Output

app = new_typer(
    name="deploy",
    help="Deploy the project in this directory to a preview (`rhone deploy`), or manage deployments.",
    invoke_without_command=True,
    subcommand_metavar="[COMMAND [ARGS]...]",  # bare `rhone deploy` deploys
)
DeploymentId = Annotated[str, typer.Argument(help="Deployment id (dep_…).", metavar="DEPLOYMENT_ID")]


def render_deployment(doc: dict):
    from rhone_cli.services.deploy import evidence_lines

    def human(out: Output) -> None:
        if doc.get("state") == "preview_ready":
            out.line(f"Preview: {doc['url']}")
        else:
            out.line(f"{doc['id']}  {doc.get('state')}  {doc.get('url', '')}")
        for line in evidence_lines(doc):
            out.line(line)

    return human


@app.callback()
def deploy(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", help="Target environment.", metavar="ENV")] = "preview",
    prebuilt: Annotated[
        bool, typer.Option("--prebuilt", help="Upload build.output as the artifact; skip the remote build.")
    ] = False,
    promote: Annotated[
        bool, typer.Option("--promote", help="Then promote it to production (the one-shot path).")
    ] = False,
    force_build: Annotated[
        bool,
        typer.Option(
            "--force-build", help="Build even when an earlier build of the same source and build settings exists."
        ),
    ] = False,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Deploy: manifest, upload missing blobs, create the deployment, wait for preview_ready (or blocked/failed);
    with --promote, then promote the validated artifact to production."""
    if ctx.invoked_subcommand is not None:
        return
    if no_wait and promote:
        from rhone_cli.errors import usage_error

        raise usage_error("--promote waits for the deployment; it cannot be combined with --no-wait")
    from rhone_cli.services import deploy as service

    inv = invocation(ctx)
    doc = service.deploy(
        inv, environment=env, prebuilt=prebuilt, no_wait=no_wait, timeout=wait_timeout, force_build=force_build
    )
    if no_wait:
        inv.out.result(doc["operation"], t.created_or_operation(doc["operation"], "deployment"))
        return
    result = {k: v for k, v in doc.items() if k != "upload"}
    if promote:
        from rhone_cli.commands.promote import render_route, warn_sessions
        from rhone_cli.services import routes

        route = routes.promote(
            inv,
            doc["id"],
            environment="production",
            expect_digest=doc["artifact_digest"],
            expect_epoch=None,
            approve=False,
            no_wait=False,
            timeout=wait_timeout,
        )
        result = {"deployment": result, "promotion": route}
        warn_sessions(inv.out, route)

        def human(out: Output) -> None:
            render_deployment(doc)(out)
            render_route(route)(out)

        inv.out.result(result, human)
        return
    inv.out.result(result, render_deployment(doc))


@app.command("ls")
def ls(
    ctx: typer.Context,
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    limit: t.LimitOpt = None,
    everything: t.AllOpt = False,
) -> None:
    """List an app's deployments, newest first: which one serves each environment's route (`serves`), and which
    previews a newer deployment replaced (`superseded`: their URL answers 503)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    rows = tenancy.newest(inv, inv.api().deployments, target, limit=limit, everything=everything)
    shown = [
        {
            **row,
            "state": "superseded" if row.get("superseded_by") else row["state"],
            "serves": ", ".join(route["environment"] for route in row.get("routes") or []),
            "artifact": (row.get("artifact_digest") or "")[:19],
        }
        for row in rows
    ]
    inv.out.result(
        rows,
        t.table(
            ["id", "env", "state", "serves", "artifact", "created"],
            ["id", "environment", "state", "serves", "artifact", "created_at"],
            shown,
            "no deployments",
        ),
    )


@app.command("show")
def show(ctx: typer.Context, deployment_id: DeploymentId) -> None:
    """Show a deployment: state, URL, gate evidence and allocations."""
    inv = invocation(ctx)
    doc = inv.api().deployment(deployment_id)

    def human(out: Output) -> None:
        render_deployment(doc)(out)
        out.line(f"  {'operation:':<17}{doc['operation_id']}")
        for alloc in doc["allocations"]:
            health = alloc.get("health") or {}
            owner = "  (route owner)" if alloc.get("route_owner") else ""
            out.line(
                f"  allocation {alloc['id']}  {alloc['environment']}  {alloc['state']}  region {alloc['region']}  "
                f"cell {alloc['cell']}  {health.get('error') or health.get('last', '')}{owner}"
            )

    inv.out.result(doc, human)


@app.command("approve")
def approve(
    ctx: typer.Context,
    deployment_id: DeploymentId,
    ack_cold: Annotated[bool, typer.Option("--ack-cold", help="Acknowledge a cold deploy (sessions refresh).")] = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Approve a blocked deployment (new migrations; with --ack-cold, a cold state change), then wait for it."""
    from rhone_cli.services import deploy as service

    inv = invocation(ctx)
    doc = service.approve(inv, deployment_id, ack_cold=ack_cold, timeout=wait_timeout)
    inv.out.result(doc, render_deployment(doc))


@app.command("logs")
def logs(
    ctx: typer.Context,
    deployment_id: DeploymentId,
    lines: Annotated[
        int, typer.Option("--lines", "-n", help="Lines per log (1–200).", min=1, max=200, metavar="N")
    ] = 100,
) -> None:
    """Show a deployment's build log and its allocations' logs."""

    inv = invocation(ctx)
    doc = inv.api().deployment_logs(deployment_id, lines=lines)

    def human(out: Output) -> None:
        out.line("== build ==")
        out.line(doc["build"] or "(no build log)")
        for alloc_id, text in doc["allocations"].items():
            out.line(f"== allocation {alloc_id} ==")
            out.line(text or "(empty)")

    inv.out.result(doc, human)
