"""`rhone local`: rhone Local: the embedded single-machine control plane."""

from __future__ import annotations

from rhone_cli.commands._common import TENANCY, group, placeholder

app = group("local", "Rhone Local: the embedded single-machine control plane.")

placeholder(app, 'up', 'Start Rhone Local in the background and wait until it is healthy.', TENANCY)
placeholder(app, 'down', 'Stop Rhone Local.', TENANCY)
placeholder(app, 'status', 'Show whether Rhone Local is running, and where.', TENANCY)
placeholder(app, 'logs', "Show Rhone Local's log.", TENANCY)
