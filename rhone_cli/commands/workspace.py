"""`rhone workspace`: workspaces: members, roles and the audit log."""

from __future__ import annotations

from rhone_cli.commands._common import TENANCY, group, placeholder

app = group("workspace", "Workspaces: members, roles and the audit log.")

placeholder(app, 'ls', 'List the workspaces you belong to.', TENANCY)
placeholder(app, 'show', 'Show a workspace.', TENANCY)
placeholder(app, 'members', "List a workspace's members and their roles.", TENANCY)
placeholder(app, 'invite', 'Invite a member with a role.', TENANCY)
placeholder(app, 'audit', 'Read the workspace audit log (owners and admins).', TENANCY)
