"""Device login (RFC 8628) and token refresh, without HTTP: the rules of the grant (docs/security.md).

The API's device routes (`rhone_local/api/device_routes.py`) parse, call one of these and render; each raises a
`DomainError` with the grant's error code (`authorization_pending`, `slow_down`, `access_denied`, `expired_token`,
`invalid_grant`, `device_code_closed`, …). Device codes, user codes and refresh tokens are stored as hashes or
single-use values.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from rhone_local.domain.access import DEVICE_CODE, REFRESH_TOKEN, Principal, hash_token, new_secret
from rhone_local.domain.errors import DomainError
from rhone_local.store import Store

EXPIRES_SECONDS = 600
INTERVAL_SECONDS = 1
ACCESS_SECONDS = 3600
REFRESH_DAYS = 30
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels (no words), no look-alikes
_USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")


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


def start(store: Store, client_name: str, page: str) -> dict[str, Any]:
    """A new pending login: the CLI keeps the device code, the person types the user code on `page`."""
    device_code = new_secret(DEVICE_CODE)
    row = store.create_device_code(
        device_code_hash=hash_token(device_code),
        user_code=_user_code(),
        client_name=client_name,
        expires_at=_at(EXPIRES_SECONDS),
    )
    return {
        "device_code": device_code,
        "user_code": row["user_code"],
        "verification_uri": page,
        "verification_uri_complete": f"{page}?code={row['user_code']}",
        "expires_in": EXPIRES_SECONDS,
        "interval": INTERVAL_SECONDS,
    }


def finish(store: Store, device_code: str) -> dict[str, Any]:
    """The CLI's poll: the tokens once the login was approved, else the grant's error for where it stands."""
    code = store.device_code(device_code_hash=hash_token(device_code))
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


def refresh(store: Store, refresh_token: str) -> dict[str, Any]:
    """A new pair for a refresh token, which is used up (a second use is refused)."""
    pair = _new_pair()
    hashes = pair["hashes"]
    refreshed = store.refresh(
        hash_token(refresh_token),
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


def decide(store: Store, principal: Principal, user_code: str, approve: bool) -> dict[str, Any]:
    """Approve or deny a pending device login as `principal` (a user: the router refuses a runtime identity)."""
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
