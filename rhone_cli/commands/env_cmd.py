"""`rhone env`: environments — preview, production and more — with their policy and bindings."""

from __future__ import annotations

from typing import Annotated

import typer

from rhone_cli.commands import _tenancy as t
from rhone_cli.commands._common import group, invocation

app = group("env", "Environments: preview, production and more, with their policy and bindings.")
COLUMNS = (["id", "name", "approval", "frozen"], ["id", "name", "approval_required", "frozen"])


@app.command("ls")
def ls(
    ctx: typer.Context, app_name: t.AppOpt = None, project: t.ProjectOpt = None, workspace: t.WorkspaceOpt = None
) -> None:
    """List an app's environments."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    rows = inv.api().environments(target)
    inv.out.result(rows, t.table(*COLUMNS, rows, "no environments"))


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Environment name, e.g. staging.")],
    approval_required: Annotated[
        bool, typer.Option("--approval-required", help="Promotions need an owner/admin approval.")
    ] = False,
    frozen: Annotated[bool, typer.Option("--frozen", help="Create it frozen (promotions refused).")] = False,
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Create an environment for an app (an operation)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    body = {"name": name, "approval_required": approval_required, "frozen": frozen}
    doc = tenancy.create_environment(inv, target, body, no_wait=no_wait, timeout=wait_timeout)
    inv.out.result(doc, t.created_or_operation(doc, "environment"))


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name or id.", metavar="ENV")],
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Show an environment and its policy."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    doc = inv.api().environment(target, name)
    tenancy.warn_policy_drift(inv, doc)
    inv.out.result(doc, t.fields(doc, ["id", "name", "app_id", "approval_required", "frozen", "created_at"]))


@app.command("policy")
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
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Show or change an environment's policy on the server (owners and admins; audited). Reports where it differs
    from rhone.toml's [environments] section."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    if approval_required is None:
        doc = inv.api().environment(target, name)
    else:
        doc = inv.api().set_approval_required(target, name, approval_required)
    tenancy.warn_policy_drift(inv, doc)
    inv.out.result(doc, t.fields(doc, ["name", "approval_required", "frozen"]))


def _set_frozen(ctx: typer.Context, name: str, app_name, project, workspace, frozen: bool) -> None:
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    doc = inv.api().set_frozen(target, name, frozen)
    inv.out.result(doc, lambda out: out.line(f"{doc['name']} is {'frozen' if doc['frozen'] else 'not frozen'}"))


@app.command("freeze")
def freeze(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Environment name.", metavar="ENV")],
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Freeze an environment: promotions to it are refused (exit 6) until it is unfrozen (audited)."""
    _set_frozen(ctx, name, app_name, project, workspace, True)


