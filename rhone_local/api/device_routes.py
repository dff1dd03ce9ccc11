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
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from rhone_local.api import models as m
from rhone_local.api.routes import ERRORS, Caller, get_store
from rhone_local.domain.access import DEVICE_CODE, REFRESH_TOKEN, Principal, hash_token, new_secret
from rhone_local.domain.errors import DomainError

router = APIRouter()
EXPIRES_SECONDS = 600
INTERVAL_SECONDS = 1
ACCESS_SECONDS = 3600
REFRESH_DAYS = 30
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels (no words), no look-alikes
_USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")
MAX_FORM_BYTES = 4096


def _at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> str:
    return _at(0)


def normalize_user_code(text: str) -> str | None:
    """`bcdf ghjk`, `BCDFGHJK`, `bcdf-ghjk` → `BCDF-GHJK`; None if it cannot be a user code."""
    letters = re.sub(r"[\s-]", "", text).upper()
    code = f"{letters[:4]}-{letters[4:]}"
    return code if _USER_CODE.match(code) else None


def _user_code() -> str:
    letters = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
    return f"{letters[:4]}-{letters[4:]}"


# -- the CLI's side ----------------------------------------------------------------------------------------------------
@router.post(
    "/v1/device/code", response_model=m.DeviceCode, responses={k: ERRORS[k] for k in (400, 422)}, tags=["login"]
)
def start_device_login(request: Request, body: m.DeviceCodeRequest) -> dict:
    device_code = new_secret(DEVICE_CODE)
    row = get_store(request).create_device_code(
        device_code_hash=hash_token(device_code),
        user_code=_user_code(),
        client_name=body.client_name,
        expires_at=_at(EXPIRES_SECONDS),
    )
    page = str(request.url_for("device_page"))
    return {
        "device_code": device_code,
        "user_code": row["user_code"],
        "verification_uri": page,
        "verification_uri_complete": f"{page}?code={row['user_code']}",
        "expires_in": EXPIRES_SECONDS,
        "interval": INTERVAL_SECONDS,
    }


@router.post("/v1/device/token", response_model=m.TokenPair, responses=ERRORS, tags=["login"])
def finish_device_login(request: Request, body: m.DeviceTokenRequest) -> dict:
    store = get_store(request)
    code = store.device_code(device_code_hash=hash_token(body.device_code))
    if code is None or code["state"] == "issued":
        raise DomainError("invalid_grant", "unknown device code, or its tokens were already issued", 400)
    if code["expires_at"] <= _now():
        raise DomainError("expired_token", "the device code expired before it was approved; start again", 400)
    if code["state"] == "denied":
        raise DomainError("access_denied", "the login was denied on the approval page", 400)
    if not store.note_device_poll(code["id"], time.time(), INTERVAL_SECONDS * 0.8):
        raise DomainError("slow_down", f"poll at most every {INTERVAL_SECONDS} s", 400, {"interval": INTERVAL_SECONDS})
    if code["state"] == "pending":
        raise DomainError("authorization_pending", "waiting for the approval page", 400)
    pair = _new_pair()
    issued = store.issue_device_tokens(code, **pair["hashes"])
    if issued is None:
        raise DomainError("invalid_grant", "the tokens of this device code were already issued", 400)
    return pair["answer"]


@router.post("/v1/token/refresh", response_model=m.TokenPair, responses=ERRORS, tags=["login"])
def refresh_token(request: Request, body: m.RefreshRequest) -> dict:
    pair = _new_pair()
    hashes = pair["hashes"]
    refreshed = get_store(request).refresh(
        hash_token(body.refresh_token),
        access_hash=hashes["access_hash"],
        new_refresh_hash=hashes["refresh_hash"],
        access_expires=hashes["access_expires"],
        refresh_expires=hashes["refresh_expires"],
    )
    if refreshed is None:
        raise DomainError("invalid_grant", "the refresh token is unknown, used, expired or revoked; log in again", 401)
    return pair["answer"]


def _new_pair() -> dict[str, Any]:
    access, refresh = new_secret(), new_secret(REFRESH_TOKEN)
    access_expires, refresh_expires = _at(ACCESS_SECONDS), _at(REFRESH_DAYS * 86400)
    return {
        "hashes": {
            "access_hash": hash_token(access),
            "refresh_hash": hash_token(refresh),
            "access_expires": access_expires,
            "refresh_expires": refresh_expires,
        },
        "answer": {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": ACCESS_SECONDS,
            "expires_at": access_expires,
            "refresh_token": refresh,
        },
    }


# -- the approver's side -----------------------------------------------------------------------------------------------
def decide(request: Request, principal: Principal, user_code: str, approve: bool) -> dict:
    """Approve or deny a pending device login as `principal` (a user, never a runtime identity)."""
    if principal.kind != "user":
        raise DomainError("runtime_identity_forbidden", "a runtime identity cannot approve a login", 403)
    store = get_store(request)
    normalized = normalize_user_code(user_code)
    code = store.device_code(user_code=normalized) if normalized else None
    if code is None:
        raise DomainError("not_found", f"no login is waiting for the code {user_code!r}", 404)
    state = "approved" if approve else "denied"
    decided = store.decide_device_code(
        code["id"], state, user_id=principal.id, workspace_id=principal.workspace_id, role=principal.role
    )
    if code["expires_at"] <= _now() or not decided:
        raise DomainError("device_code_closed", "that login was already decided, or its code expired", 409)
    return {"user_code": code["user_code"], "state": state, "client_name": code["client_name"]}


@router.post("/v1/device/approve", response_model=m.DeviceDecision, responses=ERRORS, tags=["login"])
def approve_device_login(request: Request, principal: Caller, body: m.DeviceApproval) -> dict:
    return decide(request, principal, body.user_code, body.approve)


@router.get("/device", response_class=HTMLResponse, include_in_schema=False, name="device_page")
def device_page(request: Request, code: str = "") -> HTMLResponse:
    user_code = normalize_user_code(code) or ""
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
