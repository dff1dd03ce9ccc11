"""Login, logout and identity."""

from __future__ import annotations

from typing import Any

from rhone_cli.config.credentials import validate_token
from rhone_cli.errors import ExitCode, RhoneError
from rhone_cli.invocation import Invocation


def fetch_identity(inv: Invocation, token: str) -> dict[str, Any]:
    """Ask the API who `token` belongs to (`GET /v1/whoami`)."""
    with inv.new_client(inv.profile.api_url, token) as client:
        response = client.get("/v1/whoami")
    if not isinstance(response.data, dict):
        raise RhoneError(
            f"{inv.profile.api_url} answered /v1/whoami without a JSON object; is this a Rhone API?",
            code="bad_response",
            exit_code=ExitCode.FAILED,
            request_id=response.request_id,
        )
    return response.data


def login(inv: Invocation, token: str, *, verify: bool, insecure_storage: bool) -> dict[str, Any]:
    token = validate_token(token)
    inv.env.secrets.add(token)
    profile = inv.profile
    identity = fetch_identity(inv, token) if verify else None
    store = inv.credentials.store(profile, token, insecure_storage=insecure_storage)
    profile.credential_store = store
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
