"""`rhone env`: environments — preview, production and more — with their policy and bindings."""

from typing import Annotated

import typer

from rhone_cli import render
from rhone_cli.commands._common import group, invocation
from rhone_cli.commands._options import NoWaitOpt, TargetFlags, WaitTimeoutOpt, targets

app = group("env", "Environments: preview, production and more, with their policy and bindings.")
COLUMNS = (["id", "name", "approval", "frozen"], ["id", "name", "approval_required", "frozen"])


@app.command("ls")
@targets("app")
def ls(ctx: typer.Context, *, where: TargetFlags) -> None:
    """List an app's environments."""

    inv = invocation(ctx)
    rows = inv.api().environments(where.resolve(inv))
    inv.out.result(rows, render.table(*COLUMNS, rows, "no environments"))


@app.command("create")
@targets("app")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Environment name, e.g. staging.")],
    approval_required: Annotated[
        bool, typer.Option("--approval-required", help="Promotions need an owner/admin approval.")
    ] = False,
    frozen: Annotated[bool, typer.Option("--frozen", help="Create it frozen (promotions refused).")] = False,
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    *,
    where: TargetFlags,
) -> None:
    """Create an environment for an app (an operation)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = where.resolve(inv)
    body = {"name": name, "approval_required": approval_required, "frozen": frozen}
    doc = tenancy.create_environment(inv, target, body, no_wait=no_wait, timeout=wait_timeout)
    inv.out.result(doc, render.created_or_operation(doc, "environment"))


@app.command("show")
@targets("app")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name or id.", metavar="ENV")],
    *,
    where: TargetFlags,
) -> None:
    """Show an environment and its policy."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = where.resolve(inv)
    doc = inv.api().environment(target, name)
    tenancy.warn_policy_drift(inv, doc)
    inv.out.result(doc, render.fields(doc, ["id", "name", "app_id", "approval_required", "frozen", "created_at"]))


