"""Values a TAB can complete from the API: environment names, deployment ids (newest first, with their state),
operation ids, app, project, workspace and region names.

A TAB must stay fast and must never print an error into the prompt, so:
- one GET on a plain socket (httpx, pydantic and rich stay unloaded), with a short timeout
  (`RHONE_COMPLETION_TIMEOUT`, default 0.5 s), only to an API reached without a proxy;
- answers are cached for CACHE_SECONDS and a failure for FAILURE_SECONDS (`<cache dir>/completion.json`), so a
  burst of TABs costs one request, and with the API down only the first TAB waits — for a refused connection on
  loopback, not at all;
- anything that goes wrong (no token, no API, a 401, a malformed answer) yields no values, silently;
- only values in the API's own formats (ids, names) are offered, and descriptions are reduced to plain words: the
  shells evaluate what completion prints.

Which workspace, project and app a value belongs to comes from the words already typed (`-w`, `-p`, `-a`, `-C`,
`--profile`, `--api-url`, `--token`), else the nearest rhone.toml, else the profile — as for commands.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from rhone_cli import api, api_paths

CACHE_SECONDS = 20.0
FAILURE_SECONDS = 30.0
DEFAULT_TIMEOUT = 0.5
MAX_CACHE_ENTRIES = 64
RECENT = 30  # deployments and operations offered, newest first
MAX_ANSWER_BYTES = 4_000_000
_WORDS = re.compile(r"[^A-Za-z0-9 _.:/-]+")
_SAFE_VALUE = re.compile(r"[a-z0-9][a-z0-9_-]{0,80}")  # every id and name format the API has

# What a parameter completes, by option name, then by metavar.
BY_OPTION = {"--app": "app", "-a": "app", "--project": "project", "-p": "project", "--workspace": "workspace"}
BY_OPTION["-w"] = "workspace"
BY_METAVAR = {
    "DEPLOYMENT_ID": "deployment",
    "DEP": "deployment",
    "OP_ID": "operation",
    "ENV": "environment",
    "REGION": "region",
    "APP": "app",
    "PROJECT": "project",
    "WORKSPACE": "workspace",
}
FLAGS_WITH_VALUES = ("--workspace", "-w", "--project", "-p", "--app", "-a", "--cwd", "-C", "--profile", "--api-url")


def kind_of(param: Any) -> str | None:
    for name in getattr(param, "opts", []):
        if name in BY_OPTION:
            return BY_OPTION[name]
    return BY_METAVAR.get(getattr(param, "metavar", None) or "")


def values(kind: str, words: list[str], environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """[(value, description)] for `kind`, newest first where that means something; [] when anything is missing."""
    try:
        context = _Context(words, environ)
        request = context.request(kind)
        if request is None:
            return []
        path, params, pick = request
        # Checked again on the way out (the cache file is read back too): the shells evaluate what is printed.
        return [(v, _plain(note)) for v, note in _cached(context, path, params, pick) if _SAFE_VALUE.fullmatch(v)]
    except Exception:  # noqa: BLE001 - a TAB never shows an error; it offers nothing
        return []


class _Context:
    def __init__(self, words: list[str], environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.flags = _flags(words)
        cwd = Path(self.flags.get("--cwd") or self.flags.get("-C") or os.getcwd())
        self.toml = _rhone_toml(cwd)
        from rhone_cli.config.profiles import ProfileStore, config_dir

        store = ProfileStore(config_dir(dict(environ)))
        self.profile = store.get(self.flags.get("--profile") or environ.get("RHONE_PROFILE") or store.current_name())
        self.api_url = (self.flags.get("--api-url") or environ.get("RHONE_API_URL") or self.profile.api_url).rstrip("/")

    def _pick(self, *names: str) -> str | None:
        for name in names:
            if self.flags.get(name):
                return self.flags[name]
        return None

    @property
    def workspace(self) -> str | None:
        return self._pick("--workspace", "-w") or self.toml.get("workspace") or self.profile.workspace

    @property
    def project(self) -> str | None:
        return self._pick("--project", "-p") or self.toml.get("project") or self.profile.project

    @property
    def app(self) -> str | None:
        return self._pick("--app", "-a") or self.toml.get("app")

    def request(self, kind: str) -> tuple[str, dict, Any] | None:
        if kind == "workspace":
            return api.WORKSPACES, {}, _names("name")
        if kind == "region":
            return api.REGIONS, {}, _names("name")
        if not self.workspace:
            return None
        target = api.Target(self.workspace, self.project, self.app)
        if kind == "operation":
            return target.operations_path, {"order": "newest", "limit": RECENT}, _operations
        if kind == "project":
            return target.projects_path, {"order": "newest", "limit": 50}, _names("name")
        if not self.project:
            return None
        if kind == "app":
            return target.apps_path, {"order": "newest", "limit": 50}, _names("name")
        if not self.app:
            return None
        if kind == "environment":
            return target.environments_path, {"limit": 50}, _names("name")
        if kind == "deployment":
            return target.deployments_path, {"order": "newest", "limit": RECENT}, _deployments
        return None

    def token(self) -> str | None:
        if self.flags.get("--token"):
            return self.flags["--token"]
        if self.environ.get("RHONE_TOKEN"):
            return self.environ["RHONE_TOKEN"]
        import io

        from rhone_cli.config.credentials import Credentials
        from rhone_cli.environment import Environment
        from rhone_cli.output import Output

        env = Environment(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO(), environ=dict(self.environ))
        return Credentials(env, Output(env)).resolve(self.profile).token


def _flags(words: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for index, word in enumerate(words):
        name, sep, value = word.partition("=")
        if name in (*FLAGS_WITH_VALUES, "--token"):
            if sep:
                found[name] = value
            elif index + 1 < len(words):
                found[name] = words[index + 1]
    return found


def _rhone_toml(start: Path) -> dict[str, str]:
    """Project, app and workspace names from the nearest rhone.toml (read with tomllib: no models on a TAB)."""
    for directory in (start, *start.parents):
        path = directory / "rhone.toml"
        if path.is_file():
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
            project, app = data.get("project") or {}, data.get("app") or {}
            found = {"project": project.get("name"), "workspace": project.get("workspace"), "app": app.get("name")}
            return {key: value for key, value in found.items() if isinstance(value, str)}
    return {}


# -- what is offered ---------------------------------------------------------------------------------------------------
def _plain(text: Any) -> str:
    return " ".join(_WORDS.sub(" ", str(text)).split())[:60]


def _names(key: str):
    def pick(answer: dict) -> list[tuple[str, str]]:
        return [(item[key], "") for item in answer["items"] if api_paths.is_name(str(item.get(key, "")))]

    return pick


def _deployments(answer: dict) -> list[tuple[str, str]]:
    offered = []
    for item in answer["items"]:
        if not api_paths.is_id("deployment", str(item.get("id", ""))):
            continue
        state = "superseded" if item.get("superseded_by") else item.get("state")
        serves = [r.get("environment") for r in item.get("routes") or []]
        note = f"{state} {item.get('environment', '')}" + (f", serves {' '.join(map(str, serves))}" if serves else "")
        offered.append((item["id"], _plain(f"{note} {str(item.get('created_at', ''))[:16]}")))
    return offered


def _operations(answer: dict) -> list[tuple[str, str]]:
    return [
        (item["id"], _plain(f"{item.get('kind')} {item.get('state')} {str(item.get('created_at', ''))[:16]}"))
        for item in answer["items"]
        if api_paths.is_id("operation", str(item.get("id", "")))
    ]


# -- one GET, cached --------------------------------------------------------------------------------------------------
def cache_path(environ: Mapping[str, str]) -> Path:
    if environ.get("RHONE_CACHE_DIR"):
        return Path(environ["RHONE_CACHE_DIR"]) / "completion.json"
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "rhone" / "completion.json"
    return Path(environ.get("XDG_CACHE_HOME") or home / ".cache") / "rhone" / "completion.json"


def _cached(context: _Context, path: str, params: dict, pick: Any) -> list[tuple[str, str]]:
    """The values one GET offers, from the cache while it is fresh (a failure is remembered too)."""
    url = f"{context.api_url}{path}" + (f"?{urlencode(params)}" if params else "")
    key = url  # names the request, never the token
    file = cache_path(context.environ)
    cache = _read_cache(file)
    now = time.time()
    entry = cache.get(key)
    if isinstance(entry, dict) and now - entry.get("at", 0) < (CACHE_SECONDS if entry.get("ok") else FAILURE_SECONDS):
        return [(str(value), str(note)) for value, note in entry.get("values") or []]
    answer = _get(context, url)
    offered = [] if answer is None else pick(answer)
    cache[key] = {"at": now, "ok": answer is not None, "values": offered}
    _write_cache(file, cache)
    return offered


def _get(context: _Context, url: str) -> dict | None:
    from rhone_cli.network import proxy_for

    if proxy_for(url, context.environ) is not None:
        return None  # a TAB does not go through proxies; the commands themselves do
    token = context.token()
    if not token:
        return None
    timeout = float(context.environ.get("RHONE_COMPLETION_TIMEOUT") or DEFAULT_TIMEOUT)
    status, body = _http_get(url, token, timeout, context.environ)
    if status != 200:
        return None
    answer = json.loads(body)
    return answer if isinstance(answer, dict) and isinstance(answer.get("items"), list) else None


def _http_get(url: str, token: str, timeout: float, environ: Mapping[str, str]) -> tuple[int, bytes]:
    """One GET over a fresh connection (`Connection: close`), read to the end: (status, body), or (0, b"") when
    anything fails. Written on a socket because `http.client` would import the email package (~15 ms per TAB)."""
    import socket

    parts = urlsplit(url)
    https = parts.scheme == "https"
    host, port = parts.hostname or "", parts.port or (443 if https else 80)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\nUser-Agent: rhone-completion\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = raw
            if https:
                from rhone_cli.network import ssl_context

                sock = ssl_context(None, environ).wrap_socket(raw, server_hostname=host)
            sock.sendall(request)
            received = bytearray()
            while len(received) < MAX_ANSWER_BYTES and (chunk := sock.recv(65536)):
                received += chunk
    except (OSError, ValueError):
        return 0, b""
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return 0, b""
    if any(line.lower().replace(b" ", b"") == b"transfer-encoding:chunked" for line in lines[1:]):
        body = _unchunked(body)
    return status, body


def _unchunked(body: bytes) -> bytes:
    out, rest = bytearray(), body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def _read_cache(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(file: Path, cache: dict) -> None:
    newest = dict(sorted(cache.items(), key=lambda item: item[1].get("at", 0))[-MAX_CACHE_ENTRIES:])
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        temporary = file.with_name(f".{file.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(newest, handle)
        os.replace(temporary, file)
    except OSError:
        pass  # no cache this time; the next TAB asks again
