"""`rhone status`, for people: an app at a glance."""

from __future__ import annotations

from rhone_cli.output import Output
from rhone_cli.render import Human


def app_status(doc: dict) -> Human:
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

    return human


def _latest(deployment: dict | None) -> str:
    return "-" if deployment is None else f"{deployment['id']} {deployment['state']}"
