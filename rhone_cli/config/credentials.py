"""Where API tokens come from and where `rhone login` keeps them.

Resolution order for a command: `--token`, then `RHONE_TOKEN`, then the profile's stored credential — the OS
keyring, or the 0600 credentials file when no keyring works (headless Linux, CI). The file fallback prints one
warning naming the file, and the profile remembers `credential_store = "file"` so later commands go straight to the
file without probing the keyring again. keyring is imported only when a stored credential is actually needed: it
costs ~100 ms and can hang on a D-Bus session without a Secret Service, so every call runs under a timeout.

Token values are registered with the environment's secret list the moment they are read, so the output module
masks them everywhere.
"""

from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rhone_cli.config.profiles import Profile, ProfileStore, atomic_write, config_dir
from rhone_cli.errors import ExitCode, RhoneError

if TYPE_CHECKING:
    from rhone_cli.environment import Environment
    from rhone_cli.output import Output

KEYRING_SERVICE = "rhone"
KEYRING_TIMEOUT_SECONDS = 5.0


class KeyringUnavailable(Exception):
    """No working OS keyring: no backend, a broken backend, or one that did not answer in time."""


def validate_token(token: str) -> str:
    token = token.strip()
    if not token:
        raise RhoneError("the token is empty", code="invalid_token", exit_code=ExitCode.USAGE)
    if any(ch.isspace() or ord(ch) < 32 for ch in token):
        raise RhoneError(
            "the token contains whitespace or control characters",
            code="invalid_token",
            exit_code=ExitCode.USAGE,
            hint="pass exactly one token on stdin",
        )
    return token


# -- keyring ------------------------------------------------------------------------------------------------------
def _keyring_call(method: str, *args: str) -> Any:
    """Call keyring.<method>(*args) in a worker thread; any failure or a hang means 'no usable keyring'."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            import keyring

            outcome["value"] = getattr(keyring, method)(*args)
        except Exception as error:  # noqa: BLE001 - any backend failure (even ModuleNotFoundError) = unusable
            outcome["error"] = error

    worker = threading.Thread(target=work, name="rhone-keyring", daemon=True)
    worker.start()
    worker.join(KEYRING_TIMEOUT_SECONDS)
    if worker.is_alive():
        raise KeyringUnavailable(f"the OS keyring did not answer within {KEYRING_TIMEOUT_SECONDS:g}s")
    if "error" in outcome:
        error = outcome["error"]
        if method == "delete_password" and type(error).__name__ == "PasswordDeleteError":
            return None
        # keyring's messages run to paragraphs; the first sentence names the problem.
        reason = str(error).split("\n")[0].split(". ")[0] or type(error).__name__
        raise KeyringUnavailable(f"{type(error).__name__}: {reason}")
    return outcome.get("value")


# -- credentials file ---------------------------------------------------------------------------------------------
class CredentialsFile:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "credentials.toml"

    def _read(self) -> dict:
        try:
            with self.path.open("rb") as handle:
                return tomllib.load(handle)
        except FileNotFoundError:
            return {}
        except tomllib.TOMLDecodeError:
            raise RhoneError(
                f"{self.path} is not valid TOML",
                code="invalid_credentials_file",
                exit_code=ExitCode.USAGE,
                hint="delete it and run `rhone login` again",
            ) from None

    def get(self, profile: str) -> str | None:
        return self._read().get("profiles", {}).get(profile, {}).get("token")

    def set(self, profile: str, token: str) -> None:
        import tomli_w

        data = self._read()
        data.setdefault("profiles", {})[profile] = {"token": token}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, tomli_w.dumps(data), mode=0o600)

    def delete(self, profile: str) -> bool:
        import tomli_w

        data = self._read()
        if profile not in data.get("profiles", {}):
            return False
        del data["profiles"][profile]
        atomic_write(self.path, tomli_w.dumps(data), mode=0o600)
        return True


@dataclass
class Credential:
    token: str | None
    source: str | None  # "flag" | "env" | "keyring" | "file" | None
    expires_at: str | None = None  # of a stored token that expires (device login)


def refresh_key(profile: Profile) -> str:
    """Where a profile's refresh token is kept, beside its token (keyring user name, or credentials-file entry)."""
    return f"{profile.name}:refresh"


