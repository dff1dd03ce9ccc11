"""App logs: every allocation's output, prefixed by its allocation, read by cursor and followed by long-polling.

Readable by developers and above (an app's output may hold what its viewers should not see); runtime identities
cannot read it. Each response carries at most `app_logs.MAX_RESPONSE_BYTES` of lines; `truncated` says more is
already there (ask again at once with the cursor), and `wait` holds the request until something new is written.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Query, Request

from rhone_local import app_logs
from rhone_local.api import models as m
from rhone_local.api.routes import READ_ERRORS, Caller, get_ports, get_store, readable_app
from rhone_local.domain.errors import not_found
from rhone_local.store import now_iso

router = APIRouter()
APP = "/v1/workspaces/{ws}/projects/{prj}/apps/{app}"
POLL_SECONDS = 0.2
RECENT_SECONDS = 3600.0  # without --since or a deployment: live allocations, and those that ended this last hour


LOG_ERRORS = {
    **READ_ERRORS,
    409: {"model": m.ErrorResponse, "description": "invalid_cursor: a cursor this server never issued."},
}


@router.get(APP + "/logs", response_model=m.AppLogs, responses=LOG_ERRORS, tags=["logs"])
async def app_logs_read(
    request: Request,
    principal: Caller,
    ws: str,
    prj: str,
    app: str,
    deployment: str | None = Query(None, max_length=64, pattern=r"^dep_[0-9a-z]{1,40}$"),
    environment: str | None = Query(None, max_length=40),
    since: float | None = Query(None, gt=0, le=30 * 86400, description="Seconds back from now."),
    cursor: str | None = Query(None, max_length=60_000, description="From the previous answer: what comes next."),
    wait: float = Query(0, ge=0, le=25, description="Hold the request up to this long until new output arrives."),
) -> dict[str, Any]:
    store = get_store(request)
    found = readable_app(request, principal, ws, prj, app, "logs.read")
    if deployment is not None:
        row = store.deployment(deployment)
        if row is None or row["app_id"] != found["id"]:
            raise not_found("deployment", deployment)
    if environment is not None and store.environment(found["id"], environment) is None:
        raise not_found("environment", environment)
    offsets = app_logs.decode_cursor(cursor) if cursor else None
    runner = get_ports(request).logs
    window = time.time() - (since if since is not None else RECENT_SECONDS)
    deadline = time.monotonic() + wait
    while True:
        allocations = store.log_allocations(
            found["id"], environment=environment, deployment_id=deployment, active_since=_iso(window)
        )
        answer = _read(
            runner, allocations, offsets, since=time.time() - since if since else None, whole=deployment is not None
        )
        if answer["lines"] or answer["truncated"] or time.monotonic() >= deadline:
            return answer
        offsets = app_logs.decode_cursor(answer["cursor"])
        await asyncio.sleep(POLL_SECONDS)  # files, not rows, change here: nothing to be woken by


def _read(
    runner: Any, allocations: list[dict], offsets: dict[str, int] | None, *, since: float | None, whole: bool
) -> dict:
    """One page: from the cursor, else from `since`, else a deployment's logs whole, or the app's recent tails."""
    budget = app_logs.MAX_RESPONSE_BYTES
    lines: list[dict[str, Any]] = []
    reached: dict[str, int] = {}
    truncated = False
    for alloc in allocations:
        log = runner.log_path(alloc["id"])
        if offsets is not None:
            start = offsets.get(alloc["id"], 0)  # an allocation the cursor does not know is new: from its start
        elif since is not None:
            start = app_logs.offset_since(log, since)
        else:
            start = 0 if whole else app_logs.tail_offset(log)
        text, end, limited = app_logs.read_lines(log, start, max(budget, 0))
        budget -= end - start
        reached[alloc["id"]] = end
        truncated = truncated or limited
        for line in text:
            lines.append({"allocation_id": alloc["id"], "deployment_id": alloc["deployment_id"],
                          "environment": alloc["environment"], "text": line})  # fmt: skip
    return {"lines": lines, "cursor": app_logs.encode_cursor(reached), "truncated": truncated, "at": now_iso()}


def _iso(seconds: float) -> str:
    return app_logs.iso_at(seconds)
