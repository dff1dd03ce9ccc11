"""`rhone op`: operations: the durable server-side record of every meaningful mutation."""

from __future__ import annotations

from rhone_cli.commands._common import TENANCY, group, placeholder

app = group("op", "Operations: the durable server-side record of every meaningful mutation.")

placeholder(app, 'ls', 'List operations.', TENANCY)
placeholder(app, 'show', 'Show an operation and its stage history.', TENANCY)
placeholder(app, 'wait', 'Wait for an operation to finish; same verdict and exit code as the command that started it.', TENANCY)
