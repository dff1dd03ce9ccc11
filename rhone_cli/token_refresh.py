"""Expiring tokens: refreshed before a run's first request when they are about to expire, and once more when the
server says one expired (the HTTP client asks through `on_token_expired`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rhone_cli.errors import RhoneError

if TYPE_CHECKING:
    from rhone_cli.invocation import Invocation

REFRESH_MARGIN_SECONDS = 60


def fresh_credential(inv: Invocation, credential: Any) -> Any:
    """The stored credential, refreshed first when it expires within a minute (and a refresh token is kept)."""
    from datetime import UTC, datetime

    if credential.source not in ("keyring", "file") or not credential.expires_at:
        return credential
    try:
        expires = datetime.fromisoformat(credential.expires_at.replace("Z", "+00:00"))
    except ValueError:
        return credential
    if (expires - datetime.now(UTC)).total_seconds() > REFRESH_MARGIN_SECONDS:
        return credential
    return refresh(inv) or credential


def refresh(inv: Invocation) -> Any:
    """A new access token from the stored refresh token (which is replaced: each is used once), stored like the old
    one; None when there is no refresh token or the server refuses it (the caller's request then fails as 401)."""
    from rhone_cli.config.credentials import Credential

    credentials = inv.credentials
    profile = credentials.profiles.get(inv.profile_name)  # the stored profile: no --api-url override is saved
    refresh_token = credentials.refresh_token(profile)
    if not refresh_token:
        return None
    try:
        with inv.new_client(inv.profile.api_url, None) as client:
            tokens = inv.api_for(client).refresh_token(refresh_token)
    except RhoneError as error:
        inv.out.debug(f"token refresh failed: {error.code}")
        return None
    store = credentials.store(
        profile,
        tokens["access_token"],
        insecure_storage=profile.credential_store == "file",
        refresh_token=tokens["refresh_token"],
    )
    profile.credential_store, profile.token_expires_at = store, tokens["expires_at"]
    if profile.saved:
        credentials.profiles.save(profile)
    return Credential(tokens["access_token"], store, tokens["expires_at"])
