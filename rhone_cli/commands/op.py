"""`rhone op`: operations, the durable server-side record of every meaningful mutation."""

from __future__ import annotations

from typing import Annotated

import typer

from rhone_cli.commands import _tenancy as t
from rhone_cli.commands._common import group, invocation
from rhone_cli.output import Output

app = group("op", "Operations: the durable server-side record of every meaningful mutation.")
OpId = Annotated[str, typer.Argument(help="Operation id (op_…).", metavar="OP_ID")]


def _render(doc: dict):
    def human(out: Output) -> None:
        out.fields(doc, order=["id", "kind", "state", "version", "target_id", "created_at", "updated_at"])
        if doc.get("error"):
            out.line(f"error:      {doc['error'].get('code')}: {doc['error'].get('message')}")
        out.line("stages:")
        for stage in doc.get("stages", []):
            note = f"  error: {stage['error'].get('message')}" if stage.get("error") else ""
            out.line(f"  {stage['entered_at']}  {stage['state']}{note}")

    return human


@app.command("ls")
def ls(
    ctx: typer.Context,
    workspace: t.WorkspaceOpt = None,
    limit: t.LimitOpt = None,
    everything: t.AllOpt = False,
    state: Annotated[str | None, typer.Option("--state", help="Only operations in this state.")] = None,
) -> None:
    """List the workspace's operations, newest first."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, need="workspace")
    rows = tenancy.newest(inv, inv.api().operations, target, limit=limit, everything=everything, state=state)
    inv.out.result(
        rows,
        t.table(
            ["id", "kind", "state", "target", "updated"],
            ["id", "kind", "state", "target_id", "updated_at"],
            rows,
            "no operations",
        ),
    )


@app.command("show")
def show(ctx: typer.Context, op_id: OpId) -> None:
    """Show an operation and its stage history."""
    inv = invocation(ctx)
    doc = inv.api().operation(op_id)
    inv.out.result(doc, _render(doc))


@app.command("wait")
def wait(ctx: typer.Context, op_id: OpId, wait_timeout: t.WaitTimeoutOpt = None) -> None:
    """Wait for an operation to finish: the same verdict and exit code as the command that started it."""
    from rhone_cli.services import operations

    inv = invocation(ctx)
    op = inv.api().operation(op_id)
    operations.announce(inv, op)
    op = operations.wait(inv, op, timeout=wait_timeout)
    # The --json document stays the operation (its schema is the contract); people get the block the command that
    # started it would have printed.
    if op["kind"] == "deploy":
        from rhone_cli.commands.deploy import render_deployment
        from rhone_cli.services import deploy

        deployment = deploy.result(inv, op)
        inv.out.result(op, render_deployment(deployment))
        return
    failure = operations.verdict(op)
    if failure is not None:
        raise failure
    if op["kind"] in ("promote", "rollback") and not inv.env.options.json:
        from rhone_cli.commands.promote import render_route
        from rhone_cli.services import routes

        inv.out.result(op, render_route(routes.route_after(inv, op)))
        return
    inv.out.result(op, _render(op))