class Credentials:
    """Token lookup and storage for one invocation."""

    def __init__(self, env: Environment, out: Output) -> None:
        self.env = env
        self.out = out
        self.directory = config_dir(env.environ)
        self.profiles = ProfileStore(self.directory)
        self.file = CredentialsFile(self.directory)

    def _register(self, token: str | None) -> str | None:
        if token:
            self.env.secrets.add(token)
        return token

    def _keyring_usable_here(self) -> str | None:
        """Why the keyring is skipped without trying it, or None to try it."""
        if self.env.is_ci:
            return "CI is set (no keyring is used in CI)"
        return None

    def _warn_file_fallback(self, reason: str) -> None:
        self.out.warn(
            f"no usable OS keyring ({reason}); the token is stored in plain text in {self.file.path} "
            f"(readable only by you, mode 0600)",
            once="credentials-file",
        )

    def resolve(self, profile: Profile) -> Credential:
        if self.env.options.token:
            return Credential(self._register(validate_token(self.env.options.token)), "flag")
        if self.env.environ.get("RHONE_TOKEN"):
            return Credential(self._register(validate_token(self.env.environ["RHONE_TOKEN"])), "env")
        token, source = self._stored(profile, profile.name)
        return Credential(self._register(token), source, profile.token_expires_at if token else None)

    def refresh_token(self, profile: Profile) -> str | None:
        """The refresh token stored with the profile's token (device login), if any."""
        return self._register(self._stored(profile, refresh_key(profile))[0])

    def _stored(self, profile: Profile, key: str) -> tuple[str | None, str | None]:
        if profile.credential_store == "keyring" and not self._keyring_usable_here():
            try:
                secret = _keyring_call("get_password", KEYRING_SERVICE, key)
                if secret:
                    return secret, "keyring"
            except KeyringUnavailable as error:
                self.out.warn(f"cannot read the token from the OS keyring: {error}", once="keyring-read")
        secret = self.file.get(key)
        return (secret, "file") if secret else (None, None)

    def require(self, profile: Profile) -> Credential:
        credential = self.resolve(profile)
        if credential.token is None:
            raise RhoneError(
                f"not logged in (profile {profile.name!r})",
                code="unauthenticated",
                exit_code=ExitCode.AUTH,
                hint="to run everything on this machine, start Rhone Local with `rhone local up` (it logs you in to "
                f"it); for a hosted API run `rhone login --profile {profile.name} --api-url URL`, or set RHONE_TOKEN",
            )
        return credential

    def store(
        self, profile: Profile, token: str, *, insecure_storage: bool = False, refresh_token: str | None = None
    ) -> str:
        """Keep the token (and the refresh token of a device login: a stale one is removed) for `profile`; returns
        the store used ("keyring" or "file")."""
        self._register(token)
        self._register(refresh_token)
        reason = "--insecure-storage was given" if insecure_storage else self._keyring_usable_here()
        if reason is None:
            try:
                _keyring_call("set_password", KEYRING_SERVICE, profile.name, token)
                if refresh_token:
                    _keyring_call("set_password", KEYRING_SERVICE, refresh_key(profile), refresh_token)
                elif _keyring_call("get_password", KEYRING_SERVICE, refresh_key(profile)):
                    _keyring_call("delete_password", KEYRING_SERVICE, refresh_key(profile))
                # A stale plain-text copy must not outlive a move to the keyring.
                self.file.delete(profile.name)
                self.file.delete(refresh_key(profile))
                return "keyring"
            except KeyringUnavailable as error:
                reason = str(error)
        self.file.set(profile.name, token)
        if refresh_token:
            self.file.set(refresh_key(profile), refresh_token)
        else:
            self.file.delete(refresh_key(profile))
        if insecure_storage:
            self.out.info(f"token stored in plain text in {self.file.path} (mode 0600)")
        else:
            self._warn_file_fallback(reason)
        return "file"

    def forget(self, profile: Profile) -> list[str]:
        """Remove the profile's stored token from every store; returns the stores it was removed from."""
        removed = []
        self.file.delete(refresh_key(profile))
        if self.file.delete(profile.name):
            removed.append("file")
        if profile.credential_store == "keyring" and not self._keyring_usable_here():
            try:
                if _keyring_call("get_password", KEYRING_SERVICE, refresh_key(profile)):
                    _keyring_call("delete_password", KEYRING_SERVICE, refresh_key(profile))
                if _keyring_call("get_password", KEYRING_SERVICE, profile.name):
                    _keyring_call("delete_password", KEYRING_SERVICE, profile.name)
                    removed.append("keyring")
            except KeyringUnavailable as error:
                self.out.warn(f"could not remove the token from the OS keyring: {error}")
        return removed
