"""`rhone route`: route ownership — which deployment serves each app environment, at which epoch."""

from __future__ import annotations

from typing import Annotated

import typer

from rhone_cli.commands import _tenancy as t
from rhone_cli.commands._common import group, invocation

app = group("route", "Route ownership: which deployment serves each app environment, by epoch.")
Env = Annotated[str, typer.Argument(help="Environment name, e.g. production.", metavar="ENV")]


@app.command("ls")
def ls(
    ctx: typer.Context, app_name: t.AppOpt = None, project: t.ProjectOpt = None, workspace: t.WorkspaceOpt = None
) -> None:
    """List the app's route owners."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    rows = inv.api().routes(target)
    inv.out.result(
        rows,
        t.table(
            ["route", "epoch", "deployment", "url"],
            ["route_key", "epoch", "deployment_id", "url"],
            rows,
            "no routes yet",
        ),
    )


@app.command("show")
def show(
    ctx: typer.Context,
    env: Env,
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Show who owns ENV's route, at which epoch, with which artifact."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    doc = inv.api().route(target, env)
    inv.out.result(
        doc,
        t.fields(doc, ["route_key", "epoch", "deployment_id", "artifact_digest", "url", "operation_id", "updated_at"]),
    )


@app.command("history")
def history(
    ctx: typer.Context,
    env: Env,
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    limit: t.LimitOpt = None,
    everything: t.AllOpt = False,
) -> None:
    """The changes of ENV's route owner, newest first, with the operation that made each."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    rows = tenancy.newest(inv, inv.api().route_history, target, env, limit=limit, everything=everything)
    inv.out.result(
        rows,
        t.table(
            ["seq", "epoch", "kind", "deployment", "previous", "operation", "at"],
            ["seq", "epoch", "kind", "deployment_id", "previous_deployment_id", "operation_id", "created_at"],
            rows,
            "no changes yet",
        ),
    )
