"""`rhone workspace`: workspaces, their members and roles, and the audit log."""

from enum import StrEnum
from typing import Annotated

import typer

from rhone_cli import render
from rhone_cli.commands._common import group, invocation
from rhone_cli.commands._options import AllOpt, LimitOpt, TargetFlags, targets

app = group("workspace", "Workspaces: members, roles and the audit log.")


class Role(StrEnum):
    owner = "owner"
    admin = "admin"
    developer = "developer"
    viewer = "viewer"


@app.command("ls")
def ls(ctx: typer.Context) -> None:
    """List the workspaces you belong to, with your role."""
    inv = invocation(ctx)
    rows = inv.api().workspaces()
    inv.out.result(rows, render.table(["id", "name", "role"], ["id", "name", "role"], rows, "no workspaces"))


@app.command("show")
def show(
    ctx: typer.Context, workspace: Annotated[str | None, typer.Argument(help="Name or id.", metavar="WORKSPACE")] = None
) -> None:
    """Show a workspace (default: the profile's)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, need="workspace")
    doc = inv.api().workspace(target)
    inv.out.result(doc, render.fields(doc, ["id", "name", "role", "created_at"]))


@app.command("members")
@targets("workspace")
def members(ctx: typer.Context, *, where: TargetFlags) -> None:
    """List a workspace's members and their roles."""
    inv = invocation(ctx)
    target = where.resolve(inv)
    rows = inv.api().members(target)
    inv.out.result(
        rows, render.table(["user", "name", "email", "role"], ["user_id", "name", "email", "role"], rows, "no members")
    )


@app.command("invite")
@targets("workspace")
def invite(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="Email address of the person to add.")],
    role: Annotated[Role, typer.Option("--role", help="owner, admin, developer or viewer.")] = Role.developer,
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    *,
    where: TargetFlags,
) -> None:
    """Add a member with a role (admins grant up to admin; only owners grant owner)."""
    inv = invocation(ctx)
    target = where.resolve(inv)
    doc = inv.api().invite(target, email, role.value, name)
    inv.out.result(doc, lambda out: out.line(f"added {doc['email']} as {doc['role']}"))


@app.command("audit")
@targets("workspace")
def audit(
    ctx: typer.Context,
    limit: LimitOpt = None,
    everything: AllOpt = False,
    action: Annotated[str | None, typer.Option("--action", help="Only this action, e.g. project.create.")] = None,
    *,
    where: TargetFlags,
) -> None:
    """Read the audit log, newest first: every mutation, allowed or denied (owners and admins)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = where.resolve(inv)
    rows = tenancy.newest(inv, inv.api().audit, target, limit=limit, everything=everything, action=action)
    inv.out.result(
        rows,
        render.table(
            ["time", "actor", "action", "target", "result", "request"],
            ["ts", "actor_id", "action", "target", "result", "request_id"],
            rows,
            "no records",
        ),
    )
