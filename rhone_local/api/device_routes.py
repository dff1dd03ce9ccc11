"""Device login (RFC 8628) and token refresh: how `rhone login` gets a token without pasting one.

1. The CLI asks for a code (`POST /v1/device/code`, no token): it keeps the secret device code and shows the person
   a short user code and the approval page's address.
2. The person opens `/device` in a browser, checks that the code is the one their terminal shows, proves who they
   are with one of their tokens (Rhone Local has no browser sessions), and approves or denies. An API client can do
   the same with `POST /v1/device/approve`.
3. The CLI polls `POST /v1/device/token` every `interval` seconds: `authorization_pending` until then, `slow_down` if
   it polls faster, `access_denied`, `expired_token` after EXPIRES_SECONDS, or the tokens: an access token that
   expires after ACCESS_SECONDS and a refresh token, used once at `POST /v1/token/refresh` for a new pair.

Device codes, user codes and refresh tokens are stored as hashes or single-use values; nothing here is audited in a
workspace (it is not a workspace mutation), but every token it issues is listed with the user's tokens.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from rhone_local.api import models as m
from rhone_local.api.routes import ERRORS, Caller, get_store
from rhone_local.domain.access import Principal, hash_token
from rhone_local.domain.errors import DomainError
from rhone_local.operations import device_login

router = APIRouter()
MAX_FORM_BYTES = 4096


# -- the CLI's side ----------------------------------------------------------------------------------------------------
@router.post(
    "/v1/device/code", response_model=m.DeviceCode, responses={k: ERRORS[k] for k in (400, 422)}, tags=["login"]
)
def start_device_login(request: Request, body: m.DeviceCodeRequest) -> dict:
    return device_login.start(get_store(request), body.client_name, str(request.url_for("device_page")))


@router.post("/v1/device/token", response_model=m.TokenPair, responses=ERRORS, tags=["login"])
def finish_device_login(request: Request, body: m.DeviceTokenRequest) -> dict:
    return device_login.finish(get_store(request), body.device_code)


@router.post("/v1/token/refresh", response_model=m.TokenPair, responses=ERRORS, tags=["login"])
def refresh_token(request: Request, body: m.RefreshRequest) -> dict:
    return device_login.refresh(get_store(request), body.refresh_token)


# -- the approver's side -----------------------------------------------------------------------------------------------
def decide(request: Request, principal: Principal, user_code: str, approve: bool) -> dict:
    """Approve or deny a pending device login as `principal`, who must be a user (never a runtime identity)."""
    if principal.kind != "user":
        raise DomainError("runtime_identity_forbidden", "a runtime identity cannot approve a login", 403)
    return device_login.decide(get_store(request), principal, user_code, approve)


@router.post("/v1/device/approve", response_model=m.DeviceDecision, responses=ERRORS, tags=["login"])
def approve_device_login(request: Request, principal: Caller, body: m.DeviceApproval) -> dict:
    return decide(request, principal, body.user_code, body.approve)


@router.get("/device", response_class=HTMLResponse, include_in_schema=False, name="device_page")
def device_page(request: Request, code: str = "") -> HTMLResponse:
    user_code = device_login.normalize_user_code(code) or ""
    row = get_store(request).device_code(user_code=user_code) if user_code else None
    client = row["client_name"] if row and row["state"] == "pending" else ""
    return HTMLResponse(_page(user_code=user_code, client=client))


@router.post("/device", response_class=HTMLResponse, include_in_schema=False)
async def device_page_decide(request: Request) -> HTMLResponse:
    """The form's answer. The body is read by hand (urlencoded, bounded): no form-parsing dependency for one form."""
    body = await request.body()
    fields = {k: v[0] for k, v in parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace")).items()}
    user_code = fields.get("user_code", "")
    principal = get_store(request).principal_for_token(hash_token(fields.get("token", "").strip()))
    if principal is None:
        return HTMLResponse(_page(user_code=user_code, error="That token is not valid."), status_code=401)
    try:
        decided = decide(request, principal, user_code, fields.get("action") == "approve")
    except DomainError as error:
        return HTMLResponse(_page(user_code=user_code, error=error.message), status_code=error.status)
    return HTMLResponse(_done(decided))


_STYLE = (
    "body{font:16px system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem}"
    "input{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.2rem 0 1rem}"
    "button{font:inherit;padding:.5rem 1.2rem;margin-right:.6rem}.error{color:#b00}"
    "#user_code{font-size:1.4rem;letter-spacing:.15em}"
)


def _page(*, user_code: str, error: str = "", client: str = "") -> str:
    problem = f'<p class="error" id="error">{html.escape(error)}</p>' if error else ""
    who = f"<code>{html.escape(client)}</code>" if client else "A <code>rhone</code> command"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rhone Local: approve a login</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head>
<body><h1>Approve a login</h1>
<p>{who} is asking to act as you on this Rhone Local. Approve only if the code below is the one your terminal
shows.</p>{problem}
<form method="post" action="/device">
<label for="user_code">Code from your terminal</label>
<input id="user_code" name="user_code" value="{html.escape(user_code)}" autocomplete="off" required>
<label for="token">Your API token (for example from <code>rhone auth token</code>, or the owner.token file)</label>
<input id="token" name="token" type="password" autocomplete="off" required>
<button id="approve" name="action" value="approve" type="submit">Approve</button>
<button id="deny" name="action" value="deny" type="submit">Deny</button>
</form></body></html>
"""


def _done(decided: dict) -> str:
    verb = "approved" if decided["state"] == "approved" else "denied"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rhone Local: login {verb}</title><style>{_STYLE}</style></head>
<body><h1 id="result">Login {verb}</h1>
<p>The login of <code>{html.escape(decided["client_name"])}</code> with code <code>{decided["user_code"]}</code> was
{verb}. You can close this page and return to your terminal.</p></body></html>
"""
