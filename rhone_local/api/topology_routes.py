"""Provider bindings, runtime services, scale, regions and allocations.

Every change here is an operation (binding, unbinding, services, scale, region enablement) whose worker stage does
the real work; the request only checks what can be refused at once and records the operation. Secret values arrive
in a binding request, go straight into `binding_secrets`, and leave only as allocation environment variables: no
response, operation parameter, audit record or log line holds one.
"""

from __future__ import annotations

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
    page,
    readable_app,
    readable_environment,
)
from rhone_local.domain import topology as rules
from rhone_local.domain.access import Principal
from rhone_local.domain.errors import DomainError, conflict, not_found
from rhone_local.domain.ids import new_id
from rhone_local.operations.placement import sharing_refusal
from rhone_local.ports import EngineStatus
from rhone_local.store import Store

router = APIRouter()
APP = "/v1/workspaces/{ws}/projects/{prj}/apps/{app}"
ENV = APP + "/environments/{env}"
# Operations that change an environment's allocations: one at a time per environment.
ENVIRONMENT_CHANGES = ("scale", "promote", "rollback", "config.update")


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


def _start_operation(
    request: Request,
    principal: Principal,
    workspace_id: str,
    *,
    action: str,
    target: str,
    kind: str,
    target_kind: str,
    target_id: str,
    params: dict[str, Any],
    payload: dict[str, Any],
    within: Any = None,
) -> JSONResponse:
    """Record the operation; `within(c, op)` runs in the same transaction (checks that refuse roll it all back)."""
    store = get_store(request)

    def perform(c: Any) -> tuple[int, dict]:
        op = store.create_operation(
            c,
            workspace_id=workspace_id,
            kind=kind,
            target_kind=target_kind,
            target_id=target_id,
            params=params,
            principal=principal,
            request_id=request.state.request_id,
            idempotency_key=request.headers.get("idempotency-key") or None,
        )
        if within is not None:
            within(c, op)
        return 202, op_view(op)

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
    if target["is_primary"]:
        raise conflict("region_primary", f"{target['name']} is the primary region: every environment serves there")

    def within(c: Any, op: dict) -> None:
        current = store.environment_region_states(environment["id"]).get(target["id"])
        if current is None or current["state"] != "eligible":
            # Not eligible while the gates are checked: traffic waits for `eligible`.
            store.set_environment_region(c, environment["id"], target["id"], "enabling", op["id"], None)

    return _start_operation(
        request,
        principal,
        workspace["id"],
        action="region.enable",
        target=f"{app}--{env} in {target['name']}",
        kind="region.enable",
        target_kind="environment",
        target_id=environment["id"],
        params={"environment_id": environment["id"], "region_id": target["id"], "region": target["name"]},
        payload={"region": target["id"]},
        within=within,
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
    binding_id = new_id("provider_binding")
    plan = _provision_plan(request, environment, body)
    resource = plan.resource if plan else rules.normalize_resource(body.resource)
    spec = rules.BindingSpec(environment["name"], resource, body.mutable, body.shared_read_only)
    _refuse_provisioned_elsewhere(request, environment, resource)
    if body.shared_read_only and body.mutable:
        raise conflict(
            "shared_mutable_resource",
            "a shared binding must be read-only: declare it --read-only too, or bind a resource of its own",
        )

    def within(c: Any, op: dict) -> None:
        # Inside the write transaction: two requests racing to bind one resource are serialized here.
        live = store.live_binding_named(environment["id"], body.name, region["id"])
        if live is not None:
            raise conflict(
                "binding_exists",
                f"{body.name} is already bound in {environment['name']} ({region['name']}); unbind it first",
                binding_id=live["id"],
            )
        names = sorted(set(body.provision_secrets)) if plan else sorted(body.secrets)
        taken = store.secret_names_taken(c, environment["id"], region["id"], names)
        if taken:
            raise conflict(
                "secret_name_taken",
                f"{taken[0]['name']} is already provided by binding {taken[0]['binding']} in "
                f"{environment['name']}: an allocation gets one value per variable",
                secret=taken[0]["name"],
            )
        clash = sharing_refusal(store, spec)
        if clash is not None:
            raise conflict("shared_mutable_resource", clash)
        store.insert_provider_binding(
            c,
            binding_id=binding_id,
            workspace_id=workspace["id"],
            app_id=environment["app"]["id"],
            environment_id=environment["id"],
            name=body.name,
            kind=body.kind,
            resource=resource,
            mutable=body.mutable,
            shared_read_only=body.shared_read_only,
            region_id=region["id"],
            operation_id=op["id"],
            secrets=body.secrets,
        )

    params = {
        "binding_id": binding_id,
        "environment_id": environment["id"],
        "name": body.name,
        "region": region["name"],
        "secrets": sorted(body.secrets) if not plan else sorted(set(body.provision_secrets)),  # names only
        "provision": plan.kind if plan else None,
    }
    return _start_operation(
        request,
        principal,
        workspace["id"],
        action="binding.create",
        target=f"{app}/{env}/{body.name}",
        kind="binding.create",
        target_kind="provider_binding",
        target_id=binding_id,
        params=params,
        # The idempotency fingerprint covers the request; secret values enter it only through a digest.
        payload={**body.model_dump(exclude={"secrets"}), "secrets": _digests(body.secrets)},
        within=within,
    )


def _provision_plan(request: Request, environment: dict, body: m.BindingCreate) -> Any:
    """Where a provisioned database will live (its resource is Rhone Local's choice), or None for a plain binding."""
    # Rules across fields, beyond the body's schema: refused as conflicts, like contradictory service changes.
    if not body.provision:
        if body.resource is None:
            raise conflict("resource_required", "a binding names its resource (--resource), or is --provision")
        return None
    if body.resource is not None or body.secrets:
        raise conflict(
            "provision_conflict",
            "a provisioned database's location and credentials are Rhone Local's to choose: drop --resource and "
            "secret values (name the variables with provision_secrets)",
        )
    if not body.mutable or body.shared_read_only:
        raise conflict("shared_mutable_resource", "a provisioned database belongs to its environment alone")
    return get_ports(request).databases.plan(environment["id"], body.name, body.kind)


def _refuse_provisioned_elsewhere(request: Request, environment: dict, resource: str) -> None:
    """A database Rhone Local provisioned for one environment is never bound to another, bound or not."""
    store, provisioner = get_store(request), get_ports(request).databases
    for row in store.all_provisioned():
        if row["environment_id"] == environment["id"]:
            continue
        if rules.normalize_resource(provisioner.plan(row["environment_id"], row["name"], row["kind"]).resource) == (
            resource
        ):
            owner = store.environment_by_id(row["environment_id"])
            raise conflict(
                "shared_mutable_resource",
                f"{resource} is the database provisioned for environment {owner['name']}: preview and production "
                "never share one. Provision one for this environment (--provision)",
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
    binding = store.ready_binding_named(environment["id"], name, target_region["id"])
    if binding is None:
        raise not_found("binding", f"{name} in {env} ({target_region['name']})")

    provisioned = store.provisioned(environment["id"], name)
    if delete_data and provisioned is None:
        raise conflict(
            "not_provisioned", f"{name} in {env} is not a database Rhone Local provisioned: it has no data to delete"
        )

    def within(c: Any, op: dict) -> None:
        if delete_data:
            using = store.allocations_given(c, binding)
            if using:
                raise conflict(
                    "data_in_use",
                    f"{len(using)} allocation(s) of {env} still use {name}'s database ({', '.join(using[:3])}); "
                    f"stop them first (`rhone app scale --env {env} --instances 0`), or unbind without --delete-data",
                    allocations=using,
                )
        if not store.start_unbinding(c, binding["id"]):
            raise conflict("binding_busy", f"{name} is already being unbound")

    return _start_operation(
        request,
        principal,
        workspace["id"],
        action="binding.remove",
        target=f"{app}/{env}/{name}",
        kind="binding.remove",
        target_kind="provider_binding",
        target_id=binding["id"],
        params={
            "binding_id": binding["id"],
            "environment_id": environment["id"],
            "name": name,
            "delete_data": delete_data,
        },
        payload={"binding": binding["id"], "delete_data": delete_data},
        within=within,
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
    both = set(body.bind) & set(body.unbind)
    if both:
        raise conflict("services_contradict", f"both bound and unbound: {', '.join(sorted(both))}")
    if not body.bind and not body.unbind:
        raise conflict("nothing_to_do", "name services to --bind or --unbind")
    refusal = rules.provider_refusal(body.bind, body.provider)
    if refusal is not None:
        raise DomainError("provider_cannot_serve", refusal, 422, {"provider": body.provider})
    owner = store.route_owner(environment["app"]["id"], environment["id"])
    if owner is not None and environment["instances"] > 1 and body.unbind:
        needed = {r.service for r in rules.scale_requirements(store.deployment(owner["deployment_id"])["config"])}
        still_needed = sorted(needed & set(body.unbind))
        if still_needed:
            raise conflict(
                "runtime_services_required",
                f"{env} runs {environment['instances']} instances, which need {', '.join(still_needed)}; "
                "scale to 1 first (`rhone app scale --instances 1`)",
                services=still_needed,
            )
    params = {
        "environment_id": environment["id"],
        "region_id": region["id"],
        "region": region["name"],
        "bind": sorted(set(body.bind)),
        "unbind": sorted(set(body.unbind)),
        "provider": body.provider,
    }
    return _start_operation(
        request,
        principal,
        workspace["id"],
        action="services.update",
        target=f"{app}/{env} services in {region['name']}",
        kind="services.update",
        target_kind="environment",
        target_id=environment["id"],
        params=params,
        payload=params,
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
    owner = store.route_owner(environment["app"]["id"], environment["id"])
    if owner is None:
        raise conflict("no_route_owner", f"nothing serves {app}--{env} yet: promote a deployment before scaling it")

    def within(c: Any, op: dict) -> None:
        # One change of an environment's allocations at a time: a scale racing another scale or a promotion could
        # leave the count and the allocations disagreeing, or start instances of a deployment that lost the route.
        busy = store.live_operations(c, environment["id"], ENVIRONMENT_CHANGES, exclude=op["id"])
        if busy:
            raise conflict(
                "environment_busy",
                f"{busy[0]['kind']} {busy[0]['id']} is changing {app}--{env}; wait for it (`rhone op wait "
                f"{busy[0]['id']}`) and scale again",
                operation_id=busy[0]["id"],
            )

    return _start_operation(
        request,
        principal,
        workspace["id"],
        action="app.scale",
        target=f"{app}--{env} to {body.instances}",
        kind="scale",
        target_kind="environment",
        target_id=environment["id"],
        params={"environment_id": environment["id"], "environment": env, "instances": body.instances},
        payload={"instances": body.instances},
        within=within,
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
