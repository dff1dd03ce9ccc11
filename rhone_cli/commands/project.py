"""`rhone project`: projects: groups of apps in a workspace."""

from __future__ import annotations

from rhone_cli.commands._common import TENANCY, group, placeholder

app = group("project", "Projects: groups of apps in a workspace.")

placeholder(app, 'ls', 'List projects.', TENANCY)
placeholder(app, 'create', 'Create a project (an operation).', TENANCY)
placeholder(app, 'show', 'Show a project.', TENANCY)
