"""The edges' own interface to the control plane: their feed (long-polled) and their reports.

Only an edge identity — a token its supervisor minted for one edge process and handed to it on its stdin — is
accepted here, and it is accepted nowhere else (it is not an API token). A user's or an app's valid token is 403
`edge_identity_required`; these endpoints are not part of the public API (not in openapi.json). What they carry is
described in `rhone_local/edge_feed.py` and docs/architecture.md, "The edge".
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from rhone_local.api.routes import bearer, get_store
from rhone_local.domain.access import hash_token
from rhone_local.domain.errors import DomainError
from rhone_local.domain.routing import FEED_WAIT_SECONDS
from rhone_local.ports import EdgeFeedSource, EdgeIdentity

router = APIRouter(include_in_schema=False)
MAX_REPORTED_PORTS = 65535


def edge_feed(request: Request) -> EdgeFeedSource | None:
    return getattr(request.app.state, "edge_feed", None)


def authenticate_edge(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> EdgeIdentity:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials.strip():
        raise DomainError("unauthenticated", "a bearer token is required", 401)
    token = credentials.credentials.strip()
    feed = edge_feed(request)
    edge = feed.edge_for_token(token) if feed is not None else None
    if edge is not None:
        return edge
    if get_store(request).principal_for_token(hash_token(token)) is not None:
        raise DomainError("edge_identity_required", "only an edge process of this server may use /v1/edge", 403)
    raise DomainError("invalid_token", "the token is invalid, expired or revoked", 401)


EdgeCaller = Annotated[EdgeIdentity, Depends(authenticate_edge)]


@router.get("/v1/edge/feed")
async def feed(
    request: Request,
    edge: EdgeCaller,
    seq: Annotated[int | None, Query(ge=0)] = None,  # the route sequence the edge applies; none: it needs a snapshot
    version: Annotated[int | None, Query(ge=0)] = None,  # the allocation table version it applies
    wait: Annotated[float, Query(ge=0, le=FEED_WAIT_SECONDS)] = 0,  # seconds to wait for a change
) -> JSONResponse:
    source = edge_feed(request)
    source.contact(edge)
    if wait:
        await source.wait_for_change(seq, version, wait)
    # Read on the event loop's thread: a few indexed reads (WAL readers never wait for writers), one per change, and
    # no hand-off to a worker thread on the way from a commit to the edges.
    return JSONResponse(source.document(seq, version))


@router.post("/v1/edge/reports", status_code=204)
async def report(request: Request, edge: EdgeCaller) -> Response:
    try:
        body = await request.json()
    except ValueError as error:
        raise DomainError("malformed_json", "the request body is not valid JSON", 400) from error
    seq, version, open_connections = _checked_report(body)
    edge_feed(request).report(edge, seq, version, open_connections)
    return Response(status_code=204)


def _checked_report(body: Any) -> tuple[int | None, int | None, dict[int, int]]:
    """{"seq": int|null, "version": int|null, "open": {"<port>": count}}, every number a non-negative int."""

    def count(value: Any, *, nullable: bool) -> bool:
        return (value is None and nullable) or (type(value) is int and value >= 0)

    if not isinstance(body, dict) or set(body) - {"seq", "version", "open"}:
        raise DomainError("invalid_request", "a report is {seq, version, open}", 422)
    seq, version, opened = body.get("seq"), body.get("version"), body.get("open", {})
    if not count(seq, nullable=True) or not count(version, nullable=True) or not isinstance(opened, dict):
        raise DomainError("invalid_request", "seq and version are non-negative integers or null, open an object", 422)
    if len(opened) > MAX_REPORTED_PORTS:
        raise DomainError("invalid_request", f"open names more than {MAX_REPORTED_PORTS} ports", 422)
    checked: dict[int, int] = {}
    for port, connections in opened.items():
        if not (isinstance(port, str) and port.isdigit() and 0 < int(port) < 65536) or not count(
            connections, nullable=False
        ):
            raise DomainError("invalid_request", f"open: {port!r} is not a port with a connection count", 422)
        checked[int(port)] = connections
    return seq, version, checked
