"""Route handlers. Each one: authenticate, authorize (audited when denied), read or mutate through the store."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rhone_local import __version__
from rhone_local.api import models as m
from rhone_local.domain import access
from rhone_local.domain.access import Principal, hash_token, new_secret
from rhone_local.domain.errors import DomainError, forbidden, not_found
from rhone_local.domain.operations import NOT_RUNNABLE, TERMINAL_STATES
from rhone_local.domain.outcomes import exit_category, outcome
from rhone_local.operations import access as access_changes
from rhone_local.operations import tenancy
from rhone_local.operations.unit_of_work import Mutation, Origin, run_mutation
from rhone_local.ports import ApiPorts
from rhone_local.store import SCHEMA_VERSION, Store

router = APIRouter()
bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer <token>`.")

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": m.ErrorResponse, "description": text}
    for status, text in {
        400: "Malformed request body.",
        401: "Missing, invalid, expired or revoked token.",
        403: "Not allowed for this identity or role (audited).",
        404: "Not found.",
        409: "Conflict: name taken, or Idempotency-Key reused with another request.",
        422: "Invalid request.",
    }.items()
}
READ_ERRORS = {k: v for k, v in ERRORS.items() if k in (401, 403, 404, 422)}
Limit = Annotated[int, Query(ge=1, le=200, description="Page size.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]
SeqCursor = Annotated[
    str | None, Query(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page (a sequence number).")
]
Order = Annotated[
    Literal["oldest", "newest"],
    Query(description="Creation order (`oldest` first) or its reverse; send the same order with each `cursor`."),
]


# -- authentication and authorization --------------------------------------------------------------------------------
def get_store(request: Request) -> Store:
    return request.app.state.store


def get_ports(request: Request) -> ApiPorts:
    return request.app.state.ports


def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials.strip():
        raise DomainError("unauthenticated", "a bearer token is required", 401)
    token_hash = hash_token(credentials.credentials.strip())
    principal = get_store(request).principal_for_token(token_hash)
    if principal is None:
        if get_store(request).token_expired(token_hash):  # the client may refresh it (POST /v1/token/refresh)
            raise DomainError("token_expired", "the token has expired", 401)
        raise DomainError("invalid_token", "the token is invalid, expired or revoked", 401)
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def _workspace(store: Store, principal: Principal, ref: str) -> tuple[dict, str | None]:
    workspace = store.workspace(ref)
    if workspace is None:
        raise not_found("workspace", ref)
    if principal.kind == "runtime":
        if principal.workspace_id != workspace["id"]:
            raise not_found("workspace", ref)
        return workspace, None
    return workspace, member_role(store, principal, workspace["id"])


def member_role(store: Store, principal: Principal, workspace_id: str) -> str | None:
    """The role a user's token acts with in the workspace (None: it does not act there, as for a non-member)."""
    return access.role_in_workspace(principal, workspace_id, store.role_of(workspace_id, principal.id))


def _token_workspaces(store: Store, principal: Principal) -> list[dict]:
    """The workspaces a user's token acts in (the one it is bound to, if its user is still a member there)."""
    rows = store.workspaces_of(principal.id)
    return [
        {**w, "role": role}
        for w in rows
        if (role := access.role_in_workspace(principal, w["id"], w["role"])) is not None
    ]


def authorize(
    request: Request, principal: Principal, ws_ref: str, action: str, target: str, app_id: str | None = None
) -> tuple[dict, str | None]:
    """Check `action` in the workspace; a denied mutation is audited before the 403 goes out."""
    store = get_store(request)
    workspace, role = _workspace(store, principal, ws_ref)
    try:
        access.require(principal, action, role, app_id=app_id)
    except DomainError as error:
        if action in access.MUTATIONS:
            audit(request, principal, workspace["id"], action, target, "denied", error.code)
        raise
    return workspace, role


def audit(
    request: Request,
    principal: Principal,
    workspace_id: str,
    action: str,
    target: str,
    result: str,
    code: str | None = None,
) -> None:
    """One audit record for this request (outside any transaction: a refusal must be recorded even so)."""
    get_store(request).audit(
        workspace_id=workspace_id,
        principal=principal,
        action=action,
        target=target,
        request_id=request.state.request_id,
        result=result,
        detail={"code": code} if code else None,
    )


