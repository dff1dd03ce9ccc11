"""Workspaces, members, audit, projects, apps and environments.

Which workspace, project and app a command means comes from, in order: its flags, the nearest rhone.toml (when
there is one), then the active profile. Names and ids are both accepted in API paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rhone_cli.api import Listing, Target
from rhone_cli.errors import ExitCode, RhoneError
from rhone_cli.invocation import Invocation
from rhone_cli.services import operations

if TYPE_CHECKING:
    from rhone_cli.config.locate import Names


def _project_config(inv: Invocation) -> Any:
    from rhone_cli.config import project

    path = project.find(inv.env.workdir)
    if path is None:
        return None
    return project.load(inv.env.workdir, path)


def _names_in_rhone_toml(inv: Invocation) -> Names | None:
    """The names the nearest rhone.toml gives (None without one), read with tomllib; a file whose names cannot be
    read plainly is validated in full, which reports every problem of it (exit 2)."""
    from rhone_cli.config import locate

    path = locate.find(inv.env.workdir)
    if path is None:
        return None
    names = locate.read_names(path)
    if names is None:
        from rhone_cli.config import project

        config = project.load(inv.env.workdir, path)
        names = locate.Names(config.project.workspace, config.project.name, config.app.name)
    return names


NEEDS = {"workspace": ("workspace",), "project": ("workspace", "project"), "app": ("workspace", "project", "app")}


def target(
    inv: Invocation,
    *,
    workspace: str | None = None,
    project: str | None = None,
    app: str | None = None,
    need: str = "app",
) -> Target:
    """The workspace (and the project and app when `need` asks for them) a command acts on: its flags, else the
    nearest rhone.toml, else the profile. rhone.toml is read only when a needed value was not given, and every
    needed value still missing is named in one error (exit 2)."""
    needed = NEEDS[need]
    given = {"workspace": workspace, "project": project, "app": app}
    names = _names_in_rhone_toml(inv) if any(given[name] is None for name in needed) else None
    found = Target(
        workspace=workspace or (names.workspace if names else None) or inv.profile.workspace or "",
        project=project or (names.project if names else None) or inv.profile.project,
        app=app or (names.app if names else None),
    )
    found.require(*needed)
    return found


def policy_drift_message(drift: dict) -> str:
    """The warning for one `policy_drift` entry (rhone.toml against the server's policy)."""
    name = drift["environment"]
    if drift["server"] is None:
        return f"rhone.toml declares environment {name}, which does not exist on the server: `{drift['fix']}`"
    return (
        f"rhone.toml declares [environments.{name}] {drift['setting']} = {str(drift['declared']).lower()}, but the "
        f"server's policy is {str(drift['server']).lower()} (the server's applies); align it with `{drift['fix']}`, "
        "or change rhone.toml"
    )


def warn_policy_drift(inv: Invocation, environment: dict) -> None:
    """Warn when rhone.toml (if there is one here) declares another approval policy for this environment than the
    server enforces."""
    config = _project_config(inv)
    declared = config.resolved()["environments"].get(environment["name"]) if config else None
    if declared is None or bool(declared.get("approval_required")) == bool(environment["approval_required"]):
        return
    wanted = bool(declared.get("approval_required"))
    drift = {
        "environment": environment["name"],
        "setting": "approval_required",
        "declared": wanted,
        "server": bool(environment["approval_required"]),
        "fix": f"rhone env policy {environment['name']} --{'' if wanted else 'no-'}approval-required",
    }
    inv.out.warn(policy_drift_message(drift))


DEFAULT_LIMIT = 30


def newest(
    inv: Invocation, listing: Callable[..., Listing], *args: Any, limit: int | None, everything: bool, **kwargs: Any
) -> list[dict]:
    """The newest items of a list that grows (deployments, operations, the audit log), from `listing(*args,
    limit=N, **kwargs)`: `limit` of them (default DEFAULT_LIMIT), or with `everything` all of them, newest first;
    the server pages, so only what is shown is sent. When more exist than are shown, a hint on stderr says how to see
    them."""
    if everything and limit is not None:
        raise RhoneError("--all and --limit cannot be combined", code="usage_error", exit_code=ExitCode.USAGE)
    found = listing(*args, limit=None if everything else (limit or DEFAULT_LIMIT), **kwargs)
    if found.more:
        inv.out.info(f"showing the {len(found.items)} newest; `-L N` shows N, `--all` every one")
    return found.items


def create_project(inv: Invocation, target: Target, *, no_wait: bool, timeout: float | None) -> dict:
    """Create `target`'s project by operation; unless `no_wait`, wait for it and return the project."""
    api = inv.api()
    op = operations.follow(inv, api.create_project(target, {"name": target.project}), no_wait=no_wait, timeout=timeout)
    return op if no_wait else api.project(target)


def create_app(
    inv: Invocation, target: Target, *, environments: dict | None = None, no_wait: bool, timeout: float | None
) -> dict:
    """Create `target`'s app (with its environments' policies, when given) by operation; unless `no_wait`, wait for
    it and return the app."""
    api = inv.api()
    body = {"name": target.app, **({"environments": environments} if environments is not None else {})}
    op = operations.follow(inv, api.create_app(target, body), no_wait=no_wait, timeout=timeout)
    return op if no_wait else api.app(target)


def create_environment(inv: Invocation, target: Target, body: dict, *, no_wait: bool, timeout: float | None) -> dict:
    """Create one of `target`'s environments by operation; unless `no_wait`, wait for it and return it."""
    api = inv.api()
    op = operations.follow(inv, api.create_environment(target, body), no_wait=no_wait, timeout=timeout)
    return op if no_wait else api.environment(target, body["name"])


def link(inv: Invocation, config: Any, directory: Any) -> dict:
    """Make sure the project and app named in rhone.toml exist (creating them by operation when missing) and
    record their ids in `.rhone/link.json`, so later commands in this directory know exactly what they target."""
    import json

    from rhone_cli.config.profiles import atomic_write

    where = target(inv, workspace=config.project.workspace, project=config.project.name, app=config.app.name)
    api = inv.api()
    created = []
    project_doc, made = _find_or_create(
        lambda: api.project(where), lambda: create_project(inv, where, no_wait=False, timeout=None)
    )
    if made:
        created.append("project")
    policies = {
        name: policy.model_dump(include={"approval_required", "frozen"}) for name, policy in config.environments.items()
    }
    app_doc, made = _find_or_create(
        lambda: api.app(where),
        lambda: create_app(inv, where, environments=policies, no_wait=False, timeout=None),
    )
    if made:
        created.append("app")
    link_doc = {
        "api_url": inv.profile.api_url,
        "workspace_id": project_doc["workspace_id"],
        "project_id": project_doc["id"],
        "project": project_doc["name"],
        "app_id": app_doc["id"],
        "app": app_doc["name"],
    }
    state = directory / ".rhone"
    state.mkdir(exist_ok=True)
    # Atomic: concurrent deploys from one checkout each write it (the same content).
    atomic_write(state / "link.json", json.dumps(link_doc, indent=2) + "\n", mode=0o644)
    return {**link_doc, "created": created}


def _find_or_create(find: Callable[[], dict], create: Callable[[], dict]) -> tuple[dict, bool]:
    """(the resource, whether this call created it). Two first deploys of a new app race to create it: the loser's
    create is refused (`name_taken`, when the request or its operation finds the name already used) and it takes
    the resource the winner created instead of failing."""
    found = _or_none(find)
    if found is not None:
        return found, False
    try:
        return create(), True
    except RhoneError as error:
        if error.code != "name_taken":
            raise
        lost = error
    found = _or_none(find)
    if found is None:  # taken, yet not visible to us: another workspace member's, or it went away again
        raise lost
    return found, False


def _or_none(find: Callable[[], dict]) -> dict | None:
    try:
        return find()
    except RhoneError as error:
        if error.exit_code == ExitCode.NOT_FOUND:
            return None
        raise
