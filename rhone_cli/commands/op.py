"""`rhone op`: operations, the durable server-side record of every meaningful mutation."""

from typing import Annotated

import typer

from rhone_cli import render
from rhone_cli.commands._common import group, invocation
from rhone_cli.commands._options import AllOpt, LimitOpt, TargetFlags, WaitTimeoutOpt, targets

app = group("op", "Operations: the durable server-side record of every meaningful mutation.")
OpId = Annotated[str, typer.Argument(help="Operation id (op_…).", metavar="OP_ID")]


@app.command("ls")
@targets("workspace")
def ls(
    ctx: typer.Context,
    limit: LimitOpt = None,
    everything: AllOpt = False,
    state: Annotated[str | None, typer.Option("--state", help="Only operations in this state.")] = None,
    *,
    where: TargetFlags,
) -> None:
    """List the workspace's operations, newest first."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = where.resolve(inv)
    rows = tenancy.newest(inv, inv.api().operations, target, limit=limit, everything=everything, state=state)
    inv.out.result(
        rows,
        render.table(
            ["id", "kind", "state", "target", "updated"],
            ["id", "kind", "state", "target_id", "updated_at"],
            rows,
            "no operations",
        ),
    )


@app.command("show")
def show(ctx: typer.Context, op_id: OpId) -> None:
    """Show an operation and its stage history."""
    from rhone_cli.render.operations import operation

    inv = invocation(ctx)
    doc = inv.api().operation(op_id)
    inv.out.result(doc, operation(doc))


@app.command("wait")
def wait(ctx: typer.Context, op_id: OpId, wait_timeout: WaitTimeoutOpt = None) -> None:
    """Wait for an operation to finish: the same verdict and exit code as the command that started it."""
    from rhone_cli.services import operations

    inv = invocation(ctx)
    op = inv.api().operation(op_id)
    operations.announce(inv, op)
    op = operations.wait(inv, op, timeout=wait_timeout)
    # The --json document stays the operation (its schema is the contract); people get the block the command that
    # started it would have printed.
    if op["kind"] == "deploy":
        from rhone_cli.render.deployments import deployment as shown
        from rhone_cli.services import deploy

        inv.out.result(op, shown(deploy.result(inv, op)))
        return
    failure = operations.verdict(op)
    if failure is not None:
        raise failure
    if op["kind"] in ("promote", "rollback") and not inv.env.options.json:
        from rhone_cli.render.routes import route_move
        from rhone_cli.services import routes

        inv.out.result(op, route_move(routes.route_after(inv, op)))
        return
    from rhone_cli.render.operations import operation

    inv.out.result(op, operation(op))
