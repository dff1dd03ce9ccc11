"""Workspaces, members, audit, projects, apps and environments.

Which workspace, project and app a command means comes from, in order: its flags, the nearest rhone.toml (when
there is one), then the active profile. Names and ids are both accepted in API paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rhone_cli import api_paths
from rhone_cli.errors import ExitCode, RhoneError
from rhone_cli.invocation import Invocation
from rhone_cli.services import operations


@dataclass
class Target:
    workspace: str
    project: str | None = None
    app: str | None = None

    @property
    def workspace_path(self) -> str:
        return api_paths.v1("workspaces", api_paths.checked_ref("workspace", self.workspace))

    @property
    def project_path(self) -> str:
        self._require("project")
        return api_paths.below(self.workspace_path, "projects", api_paths.checked_ref("project", self.project or ""))

    @property
    def app_path(self) -> str:
        self._require("project", "app")
        return api_paths.below(self.project_path, "apps", api_paths.checked_ref("app", self.app or ""))

    def _require(self, *names: str) -> None:
        """Every missing one of `names` in one error, not one per run."""
        missing = [name for name in names if not getattr(self, name)]
        if missing:
            flags = " and ".join(f"--{name} NAME" for name in missing)
            raise RhoneError(
                f"no {' and no '.join(missing)} given",
                code="input_required",
                exit_code=ExitCode.USAGE,
                hint=f"pass {flags}, or run inside a directory with a rhone.toml",
                details={"missing": missing},
            )

    def environment_path(self, environment: str, *rest: str) -> str:
        """The path of one of the app's environments (a name or an id), and of what lies below it."""
        return api_paths.below(self.app_path, "environments", api_paths.checked_ref("environment", environment), *rest)


def _project_config(inv: Invocation) -> Any:
    from rhone_cli.config import project

    path = project.find(inv.env.workdir)
    if path is None:
        return None
    return project.load(inv.env.workdir, path)


def target(
    inv: Invocation,
    *,
    workspace: str | None = None,
    project: str | None = None,
    app: str | None = None,
    need: str = "app",
) -> Target:
    """Resolve the workspace (and the project and app when `need` asks for them); rhone.toml is read only when a
    needed value was not given."""
    wanted = {"workspace": (workspace,), "project": (workspace, project), "app": (workspace, project, app)}[need]
    config = _project_config(inv) if any(value is None for value in wanted) else None
    workspace = workspace or (config.project.workspace if config else None) or inv.profile.workspace
    if not workspace:
        raise RhoneError(
            "no workspace given",
            code="input_required",
            exit_code=ExitCode.USAGE,
            hint="to run everything on this machine, start Rhone Local with `rhone local up` (it makes a `local` "
            "profile with its workspace); else pass --workspace NAME, set [project] workspace in rhone.toml, or log "
            "in to a profile with a workspace",
        )
    return Target(
        workspace=workspace,
        project=project or (config.project.name if config else None) or inv.profile.project,
        app=app or (config.app.name if config else None),
    )


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


def items(inv: Invocation, path: str, *, params: dict | None = None) -> list[dict]:
    """Every item of a short paginated list (members, environments, routes), in creation order."""
    return _pages(inv, path, None, params or {})[0]


def newest(
    inv: Invocation, path: str, *, limit: int | None, everything: bool, params: dict | None = None
) -> list[dict]:
    """The newest items of a list that grows (deployments, operations, the audit log): `limit` of them (default
    DEFAULT_LIMIT), or with `everything` all of them, newest first; the server pages, so only what is shown is sent.
    When more exist than are shown, a hint on stderr says how to see them."""
    if everything and limit is not None:
        raise RhoneError("--all and --limit cannot be combined", code="usage_error", exit_code=ExitCode.USAGE)
    wanted = None if everything else (limit or DEFAULT_LIMIT)
    rows, more = _pages(inv, path, wanted, {**(params or {}), "order": "newest"})
    if more:
        inv.out.info(f"showing the {len(rows)} newest; `-L N` shows N, `--all` every one")
    return rows


def _pages(inv: Invocation, path: str, limit: int | None, params: dict) -> tuple[list[dict], bool]:
    """(up to `limit` items following next_cursor, whether more exist)."""
    found: list[dict] = []
    cursor = None
    while True:
        page_size = min(200, limit - len(found)) if limit else 200
        query = {**params, "limit": page_size}
        if cursor:
            query["cursor"] = cursor
        data = inv.client().get(path, params=query).data
        found.extend(data["items"])
        cursor = data.get("next_cursor")
        if not cursor:
            return found, False
        if limit and len(found) >= limit:
            return found, True


def get(inv: Invocation, path: str) -> dict:
    return inv.client().get(path).data


def create(
    inv: Invocation, collection_path: str, body: dict, *, resource_path: str, no_wait: bool, timeout: float | None
) -> dict:
    """Start a create operation; unless `no_wait`, wait for it and return the created resource."""
    op = operations.run(
        inv,
        collection_path,
        body,
        no_wait=no_wait,
        timeout=timeout,
        key_parts=(inv.profile.api_url, repr(sorted(body.items()))),
    )
    if no_wait:
        return op
    return get(inv, resource_path)


def link(inv: Invocation, config: Any, directory: Any) -> dict:
    """Make sure the project and app named in rhone.toml exist (creating them by operation when missing) and
    record their ids in `.rhone/link.json`, so later commands in this directory know exactly what they target."""
    import json

    from rhone_cli.config.profiles import atomic_write

    where = target(inv, workspace=config.project.workspace, project=config.project.name, app=config.app.name)
    created = []
    project_doc, made = _find_or_create(
        inv, where.project_path, api_paths.below(where.workspace_path, "projects"), {"name": config.project.name}
    )
    if made:
        created.append("project")
    policies = {
        name: policy.model_dump(include={"approval_required", "frozen"}) for name, policy in config.environments.items()
    }
    app_doc, made = _find_or_create(
        inv,
        where.app_path,
        api_paths.below(where.project_path, "apps"),
        {"name": config.app.name, "environments": policies},
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


def _find_or_create(inv: Invocation, resource_path: str, collection_path: str, body: dict) -> tuple[dict, bool]:
    """(the resource, whether this call created it). Two first deploys of a new app race to create it: the loser's
    create is refused (`name_taken`, when the request or its operation finds the name already used) and it takes
    the resource the winner created instead of failing."""
    found = _get_or_none(inv, resource_path)
    if found is not None:
        return found, False
    try:
        return create(inv, collection_path, body, resource_path=resource_path, no_wait=False, timeout=None), True
    except RhoneError as error:
        if error.code != "name_taken":
            raise
        lost = error
    found = _get_or_none(inv, resource_path)
    if found is None:  # taken, yet not visible to us: another workspace member's, or it went away again
        raise lost
    return found, False


def _get_or_none(inv: Invocation, path: str) -> dict | None:
    try:
        return get(inv, path)
    except RhoneError as error:
        if error.exit_code == ExitCode.NOT_FOUND:
            return None
        raise
