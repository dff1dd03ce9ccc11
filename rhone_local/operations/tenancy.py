"""Tenancy (kinds `project.create`, `app.create`, `environment.create`): queued → validating → applying →
succeeded, or failed. Validation reads; applying inserts the resource in the transaction that records success, and
checks the name again there (two creates of one name may both have passed validating)."""

from __future__ import annotations

from typing import Any

from rhone_local.domain.errors import DomainError, StageFailed, conflict
from rhone_local.domain.ids import new_id
from rhone_local.operations.kinds import Advance, Kind, onward
from rhone_local.operations.unit_of_work import Origin, start_operation
from rhone_local.store import NameTaken, Store, Tx

DEFAULT_ENVIRONMENTS = ("preview", "production")
KINDS = ("project.create", "app.create", "environment.create")


def start_create(
    store: Store, c: Tx, origin: Origin, *, workspace_id: str, kind: str, params: dict[str, Any], target: str
) -> dict[str, Any]:
    """Record the create operation. The name check runs after the idempotency check (inside the unit of work), so a
    replay of a request whose resource now exists still gets its original answer rather than a conflict."""
    target_kind = kind.removesuffix(".create")
    if _name_taken(store, workspace_id, kind, params):
        raise conflict("name_taken", f"{target_kind} {params['name']!r} already exists", target=target)
    return start_operation(
        store,
        c,
        origin,
        workspace_id=workspace_id,
        kind=kind,
        target_kind=target_kind,
        target_id=new_id(target_kind),
        params=params,
    )


def _name_taken(store: Store, workspace_id: str, kind: str, params: dict[str, Any]) -> bool:
    name = params["name"]
    if kind == "project.create":
        return store.project(workspace_id, name) is not None
    if kind == "app.create":
        return _app_name_taken(store, workspace_id, params["project_id"], name)
    return store.environment(params["app_id"], name) is not None


def _app_name_taken(store: Store, workspace_id: str, project_id: str, name: str) -> bool:
    """True when the project has the app already; refused outright when another project of the workspace does: the
    app's name is its hostname (`<app>--<env>`), which two apps cannot share."""
    if store.app(project_id, name) is not None:
        return True
    other = store.app_named_elsewhere(workspace_id, name, exclude="")
    if other is not None:
        raise conflict(
            "app_name_taken",
            f"project {other['project']} already has an app named {name}; app names are unique in a workspace "
            f"because they name its routes ({name}--production)",
            hint=f"choose another app name (rhone.toml [app] name), or deploy to {other['project']}/{name}",
            project=other["project"],
        )
    return False


def validate(store: Store, op: dict[str, Any]) -> dict[str, Any]:
    params = op["params"]
    if op["kind"] == "project.create":
        taken = store.project_name_taken(op["workspace_id"], params["name"], exclude=op["target_id"])
        parent_ok = True
    elif op["kind"] == "app.create":
        # Unique in the workspace, not only the project: the name is the app's hostname.
        taken = store.app_named_elsewhere(op["workspace_id"], params["name"], exclude=op["target_id"]) is not None
        parent_ok = store.project_exists(params["project_id"])
    else:
        taken = store.environment_name_taken(params["app_id"], params["name"], exclude=op["target_id"])
        parent_ok = store.app_by_id(params["app_id"]) is not None
    if not parent_ok:
        raise DomainError("parent_missing", "the parent resource no longer exists", 409)
    if taken:
        raise DomainError("name_taken", f"the name {params['name']!r} is already taken", 409)
    return {"name_available": True, "parent_exists": True}


def apply(store: Store, op: dict[str, Any], c: Tx) -> dict[str, Any]:
    """Insert the resource, in the transaction that records the operation's success."""
    params, target = op["params"], op["target_id"]
    if op["kind"] == "project.create":
        store.insert_project(
            c, project_id=target, workspace_id=op["workspace_id"], name=params["name"], operation_id=op["id"]
        )
        return {"project_id": target}
    if op["kind"] == "app.create":
        # Checked again in this write transaction: two creates of one name in two projects both passed
        # validating, and only one may insert (there is no unique index: databases from before the rule may
        # hold such pairs already).
        if store.app_named_elsewhere(op["workspace_id"], params["name"], exclude=target, tx=c):
            raise DomainError("name_taken", f"the app name {params['name']!r} is already taken in the workspace", 409)
        store.insert_app(
            c,
            app_id=target,
            workspace_id=op["workspace_id"],
            project_id=params["project_id"],
            name=params["name"],
            operation_id=op["id"],
        )
        environment_ids = {}
        policies = params.get("environments") or {}
        for name in [*DEFAULT_ENVIRONMENTS, *sorted(set(policies) - set(DEFAULT_ENVIRONMENTS))]:
            policy = policies.get(name, {})
            environment_ids[name] = new_id("environment")
            store.insert_environment(
                c,
                environment_id=environment_ids[name],
                workspace_id=op["workspace_id"],
                app_id=target,
                name=name,
                approval_required=bool(policy.get("approval_required")),
                frozen=bool(policy.get("frozen")),
                operation_id=op["id"],
            )
        identity = store.create_runtime_identity(c, op["workspace_id"], target)
        return {"app_id": target, "environment_ids": environment_ids, "runtime_identity_id": identity["id"]}
    store.insert_environment(
        c,
        environment_id=target,
        workspace_id=op["workspace_id"],
        app_id=params["app_id"],
        name=params["name"],
        approval_required=bool(params.get("approval_required")),
        frozen=bool(params.get("frozen")),
        operation_id=op["id"],
    )
    return {"environment_id": target}


def _refused(error: DomainError) -> StageFailed:
    return StageFailed(error.code, error.message)


def kinds(store: Store) -> dict[str, Kind]:
    def validating(op: dict[str, Any]) -> Advance:
        try:
            return Advance("applying", validate(store, op))
        except DomainError as error:
            raise _refused(error) from None

    def applying(op: dict[str, Any]) -> Advance:
        def effect(c: Tx) -> dict[str, Any]:
            try:
                return apply(store, op, c)
            except DomainError as error:
                raise _refused(error) from None
            except NameTaken:
                # Two operations raced for one name; validation passed for both, the unique index decided.
                raise StageFailed("name_taken", f"the name {op['params'].get('name')!r} is already taken") from None

        return Advance("succeeded", effect=effect)

    return {
        kind: Kind(kind, {"queued": onward(kind), "validating": validating, "applying": applying}) for kind in KINDS
    }
