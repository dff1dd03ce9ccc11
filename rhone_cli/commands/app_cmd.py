"""`rhone app`: apps: stable identities that exist before and independent of any deployment."""

from __future__ import annotations

from rhone_cli.commands._common import TENANCY, TOPOLOGY, group, placeholder

app = group("app", "Apps: stable identities that exist before and independent of any deployment.")

placeholder(app, 'ls', 'List apps.', TENANCY)
placeholder(app, 'create', 'Create an app (an operation).', TENANCY)
placeholder(app, 'show', 'Show an app.', TENANCY)
placeholder(app, 'scale', "Scale an app's instances in an environment (an operation, gated by runtime services).", TOPOLOGY)
placeholder(app, 'allocations', "List an app's allocations with region, cell, state and health.", TOPOLOGY)
