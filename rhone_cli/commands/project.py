"""`rhone project`: projects, the grouping of apps in a workspace."""

from typing import Annotated

import typer

from rhone_cli import render
from rhone_cli.commands._common import group, invocation
from rhone_cli.commands._options import AllOpt, LimitOpt, NoWaitOpt, TargetFlags, WaitTimeoutOpt, targets

app = group("project", "Projects: groups of apps in a workspace.")
COLUMNS = (["id", "name", "created"], ["id", "name", "created_at"])


@app.command("ls")
@targets("workspace")
def ls(ctx: typer.Context, limit: LimitOpt = None, everything: AllOpt = False, *, where: TargetFlags) -> None:
    """List the workspace's projects, newest first."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    rows = tenancy.newest(inv, inv.api().projects, where.resolve(inv), limit=limit, everything=everything)
    inv.out.result(rows, render.table(*COLUMNS, rows, "no projects"))


@app.command("create")
@targets("workspace")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Project name.")],
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    *,
    where: TargetFlags,
) -> None:
    """Create a project (an operation; waits for it unless --no-wait)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = where.resolve(inv, need="project", project=name)
    doc = tenancy.create_project(inv, target, no_wait=no_wait, timeout=wait_timeout)
    inv.out.result(doc, render.created_or_operation(doc, "project"))


@app.command("show")
@targets("workspace")
def show(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Name or id.", metavar="PROJECT")] = None,
    *,
    where: TargetFlags,
) -> None:
    """Show a project (default: the one in rhone.toml)."""
    inv = invocation(ctx)
    doc = inv.api().project(where.resolve(inv, need="project", project=name))
    inv.out.result(doc, render.fields(doc, ["id", "name", "workspace_id", "created_at", "operation_id"]))
