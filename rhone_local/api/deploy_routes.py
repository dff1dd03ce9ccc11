"""Blobs and deployments: upload only what the server lacks, create a deployment, approve it, read its logs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from starlette.convertors import Convertor, register_url_convertor

from rhone_local.api import models as m
from rhone_local.api.routes import (
    ERRORS,
    READ_ERRORS,
    Caller,
    Cursor,
    Limit,
    Order,
    _app,
    _project,
    authorize,
    get_ports,
    get_store,
    mutate,
    op_view,
    origin,
    page,
    readable_app,
    route_url,
)
from rhone_local.artifacts import store_manifest
from rhone_local.domain.access import Principal
from rhone_local.domain.errors import forbidden, not_found
from rhone_local.domain.policy import policy_drift
from rhone_local.operations import deploy as deploys

router = APIRouter()
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


class DigestConvertor(Convertor):
    """Routes `/v1/blobs/{digest}` only for real digests, so `/v1/blobs/missing` is never mistaken for a blob."""

    regex = "sha256:[0-9a-f]{64}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("digest", DigestConvertor())


def _user_only(principal: Principal) -> None:
    if principal.kind == "runtime":
        raise forbidden("runtime_identity_forbidden", "a runtime identity cannot upload or deploy")


# -- blobs -------------------------------------------------------------------------------------------------------------
@router.post("/v1/blobs/missing", response_model=m.BlobMissing, responses=ERRORS, tags=["blobs"])
def missing_blobs(request: Request, principal: Caller, body: m.BlobQuery) -> dict:
    _user_only(principal)
    blobs = request.app.state.blobs
    for digest in body.digests:
        blobs.path(digest)  # validates the form
    missing = blobs.missing(body.digests)
    blobs.refresh(set(body.digests) - set(missing))
    return {"missing": missing}


@router.put(
    "/v1/blobs/{digest:digest}",
    status_code=201,
    response_model=m.BlobStored,
    responses=ERRORS,
    tags=["blobs"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_blob(
    request: Request, principal: Caller, digest: Annotated[str, Path(pattern=DIGEST_PATTERN)]
) -> JSONResponse:
    _user_only(principal)
    blobs = request.app.state.blobs
    declared = request.headers.get("content-length")
    stored = await blobs.write(digest, request.stream(), declared_size=int(declared) if declared else None)
    size = blobs.path(digest).stat().st_size
    return JSONResponse({"digest": digest, "size": size, "stored": stored}, status_code=201 if stored else 200)


# -- deployments -------------------------------------------------------------------------------------------------------
def deployment_view(request: Request, row: dict) -> dict:
    store = get_store(request)
    environment = store.environment_by_id(row["environment_id"])
    allocations = store.deployment_allocation_views(row["id"])
    return {
        "id": row["id"],
        "workspace_id": row["workspace_id"],
        "app_id": row["app_id"],
        "environment_id": row["environment_id"],
        "environment": environment["name"] if environment else "",
        "state": row["state"],
        "operation_id": row["operation_id"],
        "prebuilt": bool(row["prebuilt"]),
        "source_digest": row["source_digest"],
        "artifact_digest": row["artifact_digest"],
        "source": row["source"],
        "evidence": row["evidence"],
        "approval": row["approval"],
        "url": get_ports(request).deployments.urls.deployment(row["id"]),
        "superseded_by": _superseded_by(store, row),
        "routes": [
            {
                "environment": owned["environment"],
                "route_key": owned["route_key"],
                "epoch": owned["epoch"],
                "url": route_url(request, owned["route_key"]),
                "operation_id": owned["operation_id"],
            }
            for owned in store.owned_routes(row["id"])
        ],
        "allocations": allocations,
        "policy_drift": policy_drift(
            (row["config"] or {}).get("environments") or {},
            {e["name"]: e for e in store.environments_of(row["app_id"])},
        ),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _superseded_by(store: Any, row: dict) -> str | None:
    """A preview_ready deployment whose preview a newer one replaced (its preview no longer runs; the edge answers
    503 for it), by that newer deployment."""
    if row["state"] != "preview_ready":
        return None
    newest = store.newest_preview_ready(row["app_id"], row["environment_id"])
    return newest if newest and newest > row["id"] else None


def _deployment(request: Request, principal: Principal, deployment_id: str, action: str) -> tuple[dict, str | None]:
    store = get_store(request)
    row = store.deployment(deployment_id)
    if row is None:
        raise not_found("deployment", deployment_id)
    workspace = store.workspace(row["workspace_id"])
    _, role = authorize(request, principal, workspace["id"], action, deployment_id, app_id=row["app_id"])
    return row, role


@router.post(
    "/v1/workspaces/{ws}/projects/{prj}/apps/{app}/deployments",
    status_code=202,
    response_model=m.Operation,
    responses=ERRORS,
    tags=["deployments"],
)
def create_deployment(
    request: Request, principal: Caller, ws: str, prj: str, app: str, body: m.DeploymentCreate
) -> JSONResponse:
    store = get_store(request)
    blobs = request.app.state.blobs
    workspace, _ = authorize(request, principal, ws, "deployment.create", f"{prj}/{app}")
    found = _app(request, _project(request, workspace, prj), app)
    environment = store.environment(found["id"], body.environment)
    if environment is None:
        raise not_found("environment", body.environment)
    manifest = deploys.check_upload(
        blobs,
        body.manifest.model_dump(),
        manifest_digest=body.manifest_digest,
        prebuilt=body.prebuilt,
        artifact_digest=body.artifact_digest,
    )
    store_manifest(blobs, manifest)
    payload = body.model_dump()

    def perform(c: Any) -> tuple[int, dict]:
        op = deploys.start_deploy(
            store,
            c,
            origin(request, principal),
            workspace_id=workspace["id"],
            app_id=found["id"],
            environment=environment,
            environment_ref=body.environment,
            manifest_digest=body.manifest_digest,
            prebuilt=body.prebuilt,
            force_build=body.force_build,
            config=body.config.model_dump(mode="json"),
            source={**body.source.model_dump(), "artifact_digest": body.artifact_digest},
        )
        return 202, op_view(op)

    return mutate(
        request, principal, workspace["id"], "deployment.create", f"{prj}/{app}", payload, perform, notify_op=True
    )


@router.get(
    "/v1/workspaces/{ws}/projects/{prj}/apps/{app}/deployments",
    response_model=m.Page[m.Deployment],
    responses=READ_ERRORS,
    tags=["deployments"],
)
def list_deployments(
    request: Request,
    principal: Caller,
    ws: str,
    prj: str,
    app: str,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: Order = "oldest",
) -> dict:
    store = get_store(request)
    found = readable_app(request, principal, ws, prj, app, "deployment.read")
    newest = order == "newest"
    rows = store.deployments_page(found["id"], limit=limit, cursor=cursor, newest_first=newest)
    return page(rows, limit, lambda r: deployment_view(request, r))


@router.get("/v1/deployments/{deployment_id}", response_model=m.Deployment, responses=READ_ERRORS, tags=["deployments"])
def get_deployment(request: Request, principal: Caller, deployment_id: str) -> dict:
    row, _ = _deployment(request, principal, deployment_id, "deployment.read")
    return deployment_view(request, row)


@router.get(
    "/v1/deployments/{deployment_id}/logs", response_model=m.DeploymentLogs, responses=READ_ERRORS, tags=["deployments"]
)
def deployment_logs(request: Request, principal: Caller, deployment_id: str, lines: Limit = 200) -> dict:
    # Build and app output: readable by developers and above, like `rhone logs` (it may hold what viewers must not).
    row, _ = _deployment(request, principal, deployment_id, "logs.read")
    ports = get_ports(request)

    def tail(path: Any) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    return {
        "build": tail(ports.deployments.workdir(row["id"]) / "build.log"),
        "allocations": {a["id"]: tail(ports.logs.log_path(a["id"])) for a in ports.logs.allocations_of(row["id"])},
    }


@router.post(
    "/v1/deployments/{deployment_id}/approve",
    status_code=202,
    response_model=m.Operation,
    responses=ERRORS,
    tags=["deployments"],
)
def approve_deployment(
    request: Request, principal: Caller, deployment_id: str, body: m.DeploymentApprove
) -> JSONResponse:
    store = get_store(request)
    row, _ = _deployment(request, principal, deployment_id, "deployment.approve")
    approval = deploys.approval(row, principal.id, ack_cold=body.ack_cold)

    def perform(c: Any) -> tuple[int, dict]:
        return 202, op_view(deploys.approve(store, c, row, approval))

    response = mutate(
        request,
        principal,
        row["workspace_id"],
        "deployment.approve",
        deployment_id,
        {"deployment": deployment_id, **body.model_dump()},
        perform,
        notify_op=True,
    )
    request.app.state.notifier.changed(row["operation_id"])
    return response
