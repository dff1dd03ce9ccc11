"""Helpers shared by the end-to-end tests: app trees to deploy, waiting, and the processes a test left behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import httpx

from tests.conftest import REPO

HELLO = REPO / "examples" / "hello"


def toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string of ASCII text is a valid TOML basic string


def hello_app(
    root: Path,
    name: str = "hello",
    *,
    command: str | None = "python3 -m py_compile app.py",
    output: str = ".",
    timeout: int = 120,
    start: str = "python3 app.py",
    readiness_timeout: int = 30,
    extra: str = "",
) -> Path:
    """A copy of examples/hello under `root/name` whose rhone.toml has the given build and process settings."""
    app_dir = root / name
    shutil.copytree(HELLO, app_dir)
    build = f"command = {toml_str(command)}\n" if command is not None else ""
    (app_dir / "rhone.toml").write_text(
        f'[project]\nname = "hello"\n\n[app]\nname = "hello"\n\n'
        f"[build]\n{build}output = {toml_str(output)}\ntimeout = {timeout}\n\n"
        f'[process]\nstart = {toml_str(start)}\nhealth_path = "/healthz"\nreadiness_timeout = {readiness_timeout}\n'
        f"{extra}"
    )
    return app_dir


def set_version(app_dir: Path, version: str) -> None:
    """Make the app's `VERSION = "…"` line (examples/hello and the test apps have one) say `version`."""
    source = app_dir / "app.py"
    lines = [
        f'VERSION = "{version}"' if line.startswith("VERSION = ") else line for line in source.read_text().split("\n")
    ]
    source.write_text("\n".join(lines))


def linked(server, app_dir: Path) -> Path:
    result = server.rhone("init", "--link", "--json", cwd=app_dir)
    assert result.exit_code == 0, result.stderr
    return app_dir


def processes_under(root: Path) -> dict[int, str]:
    """Live processes (zombies excluded) whose working directory is inside `root` — even one since deleted — or that
    run in a sandbox whose mounts come from inside `root`, other than Rhone Local servers: the app and build
    processes that allocations and builds started."""
    root_text = str(root.resolve())
    source = _mount_source(root_text)
    own_namespace = os.readlink("/proc/self/ns/mnt")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
            sandboxed = os.readlink(entry / "ns" / "mnt") != own_namespace and _mounts_from(entry, source)
        except OSError:
            continue
        if state in ("Z", "X") or "rhone_local" in cmdline:
            continue
        if cwd == root_text or cwd.startswith(root_text + "/") or sandboxed:
            found[int(entry.name)] = f"{cmdline} (in {cwd}{', sandboxed' if sandboxed else ''})"
    return found


def _mount_source(path: str) -> tuple[str, str]:
    """(device, path inside that filesystem) of `path`: how a sandbox's mountinfo names a bind mount from it (a
    sandboxed process's own working directory reads `/app`)."""
    best = ("", "", "/")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        device, fs_root, point = fields[2], fields[3], fields[4]
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[1]):
            best = (device, point, fs_root)
    device, point, fs_root = best
    return device, os.path.normpath(os.path.join(fs_root, os.path.relpath(path, point)))


def _mounts_from(process: Path, source: tuple[str, str]) -> bool:
    device, inside = source
    for line in (process / "mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[2] == device and (fields[3] == inside or fields[3].startswith(inside + "/")):
            return True
    return False


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll `predicate` until it is truthy or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def allocation_group(pid: int) -> int | None:
    """The process group a process of an allocation or build belongs to, as the runner records it (the allocation's
    `pid`): its own group, or for bubblewrap's monitor — which stays outside the sandbox, in a group of its own —
    the group its sandbox's pid 1 leads."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return None
    if os.path.basename(command) == b"bwrap" and os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid"):
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    return pgid(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return pgid(pid)


def restart(server) -> None:
    """`rhone local up` after a kill -9: it must notice the stale pid file and come back (on other ports if its own
    were taken meanwhile: `LocalServer.up`)."""
    result = server.up()
    if result.exit_code != 0:  # with --json the error is on stdout; the server's log says why it did not come up
        try:
            log = (server.data_dir / "rhone-local.log").read_text(errors="replace").splitlines()[-40:]
        except OSError as error:
            log = [f"(no log: {error})"]
        raise AssertionError("\n".join([result.stderr, result.stdout, "server log:", *log]))
    assert "stale pid file" in result.stderr


def db_rows(server, sql: str, *args) -> list[dict]:
    """Rows of the server's SQLite store, read beside it (read-only), as dicts."""
    with contextlib.closing(
        sqlite3.connect(f"file:{server.data_dir / 'rhone.db'}?mode=ro", uri=True, timeout=10)
    ) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql, args)]


def operation_state(server, op_id: str) -> str:
    """The operation's state as the store has it: read straight from a SQLite store (a poll that must catch a stage
    in its window cannot wait for a loaded server to answer), else asked of the API."""
    if (server.data_dir / "rhone.db").exists():
        [row] = db_rows(server, "SELECT state FROM operations WHERE id = ?", op_id)
        return row["state"]
    response = httpx.get(
        f"{server.api_url}/v1/operations/{op_id}",
        headers={"Authorization": f"Bearer {server.owner_token()}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["state"]


# Headless Chromium (Debian's) as the browser tests drive it: no sandbox of its own (we run as root), nothing that
# reaches out to the network by itself.
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
