"""`rhone env`: environments: preview, production and more, with their policy and bindings."""

from __future__ import annotations

from rhone_cli.commands._common import PROMOTION, TENANCY, TOPOLOGY, group, placeholder

app = group("env", "Environments: preview, production and more, with their policy and bindings.")

placeholder(app, 'ls', "List an app's environments.", TENANCY)
placeholder(app, 'create', 'Create an environment (an operation).', TENANCY)
placeholder(app, 'show', 'Show an environment.', TENANCY)
placeholder(app, 'freeze', 'Freeze an environment: promotions are refused.', PROMOTION)
placeholder(app, 'unfreeze', 'Unfreeze an environment.', PROMOTION)
placeholder(app, 'bind', 'Bind a provider to an environment (an operation).', TOPOLOGY)
placeholder(app, 'unbind', 'Remove a provider binding (an operation).', TOPOLOGY)
placeholder(app, 'bindings', "List an environment's provider bindings.", TOPOLOGY)
placeholder(app, 'services', 'Declare or list runtime services for an environment.', TOPOLOGY)
