"""Promotion, rollback, environment freeze, and route ownership reads."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from rhone_local.api import models as m
from rhone_local.api.deploy_routes import _deployment
from rhone_local.api.routes import (
    ERRORS,
    READ_ERRORS,
    Caller,
    Limit,
    Order,
    SeqCursor,
    authorize,
    deny,
    env_view,
    get_ports,
    get_store,
    mutable_environment,
    mutate,
    op_view,
    page,
    readable_app,
    readable_environment,
    refusals_audited,
    route_url,
)
from rhone_local.domain.access import Principal
from rhone_local.domain.errors import DomainError, StageFailed, conflict, not_found
from rhone_local.domain.urls import route_key, route_key_taken
from rhone_local.operations.promote import check_policy

router = APIRouter()
APP = "/v1/workspaces/{ws}/projects/{prj}/apps/{app}"
# Refusals at request time use the same codes as the policy_check stage; gates that need a person are 409s the CLI
# maps to exit 6, lost races and digest mismatches to exit 5.
REFUSAL_STATUS = {"not_found": 404}


def _refuse(failure: StageFailed) -> DomainError:
    return DomainError(failure.code, failure.message, REFUSAL_STATUS.get(failure.code, 409), failure.evidence)


def _unsafe_db_move(request: Request, environment: dict, target: dict, *, allow: bool) -> list[str]:
    """The migrations applied in the environment that `target` lacks; refused unless `allow` (--allow-unsafe-db)."""
    unsafe = get_ports(request).deployments.unsafe_db_move(environment["id"], target)
    if unsafe and not allow:
        raise conflict(
            "rollback_unsafe_db",
            f"{target['id']} lacks {len(unsafe)} migration(s) already applied in {environment['name']} "
            f"({', '.join(unsafe[:5])}); roll forward instead, or pass --allow-unsafe-db",
            hint="deploy a build that carries them, or accept running older code on a newer schema with "
            "--allow-unsafe-db (audited)",
            migrations=unsafe,
        )
    return unsafe


def owner_view(request: Request, row: dict) -> dict:
    environment = get_store(request).environment_by_id(row["environment_id"])
    return {
        **{
            k: row[k]
            for k in (
                "route_key",
                "app_id",
                "environment_id",
                "deployment_id",
                "artifact_digest",
                "epoch",
                "operation_id",
                "updated_at",
            )
        },
        "environment": environment["name"],
        "url": route_url(request, row["route_key"]),
    }


def _start(
    request: Request,
    principal: Principal,
    deployment: dict,
    environment: dict,
    *,
    kind: str,
    action: str,
    expect_epoch: int | None,
    approved_by: str | None,
    detail_target: str,
) -> JSONResponse:
    store = get_store(request)
    app = store.app_by_id(deployment["app_id"])
    key = route_key(app["name"], environment["name"])
    holder = store.route_key_holder(key, app["id"])
    if holder:
        raise conflict(
            "route_key_taken",
            route_key_taken(holder, key, app["workspace_id"]),
            hint="deploy this code under another app name (rhone.toml [app] name)",
        )
    params = {
        "deployment_id": deployment["id"],
        "environment_id": environment["id"],
        "environment": environment["name"],
        "expect_digest": deployment["artifact_digest"],
        "approved_by": approved_by,
        "route_key": key,
    }
    payload = {"kind": kind, **params, "expect_epoch": expect_epoch}

    def perform(c: Any) -> tuple[int, dict]:
        scaling = store.live_operations(c, environment["id"], ("scale", "config.update"), exclude="")
        if scaling:
            raise conflict(
                "environment_busy",
                f"{scaling[0]['kind']} {scaling[0]['id']} is changing {key}'s allocations; wait for it (`rhone op wait "
                f"{scaling[0]['id']}`) and promote again",
                operation_id=scaling[0]["id"],
            )
        # Read the epoch inside the write transaction: the default expectation is "the route as it is now".
        current = store.route_owner(app["id"], environment["id"])
        epoch = current["epoch"] if current else 0
        expected = epoch if expect_epoch is None else expect_epoch
        if expected != epoch:
            raise conflict(
                "route_epoch_conflict",
                f"route {key} is at epoch {epoch}, not {expected}",
                current_epoch=epoch,
                current_owner=current["deployment_id"] if current else None,
            )
        op = store.create_operation(
            c,
            workspace_id=deployment["workspace_id"],
            kind=kind,
            target_kind="route",
            target_id=environment["id"],
            params={**params, "expect_epoch": expected},
            principal=principal,
            request_id=request.state.request_id,
            idempotency_key=request.headers.get("idempotency-key") or None,
        )
        return 202, op_view(op)

    return mutate(
        request, principal, deployment["workspace_id"], action, detail_target, payload, perform, notify_op=True
    )


@router.post(
    "/v1/deployments/{deployment_id}/promote",
    status_code=202,
    response_model=m.Operation,
    responses=ERRORS,
    tags=["routes"],
)
def promote(request: Request, principal: Caller, deployment_id: str, body: m.PromoteRequest) -> JSONResponse:
    store = get_store(request)
    deployment, role = _deployment(request, principal, deployment_id, "deployment.promote")
    if body.approve and role not in ("owner", "admin"):
        raise deny(
            request,
            principal,
            deployment["workspace_id"],
            "deployment.promote",
            deployment_id,
            "insufficient_role",
            "only owners and admins can approve a promotion",
        )
    with refusals_audited(request, principal, deployment["workspace_id"], "deployment.promote", deployment_id):
        environment = store.environment(deployment["app_id"], body.environment)
        if environment is None:
            raise not_found("environment", body.environment)
        params = {
            "deployment_id": deployment_id,
            "environment_id": environment["id"],
            "expect_digest": body.expect_digest or deployment["artifact_digest"],
            "approved_by": principal.id if body.approve else None,
        }
        try:
            check_policy(store, get_ports(request).deployments, params)
        except StageFailed as failure:
            raise _refuse(failure) from None
        # Promoting an older build is a rollback of the database schema too: the same guard.
        unsafe = _unsafe_db_move(request, environment, deployment, allow=body.allow_unsafe_db)
    note = f" (allow-unsafe-db past {', '.join(unsafe)})" if unsafe else ""
    return _start(
        request,
        principal,
        deployment,
        environment,
        kind="promote",
        action="deployment.promote",
        expect_epoch=body.expect_epoch,
        approved_by=params["approved_by"],
        detail_target=f"{deployment_id} -> {environment['name']}{note}",
    )


@router.post(
    APP + "/environments/{env}/rollback", status_code=202, response_model=m.Operation, responses=ERRORS, tags=["routes"]
)
def rollback(
    request: Request, principal: Caller, ws: str, prj: str, app: str, env: str, body: m.RollbackRequest
) -> JSONResponse:
    # The mutation is authorized first, so a non-member's refusal is audited like every other denied mutation.
    workspace, role = authorize(request, principal, ws, "route.rollback", f"{app}--{env}")
    with refusals_audited(request, principal, workspace["id"], "route.rollback", f"{app}--{env}"):
        environment = readable_environment(request, principal, ws, prj, app, env, "app.read")
        target, unsafe = _rollback_target(request, principal, workspace, role, environment, body)
    note = f" (allow-unsafe-db past {', '.join(unsafe)})" if unsafe else ""
    return _start(
        request,
        principal,
        target,
        environment,
        kind="rollback",
        action="route.rollback",
        expect_epoch=body.expect_epoch,
        approved_by=principal.id if body.approve else None,
        detail_target=f"{app}--{env} -> {target['id']}{note}",
    )


def _rollback_target(
    request: Request, principal: Principal, workspace: dict, role: str | None, environment: dict, body: Any
) -> tuple[dict, list[str]]:
    """The deployment a rollback may return to, and the applied migrations it lacks (allowed by --allow-unsafe-db);
    raises the refusal otherwise."""
    store = get_store(request)
    found = environment["app"]
    key = f"{found['name']}--{environment['name']}"
    current = store.route_owner(found["id"], environment["id"])
    if current is None:
        raise conflict("no_route_owner", f"nothing serves {key}; there is nothing to roll back")
    target_id = body.to_deployment
    if target_id is None:
        target_id = store.previous_owner(current["route_key"], current["epoch"])
        if target_id is None:
            raise conflict("no_previous_owner", f"{key} has had only one owner; name one with to_deployment")
    target = store.deployment(target_id)
    if target is None or target["app_id"] != found["id"]:
        raise not_found("deployment", target_id)
    if target_id == current["deployment_id"]:
        raise conflict("already_owner", f"{target_id} already serves {key}")
    # A rollback returns to an artifact this environment already served; anything else is a promotion, with its own
    # approval, and must not be reachable by naming it here.
    earlier = [d for d in store.route_owner_history(environment["id"]) if d != current["deployment_id"]]
    if target_id not in earlier:
        raise conflict(
            "rollback_target_not_previous_owner",
            f"{target_id} never served {key}; a rollback returns only to an earlier owner of the route "
            f"({', '.join(earlier) if earlier else 'it has had no other'})",
            hint=f"list the earlier owners with `rhone route history {environment['name']}`, or promote "
            f"{target_id} instead",
            valid_targets=earlier,
        )
    if body.approve and role not in ("owner", "admin"):
        raise deny(
            request,
            principal,
            workspace["id"],
            "route.rollback",
            key,
            "insufficient_role",
            "only owners and admins can approve a rollback",
        )
    unsafe = _unsafe_db_move(request, environment, target, allow=body.allow_unsafe_db)
    # The same policy as a promotion: frozen refuses it, and an environment that requires approval needs an
    # owner's or admin's --approve on the rollback itself.
    params = {
        "deployment_id": target_id,
        "environment_id": environment["id"],
        "expect_digest": target["artifact_digest"],
        "approved_by": principal.id if body.approve else None,
    }
    try:
        check_policy(store, get_ports(request).deployments, params, kind="rollback")
    except StageFailed as failure:
        raise _refuse(failure) from None
    return target, unsafe


def _set_frozen(
    request: Request, principal: Principal, ws: str, prj: str, app: str, env: str, frozen: bool
) -> JSONResponse:
    action = "environment.freeze" if frozen else "environment.unfreeze"
    workspace, environment = mutable_environment(request, principal, ws, prj, app, env, action)

    def perform(c: Any) -> tuple[int, dict]:
        return 200, env_view(get_store(request).update_environment(c, environment["id"], frozen=frozen))

    return mutate(request, principal, workspace["id"], action, f"{app}/{env}", {"frozen": frozen}, perform)


@router.post(APP + "/environments/{env}/freeze", response_model=m.Environment, responses=ERRORS, tags=["environments"])
def freeze(request: Request, principal: Caller, ws: str, prj: str, app: str, env: str) -> JSONResponse:
    return _set_frozen(request, principal, ws, prj, app, env, True)


@router.post(
    APP + "/environments/{env}/unfreeze", response_model=m.Environment, responses=ERRORS, tags=["environments"]
)
def unfreeze(request: Request, principal: Caller, ws: str, prj: str, app: str, env: str) -> JSONResponse:
    return _set_frozen(request, principal, ws, prj, app, env, False)


@router.post(APP + "/environments/{env}/policy", response_model=m.Environment, responses=ERRORS, tags=["environments"])
def set_policy(
    request: Request, principal: Caller, ws: str, prj: str, app: str, env: str, body: m.EnvironmentPolicyUpdate
) -> JSONResponse:
    """Change an environment's approval policy (owners and admins; audited with the old and new value)."""
    workspace, environment = mutable_environment(request, principal, ws, prj, app, env, "environment.policy")
    before = bool(environment["approval_required"])
    target = f"{app}/{env} approval_required {str(before).lower()} -> {str(body.approval_required).lower()}"

    def perform(c: Any) -> tuple[int, dict]:
        row = get_store(request).update_environment(c, environment["id"], approval_required=body.approval_required)
        return 200, env_view(row)

    return mutate(request, principal, workspace["id"], "environment.policy", target, body.model_dump(), perform)


