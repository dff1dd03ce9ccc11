"""Provider bindings, runtime services, scale, allocations and regions."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rhone_cli.api import Target
from rhone_cli.errors import usage_error
from rhone_cli.invocation import Invocation
from rhone_cli.services import operations, tenancy

SECRET_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")  # the server's rule: an environment variable name
LITERAL_REFUSED = (
    "secret values are not accepted on the command line (shell history and `ps` would show them): "
    "export {name} and pass --secret {name}, or pass --secret {name}=@FILE or --secret {name}=@- (stdin)"
)


def read_secrets(
    inv: Invocation, specs: list[str], *, name_problem: Callable[[str], str | None] | None = None
) -> dict[str, str]:
    """`NAME` (from the environment variable NAME), `NAME=@FILE` or `NAME=@-` (stdin, once) → {NAME: value}.
    `name_problem` checks a name (default: a binding secret's, an upper-case environment variable name)."""
    values: dict[str, str] = {}
    stdin_used = False
    for spec in specs:
        name, sep, source = spec.partition("=")
        problem = name_problem(name) if name_problem else None
        if name_problem is None and not SECRET_NAME.fullmatch(name):
            problem = "a secret's name is an environment variable name, like DATABASE_URL"
        if problem:
            raise usage_error(f"--secret {name!r}: {problem}")
        if name in values:
            raise usage_error(f"--secret {name} is given twice")
        if not sep:
            value = inv.env.environ.get(name)
            if value is None:
                raise usage_error(f"--secret {name}: the environment variable {name} is not set")
        elif source == "@-":
            if stdin_used:
                raise usage_error("only one --secret can read stdin")
            stdin_used = True
            value = inv.env.stdin.read().rstrip("\n")
        elif source.startswith("@"):
            try:
                value = Path(source[1:]).expanduser().read_text().rstrip("\n")
            except OSError as error:
                raise usage_error(f"--secret {name}: cannot read {source[1:]}: {error.strerror}") from None
        else:
            raise usage_error(LITERAL_REFUSED.format(name=name))
        if not value:
            raise usage_error(f"--secret {name} is empty")
        inv.env.secrets.add(value)  # masked in anything rhone prints from now on
        values[name] = value
    return values


def check_bind_flags(*, resource: str | None, provision: bool) -> None:
    if provision and resource is not None:
        raise usage_error("--provision lets Rhone Local choose where the database lives: drop --resource")
    if not provision and resource is None:
        raise usage_error("name the resource with --resource ID, or let Rhone Local create one with --provision")


def provision_secret_names(inv: Invocation, provider: str, specs: list[str]) -> list[str]:
    """The variables a provisioned database's URL goes under: --secret NAME flags (names only), else the provider's
    declared secrets in rhone.toml, else DATABASE_URL."""
    for spec in specs:
        if not SECRET_NAME.fullmatch(spec):
            raise usage_error(
                f"--secret {spec!r}: with --provision Rhone Local makes the value; give only a variable name, like "
                "DATABASE_URL"
            )
    if specs:
        return sorted(set(specs))
    config = tenancy._project_config(inv)
    declared = config.providers.get(provider) if config else None
    return list(declared.secrets) if declared and declared.secrets else ["DATABASE_URL"]


def bind(
    inv: Invocation, target: Target, environment: str, body: dict[str, Any], *, no_wait: bool, timeout: float | None
) -> dict[str, Any]:
    api = inv.api()
    op = operations.follow(inv, api.bind(target, environment, body), no_wait=no_wait, timeout=timeout)
    if no_wait:
        return op
    return binding(inv, target, environment, body["name"], body.get("region")) or op


def unbind(
    inv: Invocation, target: Target, environment: str, name: str, region: str | None, *, delete_data: bool,
    no_wait: bool, timeout: float | None,
) -> dict[str, Any]:  # fmt: skip
    op = inv.api().unbind(target, environment, name, region=region, delete_data=delete_data)
    return operations.follow(inv, op, no_wait=no_wait, timeout=timeout)


def binding(inv: Invocation, target: Target, environment: str, name: str, region: str | None) -> dict[str, Any] | None:
    for row in inv.api().bindings(target, environment):
        if row["name"] == name and (region is None or row["region"] == region):
            return row
    return None


def update_services(
    inv: Invocation, target: Target, environment: str, body: dict[str, Any], *, no_wait: bool, timeout: float | None
) -> dict[str, Any]:
    api = inv.api()
    op = operations.follow(inv, api.update_services(target, environment, body), no_wait=no_wait, timeout=timeout)
    return op if no_wait else api.services(target, environment)


def scale(
    inv: Invocation, target: Target, environment: str, instances: int, *, no_wait: bool, timeout: float | None
) -> dict[str, Any]:
    op = inv.api().scale(target, environment, instances)
    return operations.follow(inv, op, no_wait=no_wait, timeout=timeout)


def enable_region(
    inv: Invocation, target: Target, environment: str, name: str, *, no_wait: bool, timeout: float | None
) -> dict[str, Any]:
    op = inv.api().enable_region(target, environment, name)
    return operations.follow(inv, op, no_wait=no_wait, timeout=timeout)
