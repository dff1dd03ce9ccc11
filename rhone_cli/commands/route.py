"""`rhone route`: route ownership: which deployment serves each app environment, by epoch."""

from __future__ import annotations

from rhone_cli.commands._common import PROMOTION, group, placeholder

app = group("route", "Route ownership: which deployment serves each app environment, by epoch.")

placeholder(app, "ls", "List route owners.", PROMOTION)
placeholder(app, "show", "Show a route owner and its epoch.", PROMOTION)
placeholder(app, "history", "Show every change of a route owner and the operation that made it.", PROMOTION)
