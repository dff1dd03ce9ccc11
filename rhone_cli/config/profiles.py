"""Named profiles: which API, workspace and default project a command talks to.

Stored in `<config dir>/config.toml` (the platform config directory: `$XDG_CONFIG_HOME/rhone` or `~/.config/rhone`
on Linux, `~/Library/Application Support/rhone` on macOS, `%APPDATA%\\rhone` on Windows; `RHONE_CONFIG_DIR`
overrides it). Tokens are never stored here — see `credentials.py`.

    current_profile = "default"

    [profiles.default]
    api_url = "https://api.rhone.dev"
    workspace = "acme"
    credential_store = "keyring"
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from rhone_cli.errors import ExitCode, RhoneError

DEFAULT_PROFILE = "default"
DEFAULT_API_URL = "http://127.0.0.1:8470"  # Rhone Local's default port: the embedded default works offline.
PROFILE_KEYS = ("api_url", "workspace", "project", "credential_store", "token_expires_at")


def config_dir(environ: dict[str, str]) -> Path:
    """The platform config directory for rhone, computed from the invocation's environment."""
    override = environ.get("RHONE_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    if sys.platform == "win32":
        return Path(environ.get("APPDATA") or home / "AppData" / "Roaming") / "rhone"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "rhone"
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "rhone"


@dataclass
class Profile:
    name: str
    api_url: str = DEFAULT_API_URL
    workspace: str | None = None
    project: str | None = None
    credential_store: str | None = None  # "keyring" | "file" | None (no login yet)
    token_expires_at: str | None = None  # when the stored token expires (device login); None: it does not
    saved: bool = False  # whether it exists in config.toml

    def to_toml(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in PROFILE_KEYS and v is not None}


class ProfileStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "config.toml"

    def _read(self) -> dict:
        import tomllib  # (not at the top: --help and a TAB load this module and never read the file)

        try:
            with self.path.open("rb") as handle:
                return tomllib.load(handle)
        except FileNotFoundError:
            return {}
        except tomllib.TOMLDecodeError as error:
            raise RhoneError(
                f"{self.path} is not valid TOML: {error}",
                code="invalid_profile_config",
                exit_code=ExitCode.USAGE,
                hint="fix or delete the file; `rhone login` recreates it",
            ) from None

    def current_name(self) -> str:
        return str(self._read().get("current_profile") or DEFAULT_PROFILE)

    def get(self, name: str) -> Profile:
        data = self._read().get("profiles", {}).get(name)
        if data is None:
            return Profile(name=name)
        known = {k: data[k] for k in PROFILE_KEYS if k in data}
        return Profile(name=name, saved=True, **known)

    def save(self, profile: Profile, *, make_current: bool = False) -> None:
        import tomli_w

        data = self._read()
        data.setdefault("profiles", {})[profile.name] = profile.to_toml()
        if make_current or "current_profile" not in data:
            data["current_profile"] = profile.name
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, tomli_w.dumps(data), mode=0o644)
        profile.saved = True


def atomic_write(path: Path, text: str, *, mode: int) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a config; `mode` applies from creation."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
