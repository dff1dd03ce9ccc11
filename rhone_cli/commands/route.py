"""`rhone route`: route ownership — which deployment serves each app environment, at which epoch."""

from typing import Annotated

import typer

from rhone_cli import render
from rhone_cli.commands._common import group, invocation
from rhone_cli.commands._options import AllOpt, LimitOpt, TargetFlags, targets

app = group("route", "Route ownership: which deployment serves each app environment, by epoch.")
Env = Annotated[str, typer.Argument(help="Environment name, e.g. production.", metavar="ENV")]


@app.command("ls")
@targets("app")
def ls(ctx: typer.Context, *, where: TargetFlags) -> None:
    """List the app's route owners."""

    inv = invocation(ctx)
    target = where.resolve(inv)
    rows = inv.api().routes(target)
    inv.out.result(
        rows,
        render.table(
            ["route", "epoch", "deployment", "url"],
            ["route_key", "epoch", "deployment_id", "url"],
            rows,
            "no routes yet",
        ),
    )


@app.command("show")
@targets("app")
def show(
    ctx: typer.Context,
    env: Env,
    *,
    where: TargetFlags,
) -> None:
    """Show who owns ENV's route, at which epoch, with which artifact."""

    inv = invocation(ctx)
    target = where.resolve(inv)
    doc = inv.api().route(target, env)
    inv.out.result(
        doc,
        render.fields(
            doc, ["route_key", "epoch", "deployment_id", "artifact_digest", "url", "operation_id", "updated_at"]
        ),
    )


@app.command("history")
@targets("app")
def history(
    ctx: typer.Context,
    env: Env,
    limit: LimitOpt = None,
    everything: AllOpt = False,
    *,
    where: TargetFlags,
) -> None:
    """The changes of ENV's route owner, newest first, with the operation that made each."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = where.resolve(inv)
    rows = tenancy.newest(inv, inv.api().route_history, target, env, limit=limit, everything=everything)
    inv.out.result(
        rows,
        render.table(
            ["seq", "epoch", "kind", "deployment", "previous", "operation", "at"],
            ["seq", "epoch", "kind", "deployment_id", "previous_deployment_id", "operation_id", "created_at"],
            rows,
            "no changes yet",
        ),
    )
