"""One module per noun. Each command is thin: parse options, call a service function, render through `Output`.

Command modules import only typer, the standard library and light rhone modules at top level (start-up budget).
"""

from __future__ import annotations

import typer


def register_commands(app: typer.Typer) -> None:
    from rhone_cli.commands import (
        api,
        app_cmd,
        artifact,
        auth,
        completion,
        config,
        deploy,
        env_cmd,
        help_cmd,
        init,
        local,
        logs,
        op,
        project,
        promote,
        region,
        route,
        status,
        workspace,
    )

    auth.register(app)
    app.add_typer(auth.auth_app)
    init.register(app)
    for module in (workspace, project, app_cmd, env_cmd, deploy):
        app.add_typer(module.app)
    promote.register(app)
    logs.register(app)
    status.register(app)
    for module in (route, region, op, artifact, local, config, help_cmd):
        app.add_typer(module.app)
    api.register(app)
    completion.register(app)