@app.command("policy")
@targets("app")
def policy(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Environment name.", metavar="ENV")],
    approval_required: Annotated[
        bool | None,
        typer.Option(
            "--approval-required/--no-approval-required",
            help="Promotions and rollbacks need an owner's or admin's approval. Without it, show the policy.",
        ),
    ] = None,
    *,
    where: TargetFlags,
) -> None:
    """Show or change an environment's policy on the server (owners and admins; audited). Reports where it differs
    from rhone.toml's [environments] section."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = where.resolve(inv)
    if approval_required is None:
        doc = inv.api().environment(target, name)
    else:
        doc = inv.api().set_approval_required(target, name, approval_required)
    tenancy.warn_policy_drift(inv, doc)
    inv.out.result(doc, render.fields(doc, ["name", "approval_required", "frozen"]))


def _set_frozen(ctx: typer.Context, name: str, where: TargetFlags, frozen: bool) -> None:
    inv = invocation(ctx)
    doc = inv.api().set_frozen(where.resolve(inv), name, frozen)
    inv.out.result(doc, lambda out: out.line(f"{doc['name']} is {'frozen' if doc['frozen'] else 'not frozen'}"))


@app.command("freeze")
@targets("app")
def freeze(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Environment name.", metavar="ENV")],
    *,
    where: TargetFlags,
) -> None:
    """Freeze an environment: promotions to it are refused (exit 6) until it is unfrozen (audited)."""
    _set_frozen(ctx, name, where, True)


@app.command("unfreeze")
@targets("app")
def unfreeze(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Environment name.", metavar="ENV")],
    *,
    where: TargetFlags,
) -> None:
    """Unfreeze an environment (owners and admins; audited)."""
    _set_frozen(ctx, name, where, False)


# -- provider bindings and runtime services ------------------------------------------------------------------------
EnvArg = Annotated[str, typer.Argument(help="Environment name, e.g. production.", metavar="ENV")]
RegionOpt = Annotated[
    str | None, typer.Option("--region", help="Region (default: the primary region).", metavar="REGION")
]


@app.command("bind")
@targets("app")
def bind(
    ctx: typer.Context,
    env: EnvArg,
    name: Annotated[str, typer.Argument(help="The provider's name in rhone.toml [providers].", metavar="NAME")],
    kind: Annotated[
        str, typer.Option("--kind", help="postgres, mysql, redis, s3, smtp, sqlite or generic.", metavar="KIND")
    ],
    resource: Annotated[
        str | None,
        typer.Option(
            "--resource",
            help="The resource's identifier, without credentials (pg://host/db). Not with --provision.",
            metavar="ID",
        ),
    ] = None,
    provision: Annotated[
        bool,
        typer.Option(
            "--provision",
            help="Rhone Local creates a durable database for ENV (--kind sqlite, or postgres when started with "
            "--app-databases) and hands its URL to allocations under each of the provider's secrets.",
        ),
    ] = False,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            help="A secret the app receives as an environment variable: NAME (read from $NAME), NAME=@FILE or "
            "NAME=@- (stdin). Values are stored server-side and never printed. Repeatable. With --provision: the "
            "variable names the database's URL goes under (default: the provider's secrets in rhone.toml, else "
            "DATABASE_URL).",
            metavar="NAME[=@FILE|=@-]",
        ),
    ] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="The app only reads it.")] = False,
    shared: Annotated[
        bool,
        typer.Option("--shared", help="Declared shared across environments (needs --read-only on every side)."),
    ] = False,
    region: RegionOpt = None,
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    *,
    where: TargetFlags,
) -> None:
    """Bind a provider to ENV (an operation). A mutable resource serves one environment: binding the database
    production uses to preview is refused (exit 5) unless both sides are --shared --read-only."""
    from rhone_cli.services import topology

    inv = invocation(ctx)
    topology.check_bind_flags(resource=resource, provision=provision)
    secrets = {} if provision else topology.read_secrets(inv, secret or [])
    target = where.resolve(inv)
    body = {
        "name": name,
        "kind": kind,
        "resource": resource,
        "mutable": not read_only,
        "shared_read_only": shared,
        "region": region,
        "secrets": secrets,
    }
    if provision:
        body.update(provision=True, provision_secrets=topology.provision_secret_names(inv, name, secret or []))
    doc = topology.bind(inv, target, env, body, no_wait=no_wait, timeout=wait_timeout)
    inv.out.result(doc, render.created_or_operation(doc, "binding"))


@app.command("unbind")
@targets("app")
def unbind(
    ctx: typer.Context,
    env: EnvArg,
    name: Annotated[str, typer.Argument(help="The provider's name.", metavar="NAME")],
    delete_data: Annotated[
        bool, typer.Option("--delete-data", help="Also delete the database Rhone Local provisioned for it.")
    ] = False,
    region: RegionOpt = None,
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    *,
    where: TargetFlags,
) -> None:
    """Remove a provider binding and its secrets (an operation). Running allocations keep their variables until they
    restart; deploys and promotions that need the provider are blocked again. A database Rhone Local provisioned
    is kept (binding it again with --provision finds it) unless --delete-data, which is refused while an
    allocation still uses it."""
    from rhone_cli.services import topology

    inv = invocation(ctx)
    target = where.resolve(inv)
    doc = topology.unbind(
        inv, target, env, name, region, delete_data=delete_data, no_wait=no_wait, timeout=wait_timeout
    )
    inv.out.result(doc, lambda out: out.line(f"{name} unbound from {env} ({doc['id']})"))


@app.command("bindings")
@targets("app")
def bindings(
    ctx: typer.Context,
    env: EnvArg,
    *,
    where: TargetFlags,
) -> None:
    """List ENV's provider bindings (secret names only; values are never shown)."""
    from rhone_cli.render import topology

    inv = invocation(ctx)
    rows = inv.api().bindings(where.resolve(inv), env)
    inv.out.result(rows, topology.bindings(rows, env))