def deny(
    request: Request, principal: Principal, workspace_id: str, action: str, target: str, code: str, message: str
) -> DomainError:
    """Audit a refused mutation and return the 403 to raise: a denial a handler decides is recorded like one the
    permission table decides."""
    audit(request, principal, workspace_id, action, target, "denied", code)
    return forbidden(code, message)


@contextmanager
def refusals_audited(request: Request, principal: Principal, workspace_id: str, action: str, target: str):
    """A mutation refused by a check before it runs (a policy, a state, a missing target) is audited `failed` with its
    code, like one refused inside `mutate`; a 403 is audited `denied` where it is decided."""
    try:
        yield
    except DomainError as error:
        if error.status != 403:
            audit(request, principal, workspace_id, action, target, "failed", error.code)
        raise


def mutate(
    request: Request,
    principal: Principal,
    workspace_id: str,
    action: str,
    target: str,
    payload: Any,
    perform: Callable[[Any], tuple[int, dict]],
    notify_op: bool = False,
    secret_response: bool = False,
) -> JSONResponse:
    """Run a mutation as one unit of work (operations/unit_of_work.py: idempotency, the writes, the audit record, in
    one transaction) and answer with its result."""
    mutation = Mutation(
        principal=principal,
        workspace_id=workspace_id,
        action=action,
        target=target,
        request_id=request.state.request_id,
        method=request.method,
        path=request.url.path,
        payload=payload,
        idempotency_key=request.headers.get("idempotency-key") or None,
        secret_response=secret_response,
    )
    done = run_mutation(get_store(request), mutation, perform)
    if done.replayed:
        return _json(done.body, done.status, {"Idempotent-Replayed": "true"})
    if notify_op:
        request.app.state.notifier.work_available()
    return _json(done.body, done.status)


