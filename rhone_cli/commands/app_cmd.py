"""`rhone app`: apps, the stable identities that exist before and independent of any deployment."""

from __future__ import annotations

from typing import Annotated

import typer

from rhone_cli.commands import _tenancy as t
from rhone_cli.commands._common import group, invocation

app = group("app", "Apps: stable identities that exist before and independent of any deployment.")


@app.command("ls")
def ls(
    ctx: typer.Context,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    limit: t.LimitOpt = None,
    everything: t.AllOpt = False,
) -> None:
    """List the project's apps, newest first."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, need="project")
    rows = tenancy.newest(inv, inv.api().apps, target, limit=limit, everything=everything)
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
    doc = tenancy.create_app(inv, target, no_wait=no_wait, timeout=wait_timeout)
    inv.out.result(doc, t.created_or_operation(doc, "app"))


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Name or id.", metavar="APP")] = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Show an app (default: the one in rhone.toml)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=name)
    doc = inv.api().app(target)
    inv.out.result(doc, t.fields(doc, ["id", "name", "project_id", "workspace_id", "created_at", "operation_id"]))


@app.command("scale")
def scale(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", "-e", help="Environment, e.g. production.", metavar="ENV")],
    instances: Annotated[
        int, typer.Option("--instances", "-n", help="Instances to run (0–20).", min=0, max=20, metavar="N")
    ],
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Run N instances of ENV's route owner (an operation). More than one is refused (exit 6, each missing service
    named) until ENV has the runtime services the app needs; see `rhone env services ENV`."""
    from rhone_cli.services import tenancy, topology

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    doc = topology.scale(inv, target, env, instances, no_wait=no_wait, timeout=wait_timeout)
    if no_wait:
        inv.out.result(doc, t.created_or_operation(doc, "scale"))
        return
    evidence = next((s["evidence"] for s in reversed(doc["stages"]) if s["state"] == "scaled"), {})
    ready = [a for a in evidence.get("allocations", []) if a["state"] == "ready"]
    inv.out.result(doc, lambda out: out.line(f"{env}: {len(ready)} of {instances} instance(s) ready ({doc['id']})"))


ALLOCATION_COLUMNS = (
    ["id", "deployment", "env", "region", "cell", "state", "owner", "health"],
    ["id", "deployment_id", "environment", "region", "cell", "state", "route_owner", "health_summary"],
)


@app.command("allocations")
def allocations(
    ctx: typer.Context,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.", metavar="ENV")] = None,
    deployment: Annotated[str | None, typer.Option("--deployment", help="Only this deployment.", metavar="DEP")] = None,
    all_states: Annotated[
        bool, typer.Option("--all", help="Every allocation, stopped and failed ones too (all pages).")
    ] = False,
    limit: t.LimitOpt = None,
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """List the app's live allocations — running instances — newest first, with region, cell, state and health.
    Which deployment serves traffic is route ownership (`rhone route ls`): `owner` says whether an allocation's
    deployment holds it."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    rows = tenancy.newest(
        inv,
        inv.api().allocations,
        target,
        limit=limit,
        everything=all_states,
        every_state=all_states,
        environment=env,
        deployment=deployment,
    )
    shown = [{**r, "health_summary": _health(r.get("health"))} for r in rows]
    inv.out.result(rows, t.table(*ALLOCATION_COLUMNS, shown, "no allocations"))


def _health(health: dict | None) -> str:
    if not health:
        return "-"
    loop, drain = health.get("crash_loop"), health.get("drain") or {}
    if loop:
        return f"crash loop: {loop['failures']} quick failures in a row, next attempt in {loop['next_attempt_in']:g}s"
    if drain and not drain.get("ended_at"):
        return f"draining: {drain.get('open_connections', 0)} open connection(s), cut at {drain.get('deadline')}"
    if health.get("error"):
        return str(health["error"])
    if health.get("stopped_because"):
        outcome = drain.get("outcome")
        how = f" ({outcome}" + (f", {drain['cut_connections']} cut)" if outcome == "cut" else ")") if outcome else ""
        return f"stopped: {health['stopped_because']}{how}"
    return "ready" if health.get("ready") else str(health.get("last", "-"))
