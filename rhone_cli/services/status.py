"""`rhone status`: one app at a glance — each environment's route owner and epoch, its running instances, and the
URL that answers for it (the route's, else the newest preview's)."""

from __future__ import annotations

from typing import Any

from rhone_cli.api import Target
from rhone_cli.invocation import Invocation

LIVE_STATES = ("planned", "pulling", "starting", "ready", "draining")
RECENT_DEPLOYMENTS = 20


def app_status(inv: Invocation, target: Target) -> dict[str, Any]:
    api = inv.api()
    app = api.app(target)
    environments = api.environments(target)
    routes = {r["environment"]: r for r in api.routes(target)}
    allocations = api.live_allocations(target)
    deployments = api.recent_deployments(target, RECENT_DEPLOYMENTS)
    rows = []
    for environment in environments:
        name = environment["name"]
        live = [a for a in allocations if a["environment"] == name and a["state"] in LIVE_STATES]
        latest = next((d for d in deployments if d["environment"] == name), None)
        preview = next((d for d in deployments if d["environment"] == name and _serving(d)), None)
        route = routes.get(name)
        rows.append(
            {
                "environment": name,
                "frozen": environment["frozen"],
                "approval_required": environment["approval_required"],
                "route_owner": route["deployment_id"] if route else None,
                "epoch": route["epoch"] if route else None,
                "instances": {"ready": sum(a["state"] == "ready" for a in live), "total": len(live)},
                "latest_deployment": _summary(latest),
                "url": route["url"] if route else preview["url"] if preview else None,
            }
        )
    return {"app": {"id": app["id"], "name": app["name"], "project_id": app["project_id"]}, "environments": rows}


def _serving(deployment: dict[str, Any] | None) -> bool:
    return bool(deployment) and deployment["state"] == "preview_ready" and not deployment.get("superseded_by")


def _summary(deployment: dict[str, Any] | None) -> dict[str, Any] | None:
    if deployment is None:
        return None
    return {"id": deployment["id"], "state": deployment["state"], "created_at": deployment["created_at"]}