@app.command("unfreeze")
def unfreeze(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Environment name.", metavar="ENV")],
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """Unfreeze an environment (owners and admins; audited)."""
    _set_frozen(ctx, name, app_name, project, workspace, False)


# -- provider bindings and runtime services ------------------------------------------------------------------------
EnvArg = Annotated[str, typer.Argument(help="Environment name, e.g. production.", metavar="ENV")]
RegionOpt = Annotated[
    str | None, typer.Option("--region", help="Region (default: the primary region).", metavar="REGION")
]
BINDING_COLUMNS = (
    ["name", "kind", "resource", "region", "state", "mutable", "shared", "secrets"],
    ["name", "kind", "resource", "region", "state", "mutable", "shared_read_only", "secrets"],
)


@app.command("bind")
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
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Bind a provider to ENV (an operation). A mutable resource serves one environment: binding the database
    production uses to preview is refused (exit 5) unless both sides are --shared --read-only."""
    from rhone_cli.services import tenancy, topology

    inv = invocation(ctx)
    topology.check_bind_flags(resource=resource, provision=provision)
    secrets = {} if provision else topology.read_secrets(inv, secret or [])
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
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
    inv.out.result(doc, t.created_or_operation(doc, "binding"))


@app.command("unbind")
def unbind(
    ctx: typer.Context,
    env: EnvArg,
    name: Annotated[str, typer.Argument(help="The provider's name.", metavar="NAME")],
    delete_data: Annotated[
        bool, typer.Option("--delete-data", help="Also delete the database Rhone Local provisioned for it.")
    ] = False,
    region: RegionOpt = None,
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Remove a provider binding and its secrets (an operation). Running allocations keep their variables until they
    restart; deploys and promotions that need the provider are blocked again. A database Rhone Local provisioned
    is kept (binding it again with --provision finds it) unless --delete-data, which is refused while an
    allocation still uses it."""
    from rhone_cli.services import tenancy, topology

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    doc = topology.unbind(
        inv, target, env, name, region, delete_data=delete_data, no_wait=no_wait, timeout=wait_timeout
    )
    inv.out.result(doc, lambda out: out.line(f"{name} unbound from {env} ({doc['id']})"))


@app.command("bindings")
def bindings(
    ctx: typer.Context,
    env: EnvArg,
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """List ENV's provider bindings (secret names only; values are never shown)."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    rows = inv.api().bindings(target, env)
    inv.out.result(rows, t.table(*BINDING_COLUMNS, rows, f"no provider bindings in {env}"))


@app.command("services")
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
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """List ENV's runtime services and what the app needs to scale; with --bind/--unbind, change them (an
    operation)."""
    from rhone_cli.services import tenancy, topology

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    if bind_services or unbind_services:
        body = {"bind": bind_services or [], "unbind": unbind_services or [], "region": region, "provider": provider}
        doc = topology.update_services(inv, target, env, body, no_wait=no_wait, timeout=wait_timeout)
        if no_wait:
            inv.out.result(doc, t.created_or_operation(doc, "services"))
            return
    else:
        doc = inv.api().services(target, env)
    inv.out.result(doc, _services_human(doc))


def _engine_columns(row: dict) -> list[str]:
    """Whether the engine answers (and how often it was restarted), and how many of the lane's allocations hold a
    connection to it: bound but unused shows as 0/N."""
    if row.get("engine_up") is None:
        return ["-", "-"]
    restarts = row.get("engine_restarts") or 0
    state = ("up" if row["engine_up"] else "down") + (f" ({restarts} restart(s))" if restarts else "")
    allocations = row.get("allocations")
    if allocations is None:
        return [state, "?"]
    return [state, f"{sum(a['connections'] > 0 for a in allocations)}/{len(allocations)} allocation(s)"]


def _services_human(doc: dict):
    def human(out) -> None:
        out.table(
            ["service", "region", "provider", "engine", "connected", "operation"],
            [[r["service"], r["region"], r["provider"], *_engine_columns(r), r["operation_id"]] for r in doc["items"]],
            empty=f"no runtime services bound in {doc['environment']}",
        )
        for r in doc["items"]:
            if r.get("engine_up") is False:
                out.warn(f"{r['service']} in {r['region']} is down: {r.get('engine_error')}")
        if doc["required"]:
            out.line()
            out.line("needed for more than one instance:")
            missing = {r["service"] for r in doc["missing"]}
            for requirement in doc["required"]:
                mark = "missing" if requirement["service"] in missing else "bound"
                out.line(f"  {requirement['service']:<14} {mark:<8} {requirement['reason']}")

    return human


# -- settings -------------------------------------------------------------------------------------------------------
@app.command("set")
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
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Set ENV's settings (an operation): its running allocations roll onto them, new instances first. Names are
    letters, digits and underscores, not PORT, PATH, HOME or RHONE_*."""
    from rhone_cli.errors import usage_error
    from rhone_cli.services import settings, tenancy

    inv = invocation(ctx)
    values = settings.parse_assignments(assignments or [])
    secrets = settings.read_secret_settings(inv, secret or [])
    if not values and not secrets:
        raise usage_error("name at least one NAME=VALUE or --secret NAME")
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    doc = settings.change(
        inv, target, env, values=values, secrets=secrets, unset=[], no_wait=no_wait, timeout=wait_timeout
    )
    names = ", ".join(sorted([*values, *secrets]))
    inv.out.result(doc, lambda out: out.line(f"set {names} in {env} ({doc['id']}, {doc['state']})"))


@app.command("unset")
def unset_config(
    ctx: typer.Context,
    env: EnvArg,
    names: Annotated[list[str], typer.Argument(help="Setting names to remove.", metavar="NAME")],
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
    no_wait: t.NoWaitOpt = False,
    wait_timeout: t.WaitTimeoutOpt = None,
) -> None:
    """Remove settings from ENV (an operation that rolls its running allocations)."""
    from rhone_cli.errors import usage_error
    from rhone_cli.services import settings, tenancy

    inv = invocation(ctx)
    for name in names:
        problem = settings.name_problem(name)
        if problem:
            raise usage_error(f"{name!r}: {problem}")
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    doc = settings.change(
        inv, target, env, values={}, secrets={}, unset=sorted(set(names)), no_wait=no_wait, timeout=wait_timeout
    )
    inv.out.result(doc, lambda out: out.line(f"unset {', '.join(sorted(set(names)))} in {env} ({doc['id']})"))


@app.command("config")
def show_config(
    ctx: typer.Context,
    env: EnvArg,
    app_name: t.AppOpt = None,
    project: t.ProjectOpt = None,
    workspace: t.WorkspaceOpt = None,
) -> None:
    """List ENV's settings (secret values masked) and rhone.toml's defaults, and the required ones it lacks."""
    from rhone_cli.services import tenancy

    inv = invocation(ctx)
    target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
    doc = inv.api().settings(target, env)

    def human(out) -> None:
        rows = [
            [i["name"], "********" if i["secret"] else i["value"], "yes" if i["secret"] else "", i["source"]]
            for i in doc["items"]
        ]
        out.table(["name", "value", "secret", "source"], rows, empty=f"no settings in {doc['environment']}")
        if doc["missing"]:
            out.line()
            out.line(f"required but missing (deploys are refused): {', '.join(doc['missing'])}")

    inv.out.result(doc, human)
