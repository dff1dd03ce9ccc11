"""Login, logout and identity."""

from __future__ import annotations

from typing import Any

from rhone_cli.config.credentials import validate_token
from rhone_cli.errors import ExitCode, RhoneError
from rhone_cli.invocation import Invocation


def fetch_identity(inv: Invocation, token: str) -> dict[str, Any]:
    """Ask the API who `token` belongs to."""
    with inv.new_client(inv.profile.api_url, token) as client:
        response = inv.api_for(client).whoami()
    if not isinstance(response.data, dict):
        raise RhoneError(
            f"{inv.profile.api_url} answered the identity request without a JSON object; is this a Rhone API?",
            code="bad_response",
            exit_code=ExitCode.FAILED,
            request_id=response.request_id,
        )
    return response.data


def login(
    inv: Invocation,
    token: str,
    *,
    verify: bool,
    insecure_storage: bool,
    refresh_token: str | None = None,
    expires_at: str | None = None,
) -> dict[str, Any]:
    token = validate_token(token)
    inv.env.secrets.add(token)
    profile = inv.profile
    identity = fetch_identity(inv, token) if verify else None
    store = inv.credentials.store(profile, token, insecure_storage=insecure_storage, refresh_token=refresh_token)
    profile.credential_store = store
    profile.token_expires_at = expires_at
    if identity and not profile.workspace:
        workspaces = identity.get("workspaces") or []
        if len(workspaces) == 1 and isinstance(workspaces[0], dict):
            profile.workspace = workspaces[0].get("name")
    inv.credentials.profiles.save(profile, make_current=True)
    return {
        "profile": profile.name,
        "api_url": profile.api_url,
        "credential_store": store,
        "credentials_file": str(inv.credentials.file.path) if store == "file" else None,
        "verified": verify,
        "identity": identity,
        "expires_at": expires_at,
    }


def logout(inv: Invocation) -> dict[str, Any]:
    # The stored profile, not inv.profile: that one carries --api-url / RHONE_API_URL overrides, which a logout
    # must not write into config.toml.
    profile = inv.credentials.profiles.get(inv.profile_name)
    removed = inv.credentials.forget(profile)
    if profile.saved and profile.credential_store is not None:
        profile.credential_store = None
        inv.credentials.profiles.save(profile)
    return {"profile": profile.name, "removed_from": removed}


def status(inv: Invocation) -> dict[str, Any]:
    profile = inv.profile
    credential = inv.credential(required=True)
    identity = fetch_identity(inv, credential.token or "")
    return {
        "profile": profile.name,
        "api_url": profile.api_url,
        "workspace": profile.workspace,
        "credential_source": credential.source,
        "credentials_file": str(inv.credentials.file.path) if credential.source == "file" else None,
        "identity": identity,
    }


# -- device login -----------------------------------------------------------------------------------------------------
DENIED_OR_GONE = {
    "access_denied": "the login was denied on the approval page",
    "expired_token": "the code expired before anyone approved it",
    "invalid_grant": "the server no longer knows this login",
}


def device_login(inv: Invocation, *, insecure_storage: bool, open_browser: bool) -> dict[str, Any]:
    """RFC 8628: get a code, show where to approve it, poll until the approval page answers, then store the tokens
    (an access token that expires, and its refresh token) like `login`."""
    import socket
    import time

    api_url = inv.profile.api_url
    with inv.new_client(api_url, None) as client:
        api = inv.api_for(client)
        started = api.device_code(f"rhone on {socket.gethostname()}"[:100])
        _show_code(inv, started, open_browser=open_browser)
        interval = max(1, int(started.get("interval") or 5))
        deadline = time.monotonic() + float(started.get("expires_in") or 600)
        while True:
            time.sleep(interval)  # RFC 8628 §3.5: the client polls at the interval the server asked for
            try:
                tokens = api.device_token(started["device_code"])
                break
            except RhoneError as error:
                if error.code == "slow_down":
                    interval += 1
                elif error.code in DENIED_OR_GONE:
                    raise _login_failed(DENIED_OR_GONE[error.code], error.code) from None
                elif error.code != "authorization_pending":
                    raise
            if time.monotonic() > deadline:
                raise _login_failed(DENIED_OR_GONE["expired_token"], "expired_token")
    return login(
        inv,
        tokens["access_token"],
        verify=True,
        insecure_storage=insecure_storage,
        refresh_token=tokens["refresh_token"],
        expires_at=tokens["expires_at"],
    )


def _show_code(inv: Invocation, started: dict[str, Any], *, open_browser: bool) -> None:
    """Where and what to approve: on stderr even with --quiet (nothing happens until someone does)."""
    from rhone_cli.output import sanitize_terminal

    url, code = sanitize_terminal(str(started["verification_uri_complete"])), sanitize_terminal(started["user_code"])
    inv.env.stderr.write(
        f"To log in, open {url}\nand check that it shows the code {code} (valid for "
        f"{int(started.get('expires_in') or 600) // 60} minutes). Waiting for the approval…\n"
    )
    inv.env.stderr.flush()
    if open_browser and inv.env.stderr_isatty and inv.env.stdin_isatty:
        import contextlib
        import webbrowser

        with contextlib.suppress(webbrowser.Error):  # the address is printed above
            webbrowser.open_new_tab(str(started["verification_uri_complete"]))


def _login_failed(message: str, code: str) -> RhoneError:
    return RhoneError(
        f"login failed: {message}",
        code=code,
        exit_code=ExitCode.AUTH,
        hint="run `rhone login` again for a new code",
    )
