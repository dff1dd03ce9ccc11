"""Start, stop and inspect Rhone Local as a background process.

The server runs as `python -m rhone_local serve` with its output in `<data dir>/rhone-local.log` and its pid in
`<data dir>/rhone-local.pid`. `up` waits until `/v1/health` answers, then writes the `local` profile with the
bootstrap owner's token. A dead process's pid file is recognised and cleared; a port held by someone else is a
clear error before anything starts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rhone_cli.errors import ExitCode, RhoneError
from rhone_cli.invocation import Invocation

DEFAULT_PORT = 8470
DEFAULT_EDGE_PORT = 8471
PROFILE = "local"
HEALTH_TIMEOUT_SECONDS = 30.0


def data_dir(inv: Invocation, explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit.expanduser().resolve()
    environ = inv.env.environ
    if environ.get("RHONE_LOCAL_DATA_DIR"):
        return Path(environ["RHONE_LOCAL_DATA_DIR"]).expanduser().resolve()
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    base = Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    if sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    return base / "rhone" / "local"


@dataclass
class Paths:
    root: Path

    @property
    def pid(self) -> Path:
        return self.root / "rhone-local.pid"

    @property
    def log(self) -> Path:
        return self.root / "rhone-local.log"

    @property
    def state(self) -> Path:
        return self.root / "server.json"

    @property
    def token(self) -> Path:
        return self.root / "owner.token"


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running process. A zombie (killed, not yet reaped — common in containers whose init does
    not reap) is dead, although `kill(pid, 0)` still succeeds on it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that just exited: reaped now
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): kill(0) is all we have
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _read_pid(paths: Paths) -> int | None:
    try:
        return int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like the server (uvicorn sets SO_REUSEADDR): connections in TIME_WAIT do not make a port busy,
        # only a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _health(api_url: str, timeout: float = 1.0) -> dict | None:

    from rhone_cli.http import ApiClient

    try:
        with ApiClient(api_url, timeout=timeout, max_attempts=1) as client:
            data = client.get("/v1/health").data
            return data if isinstance(data, dict) and data.get("status") == "ok" else None
    except RhoneError:
        return None


def status(inv: Invocation, root: Path) -> dict[str, Any]:
    paths = Paths(root)
    pid = _read_pid(paths)
    running = pid is not None and process_alive(pid)
    state: dict[str, Any] = {}
    if paths.state.exists():
        try:
            state = json.loads(paths.state.read_text())
        except ValueError:
            state = {}
    api_url = state.get("api_url")
    health = _health(api_url) if running and api_url else None
    return {
        "running": bool(running and health),
        "pid": pid if running else None,
        "api_url": api_url if running else None,
        "edge_port": state.get("edge_port") if running else None,
        "version": (health or {}).get("version"),
        "data_dir": str(root),
        "log_file": str(paths.log),
        "stale_pid_file": pid is not None and not running,
    }


def server_command(root: Path, port: int, edge_port: int) -> list[str]:
    """How Rhone Local runs: this Python, in the foreground, on loopback. `-P` keeps the current directory off
    sys.path: started from a directory that holds a `rhone_local` package (another checkout, or anything untrusted),
    `-m rhone_local` would otherwise run that code instead of the installed server."""
    return [
        sys.executable,
        "-P",
        "-m",
        "rhone_local",
        "serve",
        "--data-dir",
        str(root),
        "--port",
        str(port),
        "--edge-port",
        str(edge_port),
    ]


def require_server_packages() -> None:
    """Rhone Local's server packages are an extra (`rhone[local]`); say so instead of failing in the child."""
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise RhoneError(
            f"Rhone Local needs {', '.join(missing)}, which this installation of rhone lacks",
            code="local_not_installed",
            exit_code=ExitCode.FAILED,
            hint="install the extra: pip install 'rhone[local]'",
        )


