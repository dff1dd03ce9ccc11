"""`rhone deploy`: build an artifact, upload what the server lacks, and drive the deploy operation."""

from __future__ import annotations

from typing import Annotated

import typer

from rhone_cli.commands._common import DEPLOY, new_typer, placeholder
from rhone_cli.errors import not_implemented

app = new_typer(
    name="deploy",
    help="Deploy the project in this directory to a preview (`rhone deploy`), or manage deployments."
    f"\n\n(Not available yet: arrives with {DEPLOY}.)",
    invoke_without_command=True,
)


@app.callback()
def deploy(
    ctx: typer.Context,
    env: Annotated[str, typer.Option("--env", help="Target environment.", metavar="ENV")] = "preview",
    prebuilt: Annotated[
        bool, typer.Option("--prebuilt", help="Upload the built output; skip the remote build.")
    ] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Return once the operation is created.")] = False,
    wait_timeout: Annotated[
        float | None, typer.Option("--wait-timeout", help="Stop waiting after SECONDS (exit 7).", metavar="SECONDS")
    ] = None,
) -> None:
    if ctx.invoked_subcommand is None:
        raise not_implemented("deploy", DEPLOY)


placeholder(app, "ls", "List deployments.", DEPLOY)
placeholder(app, "show", "Show a deployment, its evidence and allocations.", DEPLOY)
placeholder(app, "approve", "Approve a blocked deployment (cold state or migrations).", DEPLOY)
placeholder(app, "logs", "Show a deployment's build and allocation logs.", DEPLOY)
