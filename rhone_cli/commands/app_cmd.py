"""`rhone app`: apps, the stable identities that exist before and independent of any deployment."""

from __future__ import annotations

from typing import Annotated

import typer

from rhone_cli.commands import _tenancy as t
from rhone_cli.commands._common import TOPOLOGY, group, invocation, placeholder

app = group("app", "Apps: stable identities that exist before and independent of any deployment.")


@app.command("ls")
def ls(
    ctx: typer.Context, project: t.ProjectOpt = None, workspace: t.WorkspaceOpt = None, limit: t.LimitOpt = None
) -> None:
    """List the project's apps."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, need="project")
    rows = tenancy.items(inv, f"{target.project_path}/apps", limit=limit)
    inv.out.result(rows, t.table(["id", "name", "created"], ["id", "name", "created_at"], rows, "no apps"))


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="App name.")],
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Create an app with its preview and production environments (an operation)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=name)
    doc = tenancy.create(
        inv,
        f"{target.project_path}/apps",
        {"name": name},
        resource_path=target.app_path,
        no_wait=no_wait,
        timeout=wait_timeout,
    )
    inv.out.result(doc, t.created_or_operation(doc, "app"))


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Name or id.")] = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Show an app (default: the one in rhone.toml)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=name)
    doc = tenancy.get(inv, target.app_path)
    inv.out.result(doc, t.fields(doc, ["id", "name", "project_id", "workspace_id", "created_at", "operation_id"]))


placeholder(
    app, "scale", "Scale an app's instances in an environment (an operation, gated by runtime services).", TOPOLOGY
)
placeholder(app, "allocations", "List an app's allocations with region, cell, state and health.", TOPOLOGY)
