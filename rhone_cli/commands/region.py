"""`rhone region`: regions and their cells, and which of them may serve an app environment."""

from __future__ import annotations

from typing import Annotated

import typer

from rhone_cli.commands import _tenancy as t
from rhone_cli.commands._common import group, invocation

app = group("region", "Regions: where allocations run, and which regions may serve an environment.")
RegionArg = Annotated[str, typer.Argument(help="Region name or id.", metavar="REGION")]


@app.command("ls")
def ls(ctx: typer.Context) -> None:
    """List regions with their jurisdiction and cells."""
    inv = invocation(ctx)
    rows = inv.api().regions()
    shown = [{**r, "cell_names": ", ".join(c["name"] for c in r["cells"])} for r in rows]
    inv.out.result(
        rows,
        t.table(
            ["id", "name", "jurisdiction", "primary", "cells"],
            ["id", "name", "jurisdiction", "primary", "cell_names"],
            shown,
            "no regions",
        ),
    )


@app.command("show")
def show(
    ctx: typer.Context,
    region: RegionArg,
    env: Annotated[
        str | None, typer.Option("--env", "-e", help="Also say whether it may serve this environment.", metavar="ENV")
    ] = None,
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Show a region and its cells; with --env, its eligibility for that environment of the app."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    doc = inv.api().region(region)
    if env is not None:
        target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
        states = {r["region_id"]: r for r in inv.api().environment_regions(target, env)}
        doc = {**doc, "environment": env, "eligibility": states.get(doc["id"])}
    shown = {**doc, "cells": ", ".join(c["name"] for c in doc["cells"])}
    if env is not None and doc.get("eligibility"):
        shown["eligibility"] = doc["eligibility"]["state"] + (
            f" ({doc['eligibility']['reason']})" if doc["eligibility"].get("reason") else ""
        )
    inv.out.result(
        doc, t.fields(shown, ["id", "name", "jurisdiction", "primary", "cells", "environment", "eligibility"])
    )


@app.command("enable")
def enable(
    ctx: typer.Context,
    region: RegionArg,
    env: Annotated[str, typer.Option("--env", "-e", help="The environment to serve from REGION.", metavar="ENV")],
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Make REGION eligible to serve ENV (the Region Enablement operation: requested → provisioning →
    binding_services → replicating_artifacts → eligible). A gate that does not hold — residency, data topology,
    secrets, runtime services, the artifact — ends it `disabled`, named (exit 6). No traffic reaches REGION before
    `eligible`."""
    from rhone_cli.services import tenancy, topology

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    doc = topology.enable_region(inv, target, env, region, no_wait=no_wait, timeout=wait_timeout)
    if no_wait:
        inv.out.result(doc, t.created_or_operation(doc, "region enablement"))
        return
    inv.out.result(doc, lambda out: out.line(f"{region} is eligible to serve {env} ({doc['id']})"))


@app.command("status")
def status(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", "-e", help="Environment.", metavar="ENV")],
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Which regions may serve ENV, and why the others may not."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    rows = inv.api().environment_regions(target, env)
    inv.out.result(
        rows,
        t.table(
            ["region", "jurisdiction", "primary", "state", "reason"],
            ["region", "jurisdiction", "primary", "state", "reason"],
            rows,
            "no regions",
        ),
    )
