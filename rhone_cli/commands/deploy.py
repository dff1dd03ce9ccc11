"""`rhone deploy`: build an artifact, upload what the server lacks, and drive the deploy operation."""

from typing import Annotated

import typer

from rhone_cli import render
from rhone_cli.commands._common import invocation, new_typer
from rhone_cli.commands._options import AllOpt, LimitOpt, NoWaitOpt, TargetFlags, WaitTimeoutOpt, targets
from rhone_cli.output import Output

app = new_typer(
    name="deploy",
    help="Deploy the project in this directory to a preview (`rhone deploy`), or manage deployments.",
    invoke_without_command=True,
    subcommand_metavar="[COMMAND [ARGS]...]",  # bare `rhone deploy` deploys
)
DeploymentId = Annotated[str, typer.Argument(help="Deployment id (dep_…).", metavar="DEPLOYMENT_ID")]


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
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
) -> None:
    """Deploy: manifest, upload missing blobs, create the deployment, wait for preview_ready (or blocked/failed);
    with --promote, then promote the validated artifact to production."""
    if ctx.invoked_subcommand is not None:
        return
    if no_wait and promote:
        from rhone_cli.errors import usage_error

        raise usage_error("--promote waits for the deployment; it cannot be combined with --no-wait")
    from rhone_cli.render.deployments import deployment
    from rhone_cli.services import deploy as service

    inv = invocation(ctx)
    doc = service.deploy(
        inv, environment=env, prebuilt=prebuilt, no_wait=no_wait, timeout=wait_timeout, force_build=force_build
    )
    if no_wait:
        inv.out.result(doc["operation"], render.created_or_operation(doc["operation"], "deployment"))
        return
    result = {k: v for k, v in doc.items() if k != "upload"}
    if promote:
        from rhone_cli.render.routes import route_move, warn_sessions
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
            deployment(doc)(out)
            route_move(route)(out)

        inv.out.result(result, human)
        return
    inv.out.result(result, deployment(doc))


@app.command("ls")
@targets("app")
def ls(
    ctx: typer.Context,
    limit: LimitOpt = None,
    everything: AllOpt = False,
    *,
    where: TargetFlags,
) -> None:
    """List an app's deployments, newest first: which one serves each environment's route (`serves`), and which
    previews a newer deployment replaced (`superseded`: their URL answers 503)."""
    from rhone_cli.render.deployments import listing
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    rows = tenancy.newest(inv, inv.api().deployments, where.resolve(inv), limit=limit, everything=everything)
    inv.out.result(rows, listing(rows))


@app.command("show")
def show(ctx: typer.Context, deployment_id: DeploymentId) -> None:
    """Show a deployment: state, URL, gate evidence and allocations."""
    from rhone_cli.render.deployments import details

    inv = invocation(ctx)
    doc = inv.api().deployment(deployment_id)
    inv.out.result(doc, details(doc))


@app.command("approve")
def approve(
    ctx: typer.Context,
    deployment_id: DeploymentId,
    ack_cold: Annotated[bool, typer.Option("--ack-cold", help="Acknowledge a cold deploy (sessions refresh).")] = False,
    wait_timeout: WaitTimeoutOpt = None,
) -> None:
    """Approve a blocked deployment (new migrations; with --ack-cold, a cold state change), then wait for it."""
    from rhone_cli.render.deployments import deployment
    from rhone_cli.services import deploy as service

    inv = invocation(ctx)
    doc = service.approve(inv, deployment_id, ack_cold=ack_cold, timeout=wait_timeout)
    inv.out.result(doc, deployment(doc))


@app.command("logs")
def logs(
    ctx: typer.Context,
    deployment_id: DeploymentId,
    lines: Annotated[
        int, typer.Option("--lines", "-n", help="Lines per log (1–200).", min=1, max=200, metavar="N")
    ] = 100,
) -> None:
    """Show a deployment's build log and its allocations' logs."""
    from rhone_cli.render.deployments import logs as shown

    inv = invocation(ctx)
    doc = inv.api().deployment_logs(deployment_id, lines=lines)
    inv.out.result(doc, shown(doc))