@router.get(APP + "/routes", response_model=m.Page[m.RouteOwner], responses=READ_ERRORS, tags=["routes"])
def list_routes(request: Request, principal: Caller, ws: str, prj: str, app: str) -> dict:
    found = readable_app(request, principal, ws, prj, app, "route.read")
    rows = get_store(request).route_owners_of_app(found["id"])
    return {"items": [owner_view(request, r) for r in rows], "next_cursor": None}


@router.get(APP + "/routes/{env}", response_model=m.RouteOwner, responses=READ_ERRORS, tags=["routes"])
def show_route(request: Request, principal: Caller, ws: str, prj: str, app: str, env: str) -> dict:
    store = get_store(request)
    found = readable_app(request, principal, ws, prj, app, "route.read")
    environment = store.environment(found["id"], env)
    owner = store.route_owner(found["id"], environment["id"]) if environment else None
    if owner is None:
        raise not_found("route", f"{found['name']}--{env}")
    return owner_view(request, owner)


@router.get(
    APP + "/routes/{env}/history", response_model=m.Page[m.RouteEventView], responses=READ_ERRORS, tags=["routes"]
)
def route_history(
    request: Request,
    principal: Caller,
    ws: str,
    prj: str,
    app: str,
    env: str,
    limit: Limit = 50,
    cursor: SeqCursor = None,
    order: Order = "oldest",
) -> dict:
    store = get_store(request)
    environment = readable_environment(request, principal, ws, prj, app, env, "route.read")
    rows = store.route_history(
        environment["app"]["id"],
        environment["id"],
        limit=limit,
        after=int(cursor) if cursor else None,
        newest_first=order == "newest",
    )
    return page(rows, limit, lambda r: {k: r[k] for k in m.RouteEventView.model_fields}, key="seq")
