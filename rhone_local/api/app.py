"""The FastAPI application: request ids, uniform errors, authentication, idempotency and audit plumbing.

Conventions: JSON under `/v1`; bearer tokens; `X-Request-Id` on every response; errors as
`{"error": {"code", "message", "request_id", "details"}}`; list endpoints take `limit` + `cursor`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from rhone_local import __version__
from rhone_local.domain.errors import DomainError, disk_full, is_disk_full
from rhone_local.domain.ids import PATH_REFERENCES, new_id, well_formed_reference
from rhone_local.notify import ChangeNotifier
from rhone_local.ports import ApiPorts
from rhone_local.store import STORAGE_ERRORS, Store, StoreUnavailable

log = logging.getLogger("rhone_local.api")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")

STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "invalid_request",
    500: "internal_error",
}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) or new_id("request")
    body = {"error": {"code": code, "message": message, "request_id": request_id, "details": details or {}}}
    return JSONResponse(body, status_code=status, headers={"X-Request-Id": request_id, **(headers or {})})


def create_app(store: Store, notifier: ChangeNotifier | None = None, *, ports: ApiPorts) -> FastAPI:
    """The API over `store`, using the rest of the control plane only through `ports` (rhone_local/ports.py; the
    wiring in `server.py` builds them)."""
    from rhone_local.api import (
        deploy_routes,
        device_routes,
        edge_routes,
        log_routes,
        route_routes,
        routes,
        settings_routes,
        topology_routes,
    )

    app = FastAPI(
        title="Rhone API",
        version=__version__,
        description="The Rhone control-plane API, as implemented by Rhone Local.",
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(check_path_references)],
    )
    app.state.store = store
    app.state.notifier = notifier or ChangeNotifier()
    app.state.ports = ports
    app.state.blobs = ports.blobs
    app.state.edge_feed = ports.edge_feed

    @app.middleware("http")
    async def request_id_middleware(request: Request, call_next: Callable) -> Any:
        incoming = request.headers.get("x-request-id", "")
        request.state.request_id = incoming if _REQUEST_ID.match(incoming) else new_id("request")
        response = await call_next(request)
        response.headers["X-Request-Id"] = request.state.request_id
        return response

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, error: DomainError) -> JSONResponse:
        return error_response(request, error.status, error.code, error.message, error.details)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(p) for p in item.get("loc", ())], "message": item.get("msg", ""), "type": item.get("type")}
            for item in error.errors()
        ]
        if any(p["type"] == "json_invalid" for p in problems):
            return error_response(
                request, 400, "malformed_json", "the request body is not valid JSON", {"problems": problems}
            )
        return error_response(request, 422, "invalid_request", "the request is not valid", {"problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(error.status_code, "http_error")
        headers = error.headers
        if error.status_code == 405:
            # Starlette answers with the methods of the first route whose path matched; `Allow` must list every
            # method the resource supports (RFC 9110 §15.5.6), e.g. GET and POST on a collection.
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return error_response(request, error.status_code, code, str(error.detail), headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "internal error; see the Rhone Local log")

    @app.exception_handler(ClientDisconnect)
    async def client_disconnected(request: Request, error: ClientDisconnect) -> JSONResponse:
        # Nobody reads this answer; one line says what happened (the handler above would log two tracebacks).
        log.warning("%s %s: the client went away before its request body ended", request.method, request.url.path)
        return error_response(request, 400, "client_disconnected", "the request body ended early")

    async def storage_error(request: Request, error: Exception) -> JSONResponse:
        """A full disk is the operator's to fix, not a bug: 507 `disk_full` naming the data directory. A database
        server out of reach for a moment (restarted) is 503 `store_unavailable`, which clients retry."""
        if isinstance(error, StoreUnavailable):
            log.warning("%s %s: the store is unavailable: %s", request.method, request.url.path, error)
            message = "the store (PostgreSQL) is not reachable right now; retry shortly"
            return error_response(request, 503, "store_unavailable", message, headers={"Retry-After": "1"})
        if not is_disk_full(error):
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return error_response(request, 500, "internal_error", "internal error; see the Rhone Local log")
        full = disk_full(request.app.state.ports.data_dir)
        log.warning("%s %s: %s", request.method, request.url.path, full.message)
        return error_response(request, full.status, full.code, full.message, full.details)

    for error_class in (OSError, *STORAGE_ERRORS):
        app.add_exception_handler(error_class, storage_error)

    app.include_router(routes.router)
    app.include_router(deploy_routes.router)
    app.include_router(route_routes.router)
    app.include_router(topology_routes.router)
    app.include_router(log_routes.router)
    app.include_router(settings_routes.router)
    app.include_router(edge_routes.router)
    app.include_router(device_routes.router)
    return app


def check_path_references(request: Request) -> None:
    """Refuse a path parameter that cannot name anything (404), before authentication or any lookup: an id or name
    that is not well formed — `..`, an escaped `/`, `?` — is never looked up, audited as a target, or echoed into
    another path (runs for every route; the CLI checks the same formats before sending)."""
    for param, value in request.path_params.items():
        if param not in PATH_REFERENCES:
            continue
        kind, names = PATH_REFERENCES[param]
        if not well_formed_reference(kind, value, names=names):
            what = " or ".join(part for part in (names and "a name", kind and f"a {kind} id") if part)
            raise DomainError(
                "not_found",
                f"{value!r} is not {what}, so it names nothing",
                404,
                {"kind": kind or param, "ref": value},
            )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route fully matches for this path (asked of the router: FastAPI nests included routers)."""
    scope = request.scope
    allowed = []
    for method in _METHODS:
        probe = {"type": "http", "path": scope["path"], "root_path": scope.get("root_path", ""), "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


# -- helpers the route handlers share --------------------------------------------------------------------------------
