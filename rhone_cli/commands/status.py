"""`rhone status`: an app at a glance."""

from __future__ import annotations

import typer

from rhone_cli.commands import _tenancy as t
from rhone_cli.commands._common import invocation
from rhone_cli.output import Output


def register(root: typer.Typer) -> None:
    @root.command("status")
    def status(
        ctx: typer.Context, app_name: t.AppOpt = None, project: t.ProjectOpt = None, workspace: t.WorkspaceOpt = None
    ) -> None:
        """An app at a glance: each environment's route owner and epoch, its running instances, and its URL."""
        from rhone_cli.services import status as service
        from rhone_cli.services import tenancy

        inv = invocation(ctx)
        target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
        doc = service.app_status(inv, target)

        def human(out: Output) -> None:
            out.line(f"{doc['app']['name']} ({doc['app']['id']})")
            out.table(
                ["environment", "owner", "epoch", "instances", "url", "latest"],
                [
                    [
                        row["environment"] + (" (frozen)" if row["frozen"] else ""),
                        row["route_owner"] or "-",
                        "-" if row["epoch"] is None else row["epoch"],
                        f"{row['instances']['ready']}/{row['instances']['total']} ready",
                        row["url"] or "-",
                        _latest(row["latest_deployment"]),
                    ]
                    for row in doc["environments"]
                ],
            )

        inv.out.result(doc, human)


def _latest(deployment: dict | None) -> str:
    return "-" if deployment is None else f"{deployment['id']} {deployment['state']}"