def _json(body: dict, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if status == 202 and body.get("links", {}).get("self"):
        headers["Location"] = body["links"]["self"]
    return JSONResponse(body, status_code=status, headers=headers)


def page(rows: list[dict], limit: int, view: Callable[[dict], dict] = lambda r: r, key: str = "id") -> dict:
    items = rows[:limit]
    return {"items": [view(r) for r in items], "next_cursor": str(items[-1][key]) if len(rows) > limit else None}


# -- views -----------------------------------------------------------------------------------------------------------
def route_url(request: Request, route_key: str) -> str:
    """Where the edge answers for a route (domain/urls.py)."""
    return get_ports(request).deployments.urls.route(route_key)


def origin(request: Request, principal: Principal) -> Origin:
    """Who starts an operation, through which request: what the operation records of it."""
    return Origin(principal, request.state.request_id, request.headers.get("idempotency-key") or None)


def op_view(op: dict) -> dict:
    verdict = outcome(op["kind"], op["state"])
    error = op["error"]
    if verdict in ("failed", "blocked"):
        # The contract (docs/state-machines.md, "Outcomes"): a failed or blocked operation always says why.
        error = error or {"code": op["state"], "message": f"the operation is {op['state']}; no reason was recorded"}
        error = {**error, "exit_category": exit_category(error.get("code"), parked=verdict == "blocked")}
    return {
        "id": op["id"],
        "workspace_id": op["workspace_id"],
        "kind": op["kind"],
        "state": op["state"],
        "version": op["version"],
        "terminal": op["state"] in TERMINAL_STATES,
        "outcome": verdict,
        "target_kind": op["target_kind"],
        "target_id": op["target_id"],
        "params": op["params"],
        "stages": op["stages"],
        "error": error,
        "actor": {"kind": op["actor_kind"], "id": op["actor_id"]},
        "idempotency_key": op["idempotency_key"],
        "request_id": op["request_id"],
        "created_at": op["created_at"],
        "updated_at": op["updated_at"],
        "links": {"self": f"/v1/operations/{op['id']}"},
    }


def env_view(row: dict) -> dict:
    return {**row, "approval_required": bool(row["approval_required"]), "frozen": bool(row["frozen"])}


def token_view(row: dict) -> dict:
    return {
        k: row.get(k)
        for k in (
            "id", "name", "subject_kind", "subject_id", "workspace_id", "role", "created_at", "expires_at", "revoked_at"
        )
    }  # fmt: skip


# -- service -----------------------------------------------------------------------------------------------------------
@router.get("/v1/health", response_model=m.Health, tags=["service"])
def health() -> dict:
    return {"status": "ok", "version": __version__, "schema_version": SCHEMA_VERSION}


@router.get("/v1/whoami", response_model=m.Whoami, responses={401: ERRORS[401]}, tags=["identity"])
def whoami(request: Request, principal: Caller) -> dict:
    store = get_store(request)
    if principal.kind == "runtime":
        workspace = store.workspace(principal.workspace_id or "")
        workspaces = [{"id": workspace["id"], "name": workspace["name"], "role": None}] if workspace else []
    else:
        rows = _token_workspaces(store, principal)
        workspaces = [{"id": w["id"], "name": w["name"], "role": w["role"]} for w in rows]
    return {
        "id": principal.id,
        "kind": principal.kind,
        "name": principal.name,
        "token_id": principal.token_id,
        "app_id": principal.app_id,
        "workspaces": workspaces,
    }


# -- workspaces, members, audit, tokens --------------------------------------------------------------------------------
@router.get("/v1/workspaces", response_model=m.Page[m.Workspace], responses=READ_ERRORS, tags=["workspaces"])
def list_workspaces(request: Request, principal: Caller) -> dict:
    if principal.kind == "runtime":
        raise forbidden("forbidden", "a runtime identity cannot list workspaces")
    return {"items": _token_workspaces(get_store(request), principal), "next_cursor": None}


@router.get("/v1/workspaces/{ws}", response_model=m.Workspace, responses=READ_ERRORS, tags=["workspaces"])
def get_workspace(request: Request, principal: Caller, ws: str) -> dict:
    workspace, role = authorize(request, principal, ws, "workspace.read", ws)
    return {**workspace, "role": role}


@router.get("/v1/workspaces/{ws}/members", response_model=m.Page[m.Member], responses=READ_ERRORS, tags=["workspaces"])
def list_members(request: Request, principal: Caller, ws: str) -> dict:
    workspace, _ = authorize(request, principal, ws, "member.read", ws)
    return {"items": get_store(request).members(workspace["id"]), "next_cursor": None}


@router.post(
    "/v1/workspaces/{ws}/members", status_code=201, response_model=m.Member, responses=ERRORS, tags=["workspaces"]
)
def invite_member(request: Request, principal: Caller, ws: str, body: m.MemberInvite) -> JSONResponse:
    workspace, role = authorize(request, principal, ws, "member.invite", body.email)
    if not access.may_grant(role or "viewer", body.role):
        raise deny(
            request,
            principal,
            workspace["id"],
            "member.invite",
            body.email,
            "cannot_grant_role",
            f"a {role} cannot grant the {body.role} role",
        )

    def perform(c: Any) -> tuple[int, dict]:
        name = body.name or body.email.split("@")[0]
        return 201, access_changes.add_member(get_store(request), c, workspace["id"], body.email, name, body.role)

    return mutate(request, principal, workspace["id"], "member.invite", body.email, body.model_dump(), perform)


@router.get(
    "/v1/workspaces/{ws}/audit", response_model=m.Page[m.AuditRecord], responses=READ_ERRORS, tags=["workspaces"]
)
def read_audit(
    request: Request,
    principal: Caller,
    ws: str,
    limit: Limit = 50,
    cursor: Cursor = None,
    action: str | None = None,
    order: Order = "oldest",
) -> dict:
    workspace, _ = authorize(request, principal, ws, "audit.read", ws)
    rows = get_store(request).audit_page(
        workspace["id"], action=action or None, limit=limit, cursor=cursor, newest_first=order == "newest"
    )
    return page(rows, limit)


@router.get("/v1/workspaces/{ws}/tokens", response_model=m.Page[m.Token], responses=READ_ERRORS, tags=["tokens"])
def list_tokens(request: Request, principal: Caller, ws: str, limit: Limit = 50, cursor: Cursor = None) -> dict:
    workspace, _ = authorize(request, principal, ws, "token.read", ws)
    rows = get_store(request).tokens_page(principal.id, workspace["id"], limit=limit, cursor=cursor)
    return page(rows, limit, token_view)


@router.post(
    "/v1/workspaces/{ws}/tokens", status_code=201, response_model=m.TokenCreated, responses=ERRORS, tags=["tokens"]
)
def create_token(request: Request, principal: Caller, ws: str, body: m.TokenCreate) -> JSONResponse:
    workspace, role = authorize(request, principal, ws, "token.create", body.name)
    store = get_store(request)
    subject = body.user_id or principal.id
    # The new token is bound to this workspace, with the role it acts with: the caller's own (never more than the
    # caller's token may do), or the member's it is issued for.
    token_role = role
    if subject != principal.id:
        if role not in ("owner", "admin"):
            raise deny(
                request,
                principal,
                workspace["id"],
                "token.create",
                subject,
                "insufficient_role",
                "only owners and admins issue tokens for other members",
            )
        subject_role = store.role_of(workspace["id"], subject)
        if subject_role is None:
            raise not_found("member", subject)
        # A token acts as its subject: issuing one for a higher role would hand the caller that role.
        if not access.may_grant(role, subject_role):
            raise deny(
                request,
                principal,
                workspace["id"],
                "token.create",
                subject,
                "insufficient_role",
                f"a {role} cannot issue tokens for a {subject_role}",
            )
        token_role = subject_role
    secret = new_secret()
    expires = None
    if body.expires_in_days:
        expires = (datetime.now(UTC) + timedelta(days=body.expires_in_days)).isoformat(timespec="milliseconds")
        expires = expires.replace("+00:00", "Z")

    def perform(c: Any) -> tuple[int, dict]:
        token = access_changes.issue_token(
            store, c, workspace["id"], subject, body.name, secret, expires_at=expires, role=token_role
        )
        return 201, {**token_view(token), "secret": secret}

    return mutate(
        request, principal, workspace["id"], "token.create", subject, body.model_dump(), perform, secret_response=True
    )


@router.delete(
    "/v1/workspaces/{ws}/tokens/{token_id}", status_code=200, response_model=m.Token, responses=ERRORS, tags=["tokens"]
)
def revoke_token(request: Request, principal: Caller, ws: str, token_id: str) -> JSONResponse:
    workspace, role = authorize(request, principal, ws, "token.revoke", token_id)
    store = get_store(request)
    token = store.token_in_workspace(token_id, workspace["id"])
    if token is None:
        raise not_found("token", token_id)
    subject_role = store.role_of(workspace["id"], token["subject_id"]) if token["subject_kind"] == "user" else None
    if token["subject_id"] != principal.id and (
        role not in ("owner", "admin") or (subject_role is not None and not access.may_grant(role, subject_role))
    ):
        raise deny(
            request,
            principal,
            workspace["id"],
            "token.revoke",
            token_id,
            "insufficient_role",
            "only owners and admins revoke other people's tokens",
        )

    def perform(c: Any) -> tuple[int, dict]:
        return 200, token_view(access_changes.revoke_token(store, c, workspace, token_id))

    return mutate(request, principal, workspace["id"], "token.revoke", token_id, {"token_id": token_id}, perform)


# -- projects, apps, environments ------------------------------------------------------------------------------
def _start_operation(
    request: Request,
    principal: Principal,
    workspace_id: str,
    kind: str,
    params: dict,
    target: str,
) -> JSONResponse:
    """Create the operation (202), unless the name is taken (tenancy.start_create)."""
    store = get_store(request)

    def perform(c: Any) -> tuple[int, dict]:
        op = tenancy.start_create(
            store, c, origin(request, principal), workspace_id=workspace_id, kind=kind, params=params, target=target
        )
        return 202, op_view(op)

    return mutate(request, principal, workspace_id, kind, target, params, perform, notify_op=True)


def _project(request: Request, workspace: dict, ref: str) -> dict:
    project = get_store(request).project(workspace["id"], ref)
    if project is None:
        raise not_found("project", ref)
    return project


def readable_app(request: Request, principal: Principal, ws: str, prj: str, app: str, action: str) -> dict:
    """The app at ws/prj/app, after checking `action` against it (a runtime identity may read only its own app)."""
    workspace, _ = _workspace(get_store(request), principal, ws)
    found = _app(request, _project(request, workspace, prj), app)
    authorize(request, principal, ws, action, app, app_id=found["id"])
    return found


def readable_environment(
    request: Request, principal: Principal, ws: str, prj: str, app: str, env: str, action: str
) -> dict:
    """The environment `env` of the app at ws/prj/app (its row, plus the app under "app"), after checking `action`."""
    found = readable_app(request, principal, ws, prj, app, action)
    environment = get_store(request).environment(found["id"], env)
    if environment is None:
        raise not_found("environment", env)
    return {**environment, "app": found}


def mutable_environment(
    request: Request, principal: Principal, ws: str, prj: str, app: str, env: str, action: str
) -> tuple[dict, dict]:
    """(workspace, environment) for a mutation `action` on an environment. Authorized first, so a refusal by role is
    audited like every other denied mutation, even for an environment that does not exist."""
    workspace, _ = authorize(request, principal, ws, action, f"{app}/{env}")
    return workspace, readable_environment(request, principal, ws, prj, app, env, "app.read")


def _app(request: Request, project: dict, ref: str) -> dict:
    app = get_store(request).app(project["id"], ref)
    if app is None:
        raise not_found("app", ref)
    return app


@router.get("/v1/workspaces/{ws}/projects", response_model=m.Page[m.Project], responses=READ_ERRORS, tags=["projects"])
def list_projects(
    request: Request, principal: Caller, ws: str, limit: Limit = 50, cursor: Cursor = None, order: Order = "oldest"
) -> dict:
    workspace, _ = authorize(request, principal, ws, "project.read", ws)
    newest = order == "newest"
    rows = get_store(request).projects_page(workspace["id"], limit=limit, cursor=cursor, newest_first=newest)
    return page(rows, limit)


@router.post(
    "/v1/workspaces/{ws}/projects", status_code=202, response_model=m.Operation, responses=ERRORS, tags=["projects"]
)
def create_project(request: Request, principal: Caller, ws: str, body: m.ProjectCreate) -> JSONResponse:
    workspace, _ = authorize(request, principal, ws, "project.create", body.name)
    return _start_operation(
        request,
        principal,
        workspace["id"],
        "project.create",
        {"name": body.name},
        body.name,
    )


@router.get("/v1/workspaces/{ws}/projects/{prj}", response_model=m.Project, responses=READ_ERRORS, tags=["projects"])
def get_project(request: Request, principal: Caller, ws: str, prj: str) -> dict:
    workspace, _ = authorize(request, principal, ws, "project.read", prj)
    return _project(request, workspace, prj)


@router.get(
    "/v1/workspaces/{ws}/projects/{prj}/apps", response_model=m.Page[m.App], responses=READ_ERRORS, tags=["apps"]
)
def list_apps(
    request: Request,
    principal: Caller,
    ws: str,
    prj: str,
    limit: Limit = 50,
    cursor: Cursor = None,
    order: Order = "oldest",
) -> dict:
    workspace, _ = authorize(request, principal, ws, "app.read", prj)
    project = _project(request, workspace, prj)
    newest = order == "newest"
    rows = get_store(request).apps_page(project["id"], limit=limit, cursor=cursor, newest_first=newest)
    return page(rows, limit)


@router.post(
    "/v1/workspaces/{ws}/projects/{prj}/apps",
    status_code=202,
    response_model=m.Operation,
    responses=ERRORS,
    tags=["apps"],
)
def create_app_(request: Request, principal: Caller, ws: str, prj: str, body: m.AppCreate) -> JSONResponse:
    workspace, _ = authorize(request, principal, ws, "app.create", f"{prj}/{body.name}")
    project = _project(request, workspace, prj)
    params = {
        "name": body.name,
        "project_id": project["id"],
        "environments": {k: v.model_dump() for k, v in body.environments.items()},
    }
    return _start_operation(
        request,
        principal,
        workspace["id"],
        "app.create",
        params,
        f"{project['name']}/{body.name}",
    )


@router.get("/v1/workspaces/{ws}/projects/{prj}/apps/{app}", response_model=m.App, responses=READ_ERRORS, tags=["apps"])
def get_app(request: Request, principal: Caller, ws: str, prj: str, app: str) -> dict:
    return readable_app(request, principal, ws, prj, app, "app.read")


@router.post(
    "/v1/workspaces/{ws}/projects/{prj}/apps/{app}/runtime-identities",
    status_code=201,
    response_model=m.RuntimeIdentityCreated,
    responses=ERRORS,
    tags=["apps"],
)
def create_runtime_identity(request: Request, principal: Caller, ws: str, prj: str, app: str) -> JSONResponse:
    workspace, _ = authorize(request, principal, ws, "runtime_identity.create", f"{prj}/{app}")
    found = _app(request, _project(request, workspace, prj), app)
    store = get_store(request)
    secret = new_secret()

    def perform(c: Any) -> tuple[int, dict]:
        identity, token = access_changes.create_runtime_identity(store, c, workspace["id"], found["id"], app, secret)
        return 201, {**identity, "token": {**token_view(token), "secret": secret}}

    return mutate(
        request,
        principal,
        workspace["id"],
        "runtime_identity.create",
        f"{prj}/{app}",
        {"app": app},
        perform,
        secret_response=True,
    )


@router.get(
    "/v1/workspaces/{ws}/projects/{prj}/apps/{app}/environments",
    response_model=m.Page[m.Environment],
    responses=READ_ERRORS,
    tags=["environments"],
)
def list_environments(
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
    found = readable_app(request, principal, ws, prj, app, "environment.read")
    newest = order == "newest"
    rows = store.environments_page(found["id"], limit=limit, cursor=cursor, newest_first=newest)
    return page(rows, limit, env_view)


@router.post(
    "/v1/workspaces/{ws}/projects/{prj}/apps/{app}/environments",
    status_code=202,
    response_model=m.Operation,
    responses=ERRORS,
    tags=["environments"],
)
def create_environment(
    request: Request, principal: Caller, ws: str, prj: str, app: str, body: m.EnvironmentCreate
) -> JSONResponse:
    workspace, _ = authorize(request, principal, ws, "environment.create", f"{prj}/{app}/{body.name}")
    found = _app(request, _project(request, workspace, prj), app)
    params = {
        "name": body.name,
        "app_id": found["id"],
        "approval_required": body.approval_required,
        "frozen": body.frozen,
    }
    return _start_operation(
        request,
        principal,
        workspace["id"],
        "environment.create",
        params,
        f"{prj}/{app}/{body.name}",
    )


@router.get(
    "/v1/workspaces/{ws}/projects/{prj}/apps/{app}/environments/{env}",
    response_model=m.Environment,
    responses=READ_ERRORS,
    tags=["environments"],
)
def get_environment(request: Request, principal: Caller, ws: str, prj: str, app: str, env: str) -> dict:
    environment = readable_environment(request, principal, ws, prj, app, env, "environment.read")
    del environment["app"]
    return env_view(environment)


# -- operations ------------------------------------------------------------------------------------------------------
@router.get(
    "/v1/workspaces/{ws}/operations", response_model=m.Page[m.Operation], responses=READ_ERRORS, tags=["operations"]
)
def list_operations(
    request: Request,
    principal: Caller,
    ws: str,
    limit: Limit = 50,
    cursor: Cursor = None,
    state: str | None = None,
    kind: str | None = None,
    order: Order = "oldest",
) -> dict:
    workspace, _ = authorize(request, principal, ws, "operation.read", ws)
    rows = get_store(request).operations_page(
        workspace["id"],
        state=state or None,
        kind=kind or None,
        limit=limit,
        cursor=cursor,
        newest_first=order == "newest",
    )
    return page(rows, limit, op_view)


def _readable_operation(request: Request, principal: Principal, op_id: str) -> dict:
    store = get_store(request)
    op = store.operation(op_id)
    if op is None:
        raise not_found("operation", op_id)
    if principal.kind == "runtime":
        access.require(principal, "operation.read", None, app_id=op["target_id"])
    else:
        access.require(principal, "operation.read", member_role(store, principal, op["workspace_id"]))
    return op


@router.get("/v1/operations/{op_id}", response_model=m.Operation, responses=READ_ERRORS, tags=["operations"])
async def get_operation(
    request: Request,
    principal: Caller,
    op_id: str,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for a change (long-poll).")] = 0,
    after_version: Annotated[int | None, Query(ge=0, description="Answer once version exceeds this.")] = None,
) -> dict:
    op = _readable_operation(request, principal, op_id)
    if wait and op["state"] not in NOT_RUNNABLE:
        baseline = op["version"] if after_version is None else after_version
        deadline = time.monotonic() + wait
        notifier = request.app.state.notifier
        store = get_store(request)
        with notifier.watch(op_id) as watch:
            # Read again once watching: a change committed since the first read would otherwise wake nobody.
            op = store.operation(op_id) or op
            while op["version"] <= baseline and op["state"] not in NOT_RUNNABLE:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await notifier.wait_for_change(watch, remaining)
                op = store.operation(op_id) or op
    return op_view(op)
