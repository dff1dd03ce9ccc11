"""`rhone promote`: move an environment's route to a validated deployment's exact artifact."""

from __future__ import annotations

import typer

from rhone_cli.commands._common import PASSTHROUGH, PROMOTION
from rhone_cli.errors import not_implemented


def register(root: typer.Typer) -> None:
    @root.command(
        "promote",
        help="Promote a deployment's validated artifact to an environment (compare-and-swap on the route epoch)."
        f"\n\n(Not available yet: arrives with {PROMOTION}.)",
        context_settings=PASSTHROUGH,
    )
    def promote(ctx: typer.Context) -> None:
        raise not_implemented("promote", PROMOTION)
