"""`rhone env`: environments — preview, production and more — with their policy and bindings."""

from __future__ import annotations

from typing import Annotated

import typer

from rhone_cli.commands import _tenancy as t
from rhone_cli.commands._common import TOPOLOGY, group, invocation, placeholder

app = group("env", "Environments: preview, production and more, with their policy and bindings.")
COLUMNS = (["id", "name", "approval", "frozen"], ["id", "name", "approval_required", "frozen"])


@app.command("ls")
def ls(
    ctx: typer.Context, app_name: t.AppOpt = None, project: t.ProjectOpt = None, workspace: t.WorkspaceOpt = None
) -> None:
    """List an app's environments."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    rows = tenancy.items(inv, f"{target.app_path}/environments")
    inv.out.result(rows, t.table(*COLUMNS, rows, "no environments"))


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Environment name, e.g. staging.")],
    approval_required: Annotated[
        bool, typer.Option("--approval-required", help="Promotions need an owner/admin approval.")
    ] = False,
    frozen: Annotated[bool, typer.Option("--frozen", help="Create it frozen (promotions refused).")] = False,
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Create an environment for an app (an operation)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    body = {"name": name, "approval_required": approval_required, "frozen": frozen}
    doc = tenancy.create(
        inv,
        f"{target.app_path}/environments",
        body,
        resource_path=f"{target.app_path}/environments/{name}",
        no_wait=no_wait,
        timeout=wait_timeout,
    )
    inv.out.result(doc, t.created_or_operation(doc, "environment"))


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name or id.")],
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Show an environment and its policy."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    doc = tenancy.get(inv, f"{target.app_path}/environments/{name}")
    inv.out.result(doc, t.fields(doc, ["id", "name", "app_id", "approval_required", "frozen", "created_at"]))


def _set_frozen(ctx: typer.Context, name: str, app_name, project, workspace, frozen: bool) -> None:
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    verb = "freeze" if frozen else "unfreeze"
    doc = inv.client().post(f"{target.app_path}/environments/{name}/{verb}", {}).data
    inv.out.result(doc, lambda out: out.line(f"{doc['name']} is {'frozen' if doc['frozen'] else 'not frozen'}"))


@app.command("freeze")
def freeze(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Environment name.")],
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Freeze an environment: promotions to it are refused (exit 6) until it is unfrozen (audited)."""
    _set_frozen(ctx, name, app_name, project, workspace, True)


@app.command("unfreeze")
def unfreeze(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Environment name.")],
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Unfreeze an environment (owners and admins; audited)."""
    _set_frozen(ctx, name, app_name, project, workspace, False)


placeholder(app, "bind", "Bind a provider to an environment (an operation).", TOPOLOGY)
placeholder(app, "unbind", "Remove a provider binding (an operation).", TOPOLOGY)
placeholder(app, "bindings", "List an environment's provider bindings.", TOPOLOGY)
placeholder(app, "services", "Declare or list runtime services for an environment.", TOPOLOGY)
