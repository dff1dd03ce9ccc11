"""Provider bindings, runtime services, scale, allocations and regions."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rhone_cli import api_paths
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
    inv: Invocation,
    target: tenancy.Target,
    environment: str,
    body: dict[str, Any],
    *,
    no_wait: bool,
    timeout: float | None,
) -> dict[str, Any]:
    op = operations.run(
        inv,
        target.environment_path(environment, "bindings"),
        body,
        no_wait=no_wait,
        timeout=timeout,
        key_parts=(inv.profile.api_url, target.app_path, environment, body["name"], str(body["resource"])),
    )
    if no_wait:
        return op
    return binding(inv, target, environment, body["name"], body.get("region")) or op


def unbind(
    inv: Invocation, target: tenancy.Target, environment: str, name: str, region: str | None, *, delete_data: bool,
    no_wait: bool, timeout: float | None,
) -> dict[str, Any]:  # fmt: skip
    path = target.environment_path(environment, "bindings", api_paths.checked_name("binding", name))
    params = {
        **({"region": api_paths.checked_ref("region", region)} if region else {}),
        **({"delete_data": "true"} if delete_data else {}),
    }
    return operations.run(
        inv,
        path,
        {},
        params=params or None,
        no_wait=no_wait,
        timeout=timeout,
        key_parts=(inv.profile.api_url, path, str(region), str(delete_data)),
        method="DELETE",
        derive_in_ci=False,
    )


def bindings(inv: Invocation, target: tenancy.Target, environment: str) -> list[dict[str, Any]]:
    return tenancy.items(inv, target.environment_path(environment, "bindings"))


def binding(
    inv: Invocation, target: tenancy.Target, environment: str, name: str, region: str | None
) -> dict[str, Any] | None:
    for row in bindings(inv, target, environment):
        if row["name"] == name and (region is None or row["region"] == region):
            return row
    return None


def services(inv: Invocation, target: tenancy.Target, environment: str) -> dict[str, Any]:
    return inv.client().get(target.environment_path(environment, "services")).data


def update_services(
    inv: Invocation,
    target: tenancy.Target,
    environment: str,
    body: dict[str, Any],
    *,
    no_wait: bool,
    timeout: float | None,
) -> dict[str, Any]:
    path = target.environment_path(environment, "services")
    op = operations.run(
        inv,
        path,
        body,
        no_wait=no_wait,
        timeout=timeout,
        key_parts=(inv.profile.api_url, path, ",".join(body["bind"]), ",".join(body["unbind"]), str(body["region"])),
        derive_in_ci=False,
    )
    return op if no_wait else services(inv, target, environment)


def scale(
    inv: Invocation, target: tenancy.Target, environment: str, instances: int, *, no_wait: bool, timeout: float | None
) -> dict[str, Any]:
    path = target.environment_path(environment, "scale")
    return operations.run(
        inv,
        path,
        {"instances": instances},
        no_wait=no_wait,
        timeout=timeout,
        key_parts=(inv.profile.api_url, path, str(instances)),
        derive_in_ci=False,
    )


def allocations(
    inv: Invocation,
    target: tenancy.Target,
    *,
    environment: str | None,
    deployment: str | None,
    all_states: bool,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The newest allocations (`limit`, default 30), or with `all_states` every one in every state."""
    params: dict[str, Any] = {"all": "true" if all_states else "false"}
    if environment:
        params["environment"] = api_paths.checked_ref("environment", environment)
    if deployment:
        params["deployment"] = api_paths.checked_id("deployment", deployment)
    path = api_paths.below(target.app_path, "allocations")
    return tenancy.newest(inv, path, limit=limit, everything=all_states, params=params)


def regions(inv: Invocation) -> list[dict[str, Any]]:
    return inv.client().get("/v1/regions").data["items"]


def region(inv: Invocation, name: str) -> dict[str, Any]:
    return inv.client().get(api_paths.region(name)).data


def environment_regions(inv: Invocation, target: tenancy.Target, environment: str) -> list[dict[str, Any]]:
    return inv.client().get(target.environment_path(environment, "regions")).data["items"]


def enable_region(
    inv: Invocation, target: tenancy.Target, environment: str, name: str, *, no_wait: bool, timeout: float | None
) -> dict[str, Any]:
    path = target.environment_path(environment, "regions", api_paths.checked_ref("region", name), "enable")
    return operations.run(
        inv, path, {}, no_wait=no_wait, timeout=timeout, key_parts=(inv.profile.api_url, path), derive_in_ci=False
    )
