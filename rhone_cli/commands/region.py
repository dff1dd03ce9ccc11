"""`rhone region`: regions and their cells, and which of them may serve an app environment."""

from typing import Annotated

import typer

from rhone_cli import render
from rhone_cli.commands._common import group, invocation
from rhone_cli.commands._options import NoWaitOpt, TargetFlags, WaitTimeoutOpt, targets

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
        render.table(
            ["id", "name", "jurisdiction", "primary", "cells"],
            ["id", "name", "jurisdiction", "primary", "cell_names"],
            shown,
            "no regions",
        ),
    )


@app.command("show")
@targets("app")
def show(
    ctx: typer.Context,
    region: RegionArg,
    env: Annotated[
        str | None, typer.Option("--env", "-e", help="Also say whether it may serve this environment.", metavar="ENV")
    ] = None,
    *,
    where: TargetFlags,
) -> None:
    """Show a region and its cells; with --env, its eligibility for that environment of the app."""

    inv = invocation(ctx)
    doc = inv.api().region(region)
    if env is not None:
        target = where.resolve(inv)
        states = {r["region_id"]: r for r in inv.api().environment_regions(target, env)}
        doc = {**doc, "environment": env, "eligibility": states.get(doc["id"])}
    shown = {**doc, "cells": ", ".join(c["name"] for c in doc["cells"])}
    if env is not None and doc.get("eligibility"):
        shown["eligibility"] = doc["eligibility"]["state"] + (
            f" ({doc['eligibility']['reason']})" if doc["eligibility"].get("reason") else ""
        )
    inv.out.result(
        doc, render.fields(shown, ["id", "name", "jurisdiction", "primary", "cells", "environment", "eligibility"])
    )


@app.command("enable")
@targets("app")
def enable(
    ctx: typer.Context,
    region: RegionArg,
    env: Annotated[str, typer.Option("--env", "-e", help="The environment to serve from REGION.", metavar="ENV")],
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    *,
    where: TargetFlags,
) -> None:
    """Make REGION eligible to serve ENV (the Region Enablement operation: requested → provisioning →
    binding_services → replicating_artifacts → eligible). A gate that does not hold — residency, data topology,
    secrets, runtime services, the artifact — ends it `disabled`, named (exit 6). No traffic reaches REGION before
    `eligible`."""
    from rhone_cli.services import topology

    inv = invocation(ctx)
    target = where.resolve(inv)
    doc = topology.enable_region(inv, target, env, region, no_wait=no_wait, timeout=wait_timeout)
    if no_wait:
        inv.out.result(doc, render.created_or_operation(doc, "region enablement"))
        return
    inv.out.result(doc, lambda out: out.line(f"{region} is eligible to serve {env} ({doc['id']})"))


@app.command("status")
@targets("app")
def status(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", "-e", help="Environment.", metavar="ENV")],
    *,
    where: TargetFlags,
) -> None:
    """Which regions may serve ENV, and why the others may not."""

    inv = invocation(ctx)
    target = where.resolve(inv)
    rows = inv.api().environment_regions(target, env)
    inv.out.result(
        rows,
        render.table(
            ["region", "jurisdiction", "primary", "state", "reason"],
            ["region", "jurisdiction", "primary", "state", "reason"],
            rows,
            "no regions",
        ),
    )
