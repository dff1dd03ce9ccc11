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
    get_store,
    mutable_environment,
    mutate,
    op_view,
    page,
    readable_app,
    readable_environment,
    route_url,
)
from rhone_local.domain.access import Principal
from rhone_local.domain.errors import DomainError, conflict, not_found
from rhone_local.pipeline import StageFailed
from rhone_local.promotion import check_policy, rollback_db_check, route_key

router = APIRouter()
APP = "/v1/workspaces/{ws}/projects/{prj}/apps/{app}"
# Refusals at request time use the same codes as the policy_check stage; gates that need a person are 409s the CLI
# maps to exit 6, lost races and digest mismatches to exit 5.
REFUSAL_STATUS = {"not_found": 404}


def _refuse(failure: StageFailed) -> DomainError:
    return DomainError(failure.code, failure.message, REFUSAL_STATUS.get(failure.code, 409), failure.evidence)


def owner_view(request: Request, row: dict) -> dict:
    environment = get_store(request).one("SELECT name FROM environments WHERE id = ?", row["environment_id"])
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
    taken = store.one("SELECT app_id FROM route_owners WHERE route_key = ? AND app_id != ?", key, app["id"])
    if taken:
        raise conflict(
            "route_key_taken", f"another app already serves {key}; app names must be unique to share an edge"
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
        scaling = store.live_operations(c, environment["id"], ("scale",), exclude="")
        if scaling:
            raise conflict(
                "environment_busy",
                f"scale {scaling[0]['id']} is changing {key}'s allocations; wait for it (`rhone op wait "
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
        check_policy(store, request.app.state.pipeline, params)
    except StageFailed as failure:
        raise _refuse(failure) from None
    return _start(
        request,
        principal,
        deployment,
        environment,
        kind="promote",
        action="deployment.promote",
        expect_epoch=body.expect_epoch,
        approved_by=params["approved_by"],
        detail_target=f"{deployment_id} -> {environment['name']}",
    )


@router.post(
    APP + "/environments/{env}/rollback", status_code=202, response_model=m.Operation, responses=ERRORS, tags=["routes"]
)
def rollback(
    request: Request, principal: Caller, ws: str, prj: str, app: str, env: str, body: m.RollbackRequest
) -> JSONResponse:
    store = get_store(request)
    # The mutation is authorized first, so a non-member's refusal is audited like every other denied mutation.
    authorize(request, principal, ws, "route.rollback", f"{app}--{env}")
    environment = readable_environment(request, principal, ws, prj, app, env, "app.read")
    found = environment["app"]
    current = store.route_owner(found["id"], environment["id"])
    if current is None:
        raise conflict("no_route_owner", f"nothing serves {app}--{env}; there is nothing to roll back")
    target_id = body.to_deployment
    if target_id is None:
        event = store.one(
            "SELECT previous_deployment_id FROM route_events WHERE route_key = ? AND epoch = ?",
            current["route_key"],
            current["epoch"],
        )
        target_id = event["previous_deployment_id"] if event else None
        if target_id is None:
            raise conflict("no_previous_owner", f"{app}--{env} has had only one owner; name one with to_deployment")
    target = store.deployment(target_id)
    if target is None or target["app_id"] != found["id"]:
        raise not_found("deployment", target_id)
    if target_id == current["deployment_id"]:
        raise conflict("already_owner", f"{target_id} already serves {app}--{env}")
    unsafe = rollback_db_check(request.app.state.blobs, store.deployment(current["deployment_id"]), target)
    if unsafe and not body.allow_unsafe_db:
        raise conflict(
            "rollback_unsafe_db",
            f"{target_id} predates {len(unsafe)} migration(s) the current artifact introduced "
            f"({', '.join(unsafe[:5])}); roll forward instead, or pass --allow-unsafe-db",
            migrations=unsafe,
        )
    params = {
        "deployment_id": target_id,
        "environment_id": environment["id"],
        "expect_digest": target["artifact_digest"],
        "approved_by": principal.id,
    }
    try:
        check_policy(store, request.app.state.pipeline, params)
    except StageFailed as failure:
        raise _refuse(failure) from None
    note = f" (allow-unsafe-db past {', '.join(unsafe)})" if unsafe else ""
    return _start(
        request,
        principal,
        target,
        environment,
        kind="rollback",
        action="route.rollback",
        expect_epoch=body.expect_epoch,
        approved_by=principal.id,
        detail_target=f"{app}--{env} -> {target_id}{note}",
    )


def _set_frozen(
    request: Request, principal: Principal, ws: str, prj: str, app: str, env: str, frozen: bool
) -> JSONResponse:
    action = "environment.freeze" if frozen else "environment.unfreeze"
    workspace, environment = mutable_environment(request, principal, ws, prj, app, env, action)

    def perform(c: Any) -> tuple[int, dict]:
        c.execute("UPDATE environments SET frozen = ? WHERE id = ?", (int(frozen), environment["id"]))
        row = c.execute("SELECT * FROM environments WHERE id = ?", (environment["id"],)).fetchone()
        return 200, env_view(dict(row))

    return mutate(request, principal, workspace["id"], action, f"{app}/{env}", {"frozen": frozen}, perform)


@router.post(APP + "/environments/{env}/freeze", response_model=m.Environment, responses=ERRORS, tags=["environments"])
def freeze(request: Request, principal: Caller, ws: str, prj: str, app: str, env: str) -> JSONResponse:
    return _set_frozen(request, principal, ws, prj, app, env, True)


@router.post(
    APP + "/environments/{env}/unfreeze", response_model=m.Environment, responses=ERRORS, tags=["environments"]
)
def unfreeze(request: Request, principal: Caller, ws: str, prj: str, app: str, env: str) -> JSONResponse:
    return _set_frozen(request, principal, ws, prj, app, env, False)


@router.get(APP + "/routes", response_model=m.Page[m.RouteOwner], responses=READ_ERRORS, tags=["routes"])
def list_routes(request: Request, principal: Caller, ws: str, prj: str, app: str) -> dict:
    found = readable_app(request, principal, ws, prj, app, "route.read")
    rows = get_store(request).all("SELECT * FROM route_owners WHERE app_id = ? ORDER BY route_key", found["id"])
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
