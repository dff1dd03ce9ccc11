"""Workspaces, members, audit, projects, apps and environments.

Which workspace, project and app a command means comes from, in order: its flags, the nearest rhone.toml (when
there is one), then the active profile. Names and ids are both accepted in API paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

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
        return f"/v1/workspaces/{quote(self.workspace)}"

    @property
    def project_path(self) -> str:
        if not self.project:
            raise RhoneError(
                "no project given",
                code="input_required",
                exit_code=ExitCode.USAGE,
                hint="pass --project NAME, or run inside a directory with a rhone.toml",
            )
        return f"{self.workspace_path}/projects/{quote(self.project)}"

    @property
    def app_path(self) -> str:
        if not self.app:
            raise RhoneError(
                "no app given",
                code="input_required",
                exit_code=ExitCode.USAGE,
                hint="pass --app NAME, or run inside a directory with a rhone.toml",
            )
        return f"{self.project_path}/apps/{quote(self.app)}"


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
            hint="pass --workspace NAME, set [project] workspace in rhone.toml, or log in to a profile "
            "with a workspace",
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


def items(inv: Invocation, path: str, *, limit: int | None = None, params: dict | None = None) -> list[dict]:
    """Every item of a paginated list (or the first `limit`), following next_cursor."""
    found: list[dict] = []
    cursor = None
    while True:
        page_size = min(200, limit - len(found)) if limit else 200
        query = {**(params or {}), "limit": page_size}
        if cursor:
            query["cursor"] = cursor
        data = inv.client().get(path, params=query).data
        found.extend(data["items"])
        cursor = data.get("next_cursor")
        if not cursor or (limit and len(found) >= limit):
            return found


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

    where = target(inv, workspace=config.project.workspace, project=config.project.name, app=config.app.name)
    created = []
    project_doc = _get_or_none(inv, where.project_path)
    if project_doc is None:
        project_doc = create(
            inv,
            f"{where.workspace_path}/projects",
            {"name": config.project.name},
            resource_path=where.project_path,
            no_wait=False,
            timeout=None,
        )
        created.append("project")
    app_doc = _get_or_none(inv, where.app_path)
    if app_doc is None:
        policies = {
            name: policy.model_dump(include={"approval_required", "frozen"})
            for name, policy in config.environments.items()
        }
        app_doc = create(
            inv,
            f"{where.project_path}/apps",
            {"name": config.app.name, "environments": policies},
            resource_path=where.app_path,
            no_wait=False,
            timeout=None,
        )
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
    (state / "link.json").write_text(json.dumps(link_doc, indent=2) + "\n")
    return {**link_doc, "created": created}


def _get_or_none(inv: Invocation, path: str) -> dict | None:
    try:
        return get(inv, path)
    except RhoneError as error:
        if error.exit_code == ExitCode.NOT_FOUND:
            return None
        raise
