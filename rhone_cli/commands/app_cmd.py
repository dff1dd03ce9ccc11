"""`rhone app`: apps, the stable identities that exist before and independent of any deployment."""

from typing import Annotated

import typer

from rhone_cli import render
from rhone_cli.commands._common import group, invocation
from rhone_cli.commands._options import AllOpt, LimitOpt, NoWaitOpt, TargetFlags, WaitTimeoutOpt, targets

app = group("app", "Apps: stable identities that exist before and independent of any deployment.")


@app.command("ls")
@targets("project")
def ls(ctx: typer.Context, limit: LimitOpt = None, everything: AllOpt = False, *, where: TargetFlags) -> None:
    """List the project's apps, newest first."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    rows = tenancy.newest(inv, inv.api().apps, where.resolve(inv), limit=limit, everything=everything)
    inv.out.result(rows, render.table(["id", "name", "created"], ["id", "name", "created_at"], rows, "no apps"))


@app.command("create")
@targets("project")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="App name.")],
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    *,
    where: TargetFlags,
) -> None:
    """Create an app with its preview and production environments (an operation)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = where.resolve(inv, need="app", app=name)
    doc = tenancy.create_app(inv, target, no_wait=no_wait, timeout=wait_timeout)
    inv.out.result(doc, render.created_or_operation(doc, "app"))


@app.command("show")
@targets("project")
def show(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Name or id.", metavar="APP")] = None,
    *,
    where: TargetFlags,
) -> None:
    """Show an app (default: the one in rhone.toml)."""
    inv = invocation(ctx)
    doc = inv.api().app(where.resolve(inv, need="app", app=name))
    inv.out.result(doc, render.fields(doc, ["id", "name", "project_id", "workspace_id", "created_at", "operation_id"]))


@app.command("scale")
@targets("app")
def scale(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", "-e", help="Environment, e.g. production.", metavar="ENV")],
    instances: Annotated[
        int, typer.Option("--instances", "-n", help="Instances to run (0–20).", min=0, max=20, metavar="N")
    ],
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    *,
    where: TargetFlags,
) -> None:
    """Run N instances of ENV's route owner (an operation). More than one is refused (exit 6, each missing service
    named) until ENV has the runtime services the app needs; see `rhone env services ENV`."""
    from rhone_cli.services import topology

    inv = invocation(ctx)
    doc = topology.scale(inv, where.resolve(inv), env, instances, no_wait=no_wait, timeout=wait_timeout)
    if no_wait:
        inv.out.result(doc, render.created_or_operation(doc, "scale"))
        return
    evidence = next((s["evidence"] for s in reversed(doc["stages"]) if s["state"] == "scaled"), {})
    ready = [a for a in evidence.get("allocations", []) if a["state"] == "ready"]
    inv.out.result(doc, lambda out: out.line(f"{env}: {len(ready)} of {instances} instance(s) ready ({doc['id']})"))


@app.command("allocations")
@targets("app")
def allocations(
    ctx: typer.Context,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.", metavar="ENV")] = None,
    deployment: Annotated[str | None, typer.Option("--deployment", help="Only this deployment.", metavar="DEP")] = None,
    all_states: Annotated[
        bool, typer.Option("--all", help="Every allocation, stopped and failed ones too (all pages).")
    ] = False,
    limit: LimitOpt = None,
    *,
    where: TargetFlags,
) -> None:
    """List the app's live allocations — running instances — newest first, with region, cell, state and health.
    Which deployment serves traffic is route ownership (`rhone route ls`): `owner` says whether an allocation's
    deployment holds it."""
    from rhone_cli.render import topology
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    rows = tenancy.newest(
        inv,
        inv.api().allocations,
        where.resolve(inv),
        limit=limit,
        everything=all_states,
        every_state=all_states,
        environment=env,
        deployment=deployment,
    )
    inv.out.result(rows, topology.allocations(rows))