@app.command("services")
@targets("app")
def services(
    ctx: typer.Context,
    env: EnvArg,
    bind_services: Annotated[
        list[str] | None,
        typer.Option(
            "--bind",
            help="Bind a runtime service: session, broadcast, idempotency, cache, queue, object_storage. Repeatable.",
            metavar="SERVICE",
        ),
    ] = None,
    unbind_services: Annotated[
        list[str] | None, typer.Option("--unbind", help="Remove a runtime service. Repeatable.", metavar="SERVICE")
    ] = None,
    provider: Annotated[
        str,
        typer.Option(
            "--provider",
            help="local (Rhone Local's own implementation) or the URL of an external service (redis://host:6379).",
        ),
    ] = "local",
    region: RegionOpt = None,
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    *,
    where: TargetFlags,
) -> None:
    """List ENV's runtime services and what the app needs to scale; with --bind/--unbind, change them (an
    operation)."""
    from rhone_cli.render import topology as shown
    from rhone_cli.services import topology

    inv = invocation(ctx)
    target = where.resolve(inv)
    if bind_services or unbind_services:
        body = {"bind": bind_services or [], "unbind": unbind_services or [], "region": region, "provider": provider}
        doc = topology.update_services(inv, target, env, body, no_wait=no_wait, timeout=wait_timeout)
        if no_wait:
            inv.out.result(doc, render.created_or_operation(doc, "services"))
            return
    else:
        doc = inv.api().services(target, env)
    inv.out.result(doc, shown.services(doc))


# -- settings -------------------------------------------------------------------------------------------------------
@app.command("set")
@targets("app")
def set_config(
    ctx: typer.Context,
    env: EnvArg,
    assignments: Annotated[
        list[str] | None,
        typer.Argument(help="NAME=VALUE settings (the first '=' splits: A=B=C sets A to 'B=C').", metavar="NAME=VALUE"),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            help="A secret setting: NAME (read from $NAME), NAME=@FILE or NAME=@- (stdin). Stored server-side, "
            "never shown. Repeatable.",
            metavar="NAME[=@FILE|=@-]",
        ),
    ] = None,
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    *,
    where: TargetFlags,
) -> None:
    """Set ENV's settings (an operation): its running allocations roll onto them, new instances first. Names are
    letters, digits and underscores, not PORT, PATH, HOME or RHONE_*."""
    from rhone_cli.errors import usage_error
    from rhone_cli.services import settings

    inv = invocation(ctx)
    values = settings.parse_assignments(assignments or [])
    secrets = settings.read_secret_settings(inv, secret or [])
    if not values and not secrets:
        raise usage_error("name at least one NAME=VALUE or --secret NAME")
    target = where.resolve(inv)
    doc = settings.change(
        inv, target, env, values=values, secrets=secrets, unset=[], no_wait=no_wait, timeout=wait_timeout
    )
    names = ", ".join(sorted([*values, *secrets]))
    inv.out.result(doc, lambda out: out.line(f"set {names} in {env} ({doc['id']}, {doc['state']})"))


@app.command("unset")
@targets("app")
def unset_config(
    ctx: typer.Context,
    env: EnvArg,
    names: Annotated[list[str], typer.Argument(help="Setting names to remove.", metavar="NAME")],
    no_wait: NoWaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    *,
    where: TargetFlags,
) -> None:
    """Remove settings from ENV (an operation that rolls its running allocations)."""
    from rhone_cli.errors import usage_error
    from rhone_cli.services import settings

    inv = invocation(ctx)
    for name in names:
        problem = settings.name_problem(name)
        if problem:
            raise usage_error(f"{name!r}: {problem}")
    target = where.resolve(inv)
    doc = settings.change(
        inv, target, env, values={}, secrets={}, unset=sorted(set(names)), no_wait=no_wait, timeout=wait_timeout
    )
    inv.out.result(doc, lambda out: out.line(f"unset {', '.join(sorted(set(names)))} in {env} ({doc['id']})"))


@app.command("config")
@targets("app")
def show_config(
    ctx: typer.Context,
    env: EnvArg,
    *,
    where: TargetFlags,
) -> None:
    """List ENV's settings (secret values masked) and rhone.toml's defaults, and the required ones it lacks."""
    from rhone_cli.render import topology

    inv = invocation(ctx)
    doc = inv.api().settings(where.resolve(inv), env)
    inv.out.result(doc, topology.settings(doc))
