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
    origin,
    page,
    readable_app,
    readable_environment,
    refusals_audited,
    route_url,
)
from rhone_local.domain.access import Principal
from rhone_local.domain.errors import not_found
from rhone_local.operations import access as access_changes
from rhone_local.operations import promote as promotions

router = APIRouter()
APP = "/v1/workspaces/{ws}/projects/{prj}/apps/{app}"


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
    params = promotions.route_move_params(store, deployment, environment, approved_by=approved_by)
    payload = {"kind": kind, **params, "expect_epoch": expect_epoch}

    def perform(c: Any) -> tuple[int, dict]:
        op = promotions.start_route_move(
            store,
            c,
            origin(request, principal),
            kind=kind,
            workspace_id=deployment["workspace_id"],
            environment=environment,
            params=params,
            expect_epoch=expect_epoch,
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
        approved_by = principal.id if body.approve else None
        unsafe = promotions.check_promotion(
            store,
            get_ports(request).deployments,
            deployment,
            environment,
            expect_digest=body.expect_digest,
            approved_by=approved_by,
            allow_unsafe_db=body.allow_unsafe_db,
        )
    note = f" (allow-unsafe-db past {', '.join(unsafe)})" if unsafe else ""
    return _start(
        request,
        principal,
        deployment,
        environment,
        kind="promote",
        action="deployment.promote",
        expect_epoch=body.expect_epoch,
        approved_by=approved_by,
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
    target = promotions.rollback_target(store, environment, body.to_deployment)
    if body.approve and role not in ("owner", "admin"):
        key = f"{environment['app']['name']}--{environment['name']}"
        raise deny(
            request,
            principal,
            workspace["id"],
            "route.rollback",
            key,
            "insufficient_role",
            "only owners and admins can approve a rollback",
        )
    unsafe = promotions.check_rollback(
        store,
        get_ports(request).deployments,
        environment,
        target,
        approved_by=principal.id if body.approve else None,
        allow_unsafe_db=body.allow_unsafe_db,
    )
    return target, unsafe


def _set_frozen(
    request: Request, principal: Principal, ws: str, prj: str, app: str, env: str, frozen: bool
) -> JSONResponse:
    action = "environment.freeze" if frozen else "environment.unfreeze"
    workspace, environment = mutable_environment(request, principal, ws, prj, app, env, action)

    def perform(c: Any) -> tuple[int, dict]:
        row = access_changes.control_environment(get_store(request), c, environment["id"], frozen=frozen)
        return 200, env_view(row)

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
        row = access_changes.control_environment(
            get_store(request), c, environment["id"], approval_required=body.approval_required
        )
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
