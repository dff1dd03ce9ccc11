"""Environment settings: `rhone env set|unset|config`.

The same rules as the server (rhone_local/domain/settings.py), checked before anything is sent, so a bad name or an
oversized value is an exit 2 that changed nothing: names are `[A-Za-z_][A-Za-z0-9_]*` (at most 128) and not PORT,
PATH, HOME or RHONE_*; values are text without NUL of at most 32 KiB; an environment holds at most 200 settings.
`A=B=C` sets A to `B=C` (the first `=` splits).
"""

from __future__ import annotations

from typing import Any

from rhone_cli.api import Target
from rhone_cli.config.settings import MAX_SETTINGS, name_problem, value_problem
from rhone_cli.errors import usage_error
from rhone_cli.invocation import Invocation
from rhone_cli.services import operations, topology


def _check_value(name: str, value: str) -> None:
    problem = value_problem(value)
    if problem:
        raise usage_error(f"{name}: {problem}")


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """`NAME=VALUE` arguments → {NAME: VALUE}; refuses the whole list at the first problem."""
    if len(assignments) > MAX_SETTINGS:
        raise usage_error(f"at most {MAX_SETTINGS} settings per environment (got {len(assignments)})")
    values: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            raise usage_error(
                f"{item!r} is not NAME=VALUE",
                hint="a secret's value never goes on the command line: use --secret NAME (from $NAME), "
                "--secret NAME=@FILE or --secret NAME=@-",
            )
        problem = name_problem(name)
        if problem:
            raise usage_error(f"{name!r}: {problem}")
        if name in values:
            raise usage_error(f"{name} is given twice")
        _check_value(name, value)
        values[name] = value
    return values


def read_secret_settings(inv: Invocation, specs: list[str]) -> dict[str, str]:
    secrets = topology.read_secrets(inv, specs, name_problem=name_problem)
    for name, value in secrets.items():
        _check_value(name, value)
    return secrets


def change(
    inv: Invocation,
    target: Target,
    environment: str,
    *,
    values: dict[str, str],
    secrets: dict[str, str],
    unset: list[str],
    no_wait: bool,
    timeout: float | None,
) -> dict[str, Any]:
    both = sorted(set(values) & set(secrets))
    if both:
        raise usage_error(f"{both[0]} is given both as NAME=VALUE and as --secret")
    body = {"values": values, "secrets": secrets, "unset": unset}
    op = inv.api().change_settings(target, environment, body)
    return operations.follow(inv, op, no_wait=no_wait, timeout=timeout)
