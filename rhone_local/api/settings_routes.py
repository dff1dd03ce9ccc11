"""Environment settings: read them (secret values never), and change them with an operation that rolls the
environment's running allocations onto the new values. Also retention (`rhone local gc`), the other piece of how
builds and their leftovers are kept."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from rhone_local.api import models as m
from rhone_local.api.routes import (
    ERRORS,
    READ_ERRORS,
    Caller,
    audit,
    authorize,
    get_ports,
    get_store,
    mutable_environment,
    mutate,
    op_view,
    origin,
    readable_environment,
)
from rhone_local.api.topology_routes import ENV, _digests
from rhone_local.domain import settings as rules
from rhone_local.operations import settings
from rhone_local.store import Store

router = APIRouter()


def config_view(store: Store, environment: dict) -> dict:
    newest = store.newest_deployment(environment["id"])
    config = newest["config"] if newest else {}
    stored = {s["name"]: s for s in store.settings(environment["id"])}
    items = [
        {
            "name": name,
            "value": None if row["secret"] else row["value"],
            "secret": bool(row["secret"]),
            "source": "environment",
            "operation_id": row["operation_id"],
            "updated_at": row["updated_at"],
        }
        for name, row in stored.items()
    ]
    items += [
        {"name": name, "value": value, "secret": False, "source": "rhone.toml"}
        for name, value in rules.defaults_of(config).items()
        if name not in stored
    ]
    return {
        "environment": environment["name"],
        "items": sorted(items, key=lambda i: i["name"]),
        "required": rules.required_of(config),
        "missing": rules.unmet(config, store.provided_names(environment["id"])),
    }


@router.get(ENV + "/config", response_model=m.EnvironmentConfig, responses=READ_ERRORS, tags=["settings"])
def show_config(request: Request, principal: Caller, ws: str, prj: str, app: str, env: str) -> dict:
    environment = readable_environment(request, principal, ws, prj, app, env, "environment.read")
    return config_view(get_store(request), environment)


@router.post(ENV + "/config", status_code=202, response_model=m.Operation, responses=ERRORS, tags=["settings"])
def change_config(
    request: Request, principal: Caller, ws: str, prj: str, app: str, env: str, body: m.ConfigChange
) -> JSONResponse:
    store = get_store(request)
    workspace, environment = mutable_environment(request, principal, ws, prj, app, env, "config.update")
    settings.check_change(body.values, body.secrets, body.unset)

    def perform(c: Any) -> tuple[int, dict]:
        op = settings.start_change(
            store,
            c,
            origin(request, principal),
            workspace_id=workspace["id"],
            environment=environment,
            app=app,
            env=env,
            values=body.values,
            secrets=body.secrets,
            unset=body.unset,
        )
        return 202, op_view(op)

    # The idempotency fingerprint covers the request; secret values enter it only through a digest.
    payload = {"values": body.values, "secrets": _digests(body.secrets), "unset": sorted(body.unset)}
    target = f"{app}/{env}"
    return mutate(request, principal, workspace["id"], "config.update", target, payload, perform, notify_op=True)


@router.post("/v1/local/gc", response_model=m.GcResult, responses=ERRORS, tags=["retention"])
def collect_garbage(request: Request, principal: Caller, body: m.GcRequest) -> dict:
    """Remove builds' work folders, stopped allocations' trees and unreferenced blobs now (owners of the machine's
    first workspace; audited). Files only: no row changes, so nothing here is an operation."""
    store = get_store(request)
    workspace = store.bootstrap_workspace()
    authorize(request, principal, workspace["id"], "local.gc", "data directory")
    result = get_ports(request).retention.run(dry_run=body.dry_run)
    if not body.dry_run:
        audit(request, principal, workspace["id"], "local.gc", "data directory", "allowed")
    return result
