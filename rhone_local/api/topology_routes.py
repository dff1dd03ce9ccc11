"""Provider bindings, runtime services, scale, regions and allocations.

Every change here is an operation (binding, unbinding, services, scale, region enablement) whose worker stage does
the real work; the request only checks what can be refused at once and records the operation. Secret values arrive
in a binding request, go straight into `binding_secrets`, and leave only as allocation environment variables: no
response, operation parameter, audit record or log line holds one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from rhone_local.api import models as m
from rhone_local.api.routes import (
    ERRORS,
    READ_ERRORS,
    Caller,
    Cursor,
    Limit,
    Order,
    get_ports,
    get_store,
    mutable_environment,
    mutate,
    op_view,
    origin,
    page,
    readable_app,
    readable_environment,
)
from rhone_local.domain import topology as rules
from rhone_local.domain.access import Principal
from rhone_local.domain.errors import not_found
from rhone_local.operations import bindings, services
from rhone_local.operations import region as regions
from rhone_local.operations import scale as scaling
from rhone_local.operations.unit_of_work import Origin
from rhone_local.ports import EngineStatus
from rhone_local.store import Store

router = APIRouter()
APP = "/v1/workspaces/{ws}/projects/{prj}/apps/{app}"
ENV = APP + "/environments/{env}"


# -- views ----------------------------------------------------------------------------------------------------------
def region_view(store: Store, row: dict) -> dict:
    cells = [c for c in store.cells() if c["region_id"] == row["id"]]
    return {
        "id": row["id"],
        "name": row["name"],
        "jurisdiction": row["jurisdiction"],
        "primary": bool(row["is_primary"]),
        "cells": cells,
        "created_at": row["created_at"],
    }


def binding_view(store: Store, row: dict, environment: str) -> dict:
    return {
        **{k: row[k] for k in ("id", "environment_id", "name", "kind", "resource", "region", "state", "operation_id")},
        "environment": environment,
        "mutable": bool(row["mutable"]),
        "shared_read_only": bool(row["shared_read_only"]),
        "secrets": store.secret_names(row["id"]),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def service_view(store: Store, row: dict, engines: EngineStatus | None = None, statuses: dict | None = None) -> dict:
    """A runtime service binding; for one an engine serves, whether it is up and which allocations are connected
    (`statuses` caches each lane's engine status for one listing)."""
    # The endpoint of an external service may name a host; it is not a secret, but allocations are its only reader.
    view = {
        k: row[k] for k in ("id", "service", "region", "region_id", "provider", "state", "operation_id", "created_at")
    }
    if engines is None or row["provider"] not in rules.ENGINE_PROVIDERS:
        return view
    lane = (row["environment_id"], row["region_id"], row["provider"])
    status = (statuses if statuses is not None else {}).setdefault(lane, None) or engines.status(*lane)
    if statuses is not None:
        statuses[lane] = status
    view.update(engine_up=status["up"], engine_restarts=status["restarts"], engine_error=status["error"])
    if status["up"]:
        live = store.live_allocation_ids(row["environment_id"], row["region_id"])
        view["allocations"] = [{"allocation_id": a, "connections": status["connections"].get(a, 0)} for a in live]
    return view


def _region(store: Store, ref: str | None) -> dict:
    if ref is None:
        return store.primary_region()
    region = store.region(ref)
    if region is None:
        raise not_found("region", ref)
    return region


def _started(
    request: Request,
    principal: Principal,
    workspace_id: str,
    *,
    action: str,
    target: str,
    payload: dict[str, Any],
    start: Callable[[Any, Origin], dict],
) -> JSONResponse:
    """Run `start(c, origin)` — the kind's checks and its operation, in the unit of work's transaction (a refusal
    rolls it all back) — and answer 202 with the operation."""

    def perform(c: Any) -> tuple[int, dict]:
        return 202, op_view(start(c, origin(request, principal)))

    return mutate(request, principal, workspace_id, action, target, payload, perform, notify_op=True)


# -- regions --------------------------------------------------------------------------------------------------------
@router.get("/v1/regions", response_model=m.Page[m.Region], responses={401: ERRORS[401]}, tags=["topology"])
def list_regions(request: Request, principal: Caller) -> dict:
    store = get_store(request)
    return {"items": [region_view(store, r) for r in store.regions()], "next_cursor": None}


@router.get("/v1/regions/{region}", response_model=m.Region, responses=READ_ERRORS, tags=["topology"])
def show_region(request: Request, principal: Caller, region: str) -> dict:
    store = get_store(request)
    return region_view(store, _region(store, region))


@router.get(ENV + "/regions", response_model=m.Page[m.EnvironmentRegion], responses=READ_ERRORS, tags=["topology"])
def environment_regions(request: Request, principal: Caller, ws: str, prj: str, app: str, env: str) -> dict:
    store = get_store(request)
    environment = readable_environment(request, principal, ws, prj, app, env, "environment.read")
    states = store.environment_region_states(environment["id"])
    items = []
    for region in store.regions():
        record = states.get(region["id"]) or {}
        state = "eligible" if region["is_primary"] else record.get("state", "not_enabled")
        items.append(
            {
                "region": region["name"],
                "region_id": region["id"],
                "jurisdiction": region["jurisdiction"],
                "primary": bool(region["is_primary"]),
                "state": state,
                "reason": record.get("reason"),
                "operation_id": record.get("operation_id"),
            }
        )
    return {"items": items, "next_cursor": None}


@router.post(
    ENV + "/regions/{region}/enable", status_code=202, response_model=m.Operation, responses=ERRORS, tags=["topology"]
)
def enable_region(
    request: Request, principal: Caller, ws: str, prj: str, app: str, env: str, region: str
) -> JSONResponse:
    store = get_store(request)
    workspace, environment = mutable_environment(request, principal, ws, prj, app, env, "region.enable")
    target = _region(store, region)
    regions.check_enable(target)
    return _started(
        request,
        principal,
        workspace["id"],
        action="region.enable",
        target=f"{app}--{env} in {target['name']}",
        payload={"region": target["id"]},
        start=lambda c, origin: regions.start_enable(
            store, c, origin, workspace_id=workspace["id"], environment=environment, region=target
        ),
    )


# -- provider bindings ----------------------------------------------------------------------------------------------
@router.get(ENV + "/bindings", response_model=m.Page[m.ProviderBinding], responses=READ_ERRORS, tags=["bindings"])
def list_bindings(request: Request, principal: Caller, ws: str, prj: str, app: str, env: str) -> dict:
    store = get_store(request)
    environment = readable_environment(request, principal, ws, prj, app, env, "environment.read")
    rows = store.provider_bindings(environment["id"])
    return {"items": [binding_view(store, r, environment["name"]) for r in rows], "next_cursor": None}


@router.post(ENV + "/bindings", status_code=202, response_model=m.Operation, responses=ERRORS, tags=["bindings"])
def create_binding(
    request: Request, principal: Caller, ws: str, prj: str, app: str, env: str, body: m.BindingCreate
) -> JSONResponse:
    store = get_store(request)
    workspace, environment = mutable_environment(request, principal, ws, prj, app, env, "binding.create")
    region = _region(store, body.region)
    plan = bindings.check_create(store, get_ports(request).databases, environment, body)
    return _started(
        request,
        principal,
        workspace["id"],
        action="binding.create",
        target=f"{app}/{env}/{body.name}",
        # The idempotency fingerprint covers the request; secret values enter it only through a digest.
        payload={**body.model_dump(exclude={"secrets"}), "secrets": _digests(body.secrets)},
        start=lambda c, origin: bindings.start_create(
            store, c, origin, workspace_id=workspace["id"], environment=environment, region=region, body=body, plan=plan
        ),
    )


def _digests(secrets: dict[str, str]) -> dict[str, str]:
    import hashlib

    return {name: hashlib.sha256(value.encode()).hexdigest() for name, value in sorted(secrets.items())}


@router.delete(
    ENV + "/bindings/{name}", status_code=202, response_model=m.Operation, responses=ERRORS, tags=["bindings"]
)
def remove_binding(
    request: Request,
    principal: Caller,
    ws: str,
    prj: str,
    app: str,
    env: str,
    name: str,
    region: str | None = Query(None, max_length=40, description="Default: the primary region."),
    delete_data: bool = Query(False, description="Also delete the database Rhone Local provisioned for it."),
) -> JSONResponse:
    store = get_store(request)
    workspace, environment = mutable_environment(request, principal, ws, prj, app, env, "binding.remove")
    target_region = _region(store, region)
    binding = bindings.removable_binding(store, environment, target_region, name, env, delete_data=delete_data)
    return _started(
        request,
        principal,
        workspace["id"],
        action="binding.remove",
        target=f"{app}/{env}/{name}",
        payload={"binding": binding["id"], "delete_data": delete_data},
        start=lambda c, origin: bindings.start_remove(
            store,
            c,
            origin,
            workspace_id=workspace["id"],
            environment=environment,
            binding=binding,
            env=env,
            delete_data=delete_data,
        ),
    )


# -- runtime services -----------------------------------------------------------------------------------------------
@router.get(ENV + "/services", response_model=m.EnvironmentServices, responses=READ_ERRORS, tags=["bindings"])
def list_services(request: Request, principal: Caller, ws: str, prj: str, app: str, env: str) -> dict:
    store = get_store(request)
    environment = readable_environment(request, principal, ws, prj, app, env, "environment.read")
    owner = store.route_owner(environment["app"]["id"], environment["id"])
    required = rules.scale_requirements(store.deployment(owner["deployment_id"])["config"]) if owner else []
    bound = store.bound_services(environment["id"], store.primary_region()["id"])
    engines, statuses = get_ports(request).engines, {}
    return {
        "environment": environment["name"],
        "items": [service_view(store, r, engines, statuses) for r in store.service_bindings(environment["id"])],
        "required": [r.to_dict() for r in required],
        "missing": [r.to_dict() for r in rules.missing_services(required, bound)],
    }


@router.post(ENV + "/services", status_code=202, response_model=m.Operation, responses=ERRORS, tags=["bindings"])
def update_services(
    request: Request, principal: Caller, ws: str, prj: str, app: str, env: str, body: m.ServicesUpdate
) -> JSONResponse:
    store = get_store(request)
    workspace, environment = mutable_environment(request, principal, ws, prj, app, env, "services.update")
    region = _region(store, body.region)
    services.check_update(store, environment, env, bind=body.bind, unbind=body.unbind, provider=body.provider)
    params = {
        "environment_id": environment["id"],
        "region_id": region["id"],
        "region": region["name"],
        "bind": sorted(set(body.bind)),
        "unbind": sorted(set(body.unbind)),
        "provider": body.provider,
    }
    return _started(
        request,
        principal,
        workspace["id"],
        action="services.update",
        target=f"{app}/{env} services in {region['name']}",
        payload=params,
        start=lambda c, origin: services.start_update(
            store, c, origin, workspace_id=workspace["id"], environment=environment, params=params
        ),
    )


# -- scale and allocations ------------------------------------------------------------------------------------------
@router.post(
    APP + "/environments/{env}/scale", status_code=202, response_model=m.Operation, responses=ERRORS, tags=["scale"]
)
def scale(
    request: Request, principal: Caller, ws: str, prj: str, app: str, env: str, body: m.ScaleRequest
) -> JSONResponse:
    store = get_store(request)
    workspace, environment = mutable_environment(request, principal, ws, prj, app, env, "app.scale")
    scaling.check_scale(store, environment, app, env)
    return _started(
        request,
        principal,
        workspace["id"],
        action="app.scale",
        target=f"{app}--{env} to {body.instances}",
        payload={"instances": body.instances},
        start=lambda c, origin: scaling.start_scale(
            store,
            c,
            origin,
            workspace_id=workspace["id"],
            environment=environment,
            app=app,
            env=env,
            instances=body.instances,
        ),
    )


@router.get(APP + "/allocations", response_model=m.Page[m.Allocation], responses=READ_ERRORS, tags=["scale"])
def list_allocations(
    request: Request,
    principal: Caller,
    ws: str,
    prj: str,
    app: str,
    environment: str | None = Query(None, max_length=40),
    deployment: str | None = Query(None, max_length=64),
    all_states: bool = Query(False, alias="all", description="Include stopped and failed allocations."),
    limit: Limit = 50,
    cursor: Cursor = None,
    order: Order = "oldest",
) -> dict:
    store = get_store(request)
    found = readable_app(request, principal, ws, prj, app, "deployment.read")
    rows = store.app_allocation_views(
        found["id"],
        environment=environment,
        deployment_id=deployment,
        all_states=all_states,
        cursor=cursor,
        newest_first=order == "newest",
        limit=limit + 1,
    )
    return page(rows, limit)
