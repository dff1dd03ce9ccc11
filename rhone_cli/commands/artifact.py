"""`rhone artifact`: artifacts: immutable, content-addressed builds."""

from __future__ import annotations

from rhone_cli.commands._common import DEPLOY, group, placeholder

app = group("artifact", "Artifacts: immutable, content-addressed builds.")

placeholder(app, "manifest", "Print the artifact manifest and digest of a directory (offline).", DEPLOY)
