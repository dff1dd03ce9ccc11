"""`rhone status`: an app at a glance."""

import typer

from rhone_cli.commands._common import invocation
from rhone_cli.commands._options import TargetFlags, targets


def register(root: typer.Typer) -> None:
    @root.command("status")
    @targets("app")
    def status(ctx: typer.Context, *, where: TargetFlags) -> None:
        """An app at a glance: each environment's route owner and epoch, its running instances, and its URL."""
        from rhone_cli.render.status import app_status
        from rhone_cli.services import status as service

        inv = invocation(ctx)
        doc = service.app_status(inv, where.resolve(inv))
        inv.out.result(doc, app_status(doc))
