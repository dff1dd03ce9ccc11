"""`rhone project`: projects, the grouping of apps in a workspace."""

from __future__ import annotations

from typing import Annotated

import typer

from rhone_cli.commands import _tenancy as t
from rhone_cli.commands._common import group, invocation

app = group("project", "Projects: groups of apps in a workspace.")
COLUMNS = (["id", "name", "created"], ["id", "name", "created_at"])


@app.command("ls")
def ls(
    ctx: typer.Context, workspace: t.WorkspaceOpt = None, limit: t.LimitOpt = None, everything: t.AllOpt = False
) -> None:
    """List the workspace's projects, newest first."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, need="workspace")
    rows = tenancy.newest(inv, inv.api().projects, target, limit=limit, everything=everything)
    inv.out.result(rows, t.table(*COLUMNS, rows, "no projects"))


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Project name.")],
    workspace: t.WorkspaceOpt = None,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Create a project (an operation; waits for it unless --no-wait)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=name, need="project")
    doc = tenancy.create_project(inv, target, no_wait=no_wait, timeout=wait_timeout)
    inv.out.result(doc, t.created_or_operation(doc, "project"))


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Name or id.", metavar="PROJECT")] = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Show a project (default: the one in rhone.toml)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=name, need="project")
    doc = inv.api().project(target)
    inv.out.result(doc, t.fields(doc, ["id", "name", "workspace_id", "created_at", "operation_id"]))