def up(inv: Invocation, root: Path, *, port: int, edge_port: int, timeout: float = HEALTH_TIMEOUT_SECONDS) -> dict:
    require_server_packages()
    paths = Paths(root)
    root.mkdir(parents=True, exist_ok=True)
    current = status(inv, root)
    if current["running"]:
        inv.out.info(f"Rhone Local is already running at {current['api_url']} (pid {current['pid']})")
        _write_profile(inv, paths, current["api_url"])
        return {**current, "started": False}
    pid = _read_pid(paths)
    if pid is not None:
        if process_alive(pid):
            raise RhoneError(
                f"process {pid} from {paths.pid} is alive but Rhone Local does not answer",
                code="local_unhealthy",
                exit_code=ExitCode.CONFLICT,
                hint=f"stop it with `rhone local down`, or look at {paths.log}",
            )
        inv.out.info(f"removing stale pid file {paths.pid} (process {pid} is gone)")
        paths.pid.unlink(missing_ok=True)
    for name, number in (("--port", port), ("--edge-port", edge_port)):
        if not _port_free(number):
            raise RhoneError(
                f"port {number} on 127.0.0.1 is already in use",
                code="port_in_use",
                exit_code=ExitCode.CONFLICT,
                hint=f"free it, or choose another with `rhone local up {name} N`",
            )
    command = server_command(root, port, edge_port)
    with paths.log.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    paths.pid.write_text(f"{process.pid}\n")
    api_url = f"http://127.0.0.1:{port}"
    inv.out.info(f"starting Rhone Local (pid {process.pid}), log: {paths.log}")
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            paths.pid.unlink(missing_ok=True)
            raise RhoneError(
                f"Rhone Local exited during start-up (status {process.returncode})",
                code="local_start_failed",
                exit_code=ExitCode.FAILED,
                hint="last log lines:\n" + _tail(paths.log, 10),
            )
        if _health(api_url, timeout=0.5):
            break
        if time.monotonic() > deadline:
            raise RhoneError(
                f"Rhone Local did not become healthy within {timeout:g}s (pid {process.pid} is still running)",
                code="local_start_timeout",
                exit_code=ExitCode.WAIT_TIMEOUT,
                hint=f"see {paths.log}",
            )
        time.sleep(0.1)  # waiting for a process to bind its port: there is no operation to long-poll yet
    _write_profile(inv, paths, api_url)
    return {**status(inv, root), "started": True, "profile": PROFILE}


def _write_profile(inv: Invocation, paths: Paths, api_url: str) -> None:
    from rhone_cli.config.profiles import Profile

    credentials = inv.credentials
    profile = credentials.profiles.get(PROFILE)
    token = paths.token.read_text().strip() if paths.token.exists() else None
    if token is None:
        raise RhoneError(
            f"{paths.token} is missing; the data directory was not bootstrapped by this server",
            code="local_token_missing",
            exit_code=ExitCode.FAILED,
        )
    inv.env.secrets.add(token)
    changed = profile.api_url != api_url or not profile.saved
    profile = Profile(
        name=PROFILE,
        api_url=api_url,
        workspace="local",
        project=profile.project,
        credential_store=profile.credential_store,
    )
    stored = credentials.resolve(profile)
    if stored.token != token or stored.source not in ("keyring", "file"):
        profile.credential_store = credentials.store(profile, token)
        changed = True
    if changed or credentials.profiles.current_name() != PROFILE:
        credentials.profiles.save(profile, make_current=True)
        inv.out.info(f"profile {PROFILE!r} now points at {api_url} and is the current profile")


def down(inv: Invocation, root: Path, *, timeout: float = 10.0) -> dict:
    paths = Paths(root)
    pid = _read_pid(paths)
    if pid is None or not process_alive(pid):
        paths.pid.unlink(missing_ok=True)
        return {"stopped": False, "was_running": False, "pid": None, "data_dir": str(root)}
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    forced = process_alive(pid)
    if forced:
        os.kill(pid, signal.SIGKILL)
        while process_alive(pid):
            time.sleep(0.05)
    paths.pid.unlink(missing_ok=True)
    paths.state.unlink(missing_ok=True)
    return {"stopped": True, "was_running": True, "pid": pid, "forced": forced, "data_dir": str(root)}


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log file)"


def logs(root: Path, lines: int) -> str:
    return _tail(Paths(root).log, lines)
