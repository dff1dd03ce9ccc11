"""Start, stop and inspect Rhone Local as a background process.

The server runs as `python -m rhone_local serve` with its output in `<data dir>/rhone-local.log` and its pid in
`<data dir>/rhone-local.pid`. `up` waits until the API's health check answers, then writes the `local` profile with the
bootstrap owner's token. A dead process's pid file is recognised and cleared; a port held by someone else is a
clear error before anything starts.

A pid file can outlive its process, and the kernel reuses pids: before anything is signalled, the pid must be the
Rhone Local server of this very data directory (its command line says so), and on Linux the signal goes through a
pidfd opened before that check, so it cannot reach a process that took the pid over in between (docs/security.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rhone_cli.errors import ExitCode, RhoneError
from rhone_cli.invocation import Invocation

DEFAULT_PORT = 8470
DEFAULT_EDGE_PORT = 8471
PROFILE = "local"
HEALTH_TIMEOUT_SECONDS = 30.0
# How the server says it refused to start (rhone_local/server.py: status 3, then `error [code]: …` and `hint: …` on
# stderr); the CLI never imports Rhone Local, so the contract is restated here.
REFUSED_STATUS = 3
_REFUSAL = re.compile(r"^error \[([a-z_]+)\]: (.+)\nhint: (.+)$", re.MULTILINE)
REFUSAL_EXIT_CODES = {
    "data_dir_in_use": ExitCode.CONFLICT,
    "port_in_use": ExitCode.CONFLICT,
    "node_name_taken": ExitCode.CONFLICT,
}


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
        pid = int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def _read_state(paths: Paths) -> dict[str, Any]:
    """server.json: what the running server wrote once its ports were bound (pid, api_url, edge_port, …); {} if
    there is none (the server writes it atomically, so a file is never read half written)."""
    try:
        state = json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _state_pid(paths: Paths) -> int | None:
    """The pid a server wrote into server.json (the only record of one started with `--foreground`)."""
    pid = _read_state(paths).get("pid")
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def _command_line(pid: int) -> tuple[list[str], Path | None] | None:
    """The arguments of process `pid` and its working directory (None where procfs cannot say), or None when it is
    gone or not ours."""
    try:
        if Path(f"/proc/{pid}").stat().st_uid != os.geteuid():
            return None  # another user's process is never our server, whatever its command line says
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self/cmdline").exists():
            return None  # procfs works: the process is gone
        return _command_line_from_ps(pid)
    except OSError:
        return None
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        cwd = None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part], cwd


def _command_line_from_ps(pid: int) -> tuple[list[str], Path | None] | None:
    """Without procfs (macOS), `ps` prints the command line joined by spaces: good enough to recognise ours."""
    try:
        found = subprocess.run(
            ["ps", "-ww", "-o", "uid=,command=", "-p", str(pid)], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    fields = found.stdout.split() if found.returncode == 0 else []
    return (fields[1:], None) if fields and fields[0] == str(os.geteuid()) else None


def is_server_of(pid: int, root: Path) -> bool:
    """Whether `pid` is a live `python -m rhone_local serve` whose `--data-dir` is `root`."""
    if not process_alive(pid):
        return False
    found = _command_line(pid)
    if found is None:
        return False
    args, cwd = found
    if "rhone_local" not in args or "serve" not in args:
        return False
    for index, arg in enumerate(args):
        value = args[index + 1] if arg == "--data-dir" and index + 1 < len(args) else None
        if arg.startswith("--data-dir="):
            value = arg.split("=", 1)[1]
        if value is not None:
            path = Path(value)
            if not path.is_absolute() and cwd is not None:
                path = cwd / path
            return path.is_absolute() and os.path.normpath(path) == os.path.normpath(root)
    return False


class ServerProcess:
    """A handle on the verified server: a pidfd on Linux, so signals and waits reach that process and no other, even
    if it exits and its pid is reused; elsewhere its pid."""

    def __init__(self, pid: int, pidfd: int | None) -> None:
        self.pid = pid
        self._pidfd = pidfd

    def signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, number)
            else:
                os.kill(self.pid, number)

    def wait(self, timeout: float) -> bool:
        """True once the process has exited, False if it still runs after `timeout` seconds."""
        if self._pidfd is not None:
            readable, _, _ = select.select([self._pidfd], [], [], timeout)  # a pidfd turns readable at exit
            return bool(readable)
        deadline = time.monotonic() + timeout
        while process_alive(self.pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


@contextlib.contextmanager
def server_process(pid: int, root: Path) -> Iterator[ServerProcess | None]:
    """The server of `root` running as `pid`, or None when `pid` is something else (or nothing)."""
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            yield None
            return
        except OSError:
            pidfd = None  # a kernel without pidfds: the pid it is
    try:
        # Checked after the pidfd is open: if `pid` was reused before the check, the check sees the impostor.
        yield ServerProcess(pid, pidfd) if is_server_of(pid, root) else None
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _recorded_server(paths: Paths, root: Path) -> tuple[int | None, int | None]:
    """(pid of the running server of `root`, pid named by a stale record). The pid file (from `up`) comes first, then
    server.json (a server started with --foreground has only that)."""
    stale = None
    for pid in (_read_pid(paths), _state_pid(paths)):
        if pid is None:
            continue
        if is_server_of(pid, root):
            return pid, None
        stale = stale or pid
    return None, stale


def _clear_stale_records(paths: Paths) -> None:
    """Remove the pid file and server.json once no server of this data directory runs (checked by the caller)."""
    paths.pid.unlink(missing_ok=True)
    paths.state.unlink(missing_ok=True)


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

    from rhone_cli.api import Api
    from rhone_cli.http import ApiClient

    try:
        with ApiClient(api_url, timeout=timeout, max_attempts=1) as client:
            data = Api(client).health()
            return data if isinstance(data, dict) and data.get("status") == "ok" else None
    except RhoneError:
        return None


def status(inv: Invocation, root: Path) -> dict[str, Any]:
    paths = Paths(root)
    pid, stale = _recorded_server(paths, root)
    running = pid is not None
    state = _read_state(paths)
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
        "stale_pid_file": stale is not None,
        "sandbox": state.get("sandbox") if running else None,
        "node": state.get("node", "local") if running else None,
        "roles": state.get("roles", list(NODE_ROLES)) if running else None,
        "disk": disk_use(root) if root.is_dir() else None,
    }


# What `rhone local status` measures, by kind: the data directory's folders (see docs/architecture.md).
DISK_KINDS = {"builds": "deployments", "allocations": "allocations", "blobs": "blobs", "caches": "caches"}


def disk_use(root: Path) -> dict[str, int]:
    """Bytes per kind under the data directory (regular files; links not followed)."""
    use = {}
    for kind, folder in DISK_KINDS.items():
        total = 0
        for directory, _dirs, files in os.walk(root / folder):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(directory, name)).st_size
        use[kind] = total
    use["database"] = sum(
        (root / name).stat().st_size for name in ("rhone.db", "rhone.db-wal") if (root / name).exists()
    )
    return use


NODE_ROLES = ("api", "worker", "runner", "edge")  # rhone_local/nodes.py: ROLES


@dataclass(frozen=True)
class NodeOptions:
    """`--node` and `--role` (docs/multi-node.md, "Nodes"): None keeps the server's default (node local, every role)."""

    name: str | None = None
    roles: str | None = None
    api: str | None = None  # the API an edge-only node's edges follow

    def arguments(self) -> list[str]:
        flags = (("--node", self.name), ("--role", self.roles), ("--api-url", self.api))
        return [part for flag, value in flags if value for part in (flag, value)]


def node_options(name: str | None, roles: str | None, api: str | None = None) -> NodeOptions:
    """The node's name, roles and followed API, checked as the server checks them: a mistake is a usage error
    (exit 2)."""
    from rhone_cli.errors import usage_error
    from rhone_local.nodes import api_url_problem, node_name_problem, parse_roles

    problem = node_name_problem(name) if name is not None else None
    if problem:
        raise usage_error(f"--node {name!r}: use 1 to 63 characters among lowercase letters, digits and '-'")
    if roles is not None:
        parsed, problem = parse_roles(roles)
        if parsed is None:
            raise usage_error(problem or "--role")
        roles = ",".join(r for r in NODE_ROLES if r in parsed)
    problem = api_url_problem(api) if api is not None else None
    if problem:
        raise usage_error(problem)
    listed = (roles or ",".join(NODE_ROLES)).split(",")
    if "edge" in listed and "api" not in listed and api is None:
        raise usage_error(f"--role {roles}: an edge without the api role follows another node's API: give --api URL")
    return NodeOptions(name, roles, api.rstrip("/") if api else None)


@dataclass(frozen=True)
class SandboxOptions:
    mode: str = "auto"  # auto, bubblewrap or none
    read_only: tuple[str, ...] = ()  # host paths builds and apps may read (toolchains)
    cache_mb: int | None = None  # per-app build cache limit


def server_command(
    root: Path, port: int, edge_port: int, sandbox: SandboxOptions | None = None, node: NodeOptions | None = None
) -> list[str]:
    """How Rhone Local runs: this Python, in the foreground, on loopback. `-P` keeps the current directory off
    sys.path: started from a directory that holds a `rhone_local` package (another checkout, or anything untrusted),
    `-m rhone_local` would otherwise run that code instead of the installed server."""
    sandbox = sandbox or SandboxOptions()
    command = [
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
        "--sandbox",
        sandbox.mode,
    ]
    for path in sandbox.read_only:
        command += ["--sandbox-ro", path]
    if sandbox.cache_mb is not None:
        command += ["--build-cache-mb", str(sandbox.cache_mb)]
    return command + (node or NodeOptions()).arguments()


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


def app_databases_environ(inv: Invocation, url: str | None) -> dict[str, str]:
    """How the server learns its PostgreSQL for app databases: an environment variable (a password in its argv
    would show in `ps`)."""
    url = url or inv.env.environ.get("RHONE_LOCAL_APP_DATABASES")
    if not url:
        return {}
    if not url.startswith(("postgresql://", "postgres://")):
        from rhone_cli.errors import usage_error

        raise usage_error("--app-databases must be a postgresql:// URL (postgresql://USER@HOST[:PORT]/DB)")
    return {"RHONE_LOCAL_APP_DATABASES": url}


S3_BUCKET_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


def cluster_environ(
    inv: Invocation, blobs: str | None, blobs_endpoint: str | None, events: str | None, store: str | None = None
) -> dict[str, str]:
    """`--store`, `--blobs`, `--blobs-endpoint` and `--events` (docs/multi-node.md) reach the server through its
    environment, since their URLs may carry credentials; checked here with the server's rules (rhone_local/blobs_s3.py,
    rhone_local/server.py), so a mistyped URL is a usage error before anything starts."""
    from urllib.parse import urlsplit

    from rhone_cli.errors import usage_error

    environ = inv.env.environ
    values = {
        "RHONE_LOCAL_BLOBS": blobs or environ.get("RHONE_LOCAL_BLOBS"),
        "RHONE_LOCAL_BLOBS_ENDPOINT": blobs_endpoint or environ.get("RHONE_LOCAL_BLOBS_ENDPOINT"),
        "RHONE_LOCAL_EVENTS": events or environ.get("RHONE_LOCAL_EVENTS"),
        "RHONE_LOCAL_STORE": store or environ.get("RHONE_LOCAL_STORE"),
    }
    if values["RHONE_LOCAL_STORE"]:
        parts = urlsplit(values["RHONE_LOCAL_STORE"])
        if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/") or parts.fragment:
            raise usage_error("--store must be a PostgreSQL URL: postgresql://USER[:PASSWORD]@HOST[:PORT]/DB")
    if values["RHONE_LOCAL_BLOBS"]:
        parts = urlsplit(values["RHONE_LOCAL_BLOBS"])
        bucket = parts.netloc
        if parts.scheme != "s3" or not (3 <= len(bucket) <= 63 and set(bucket) <= S3_BUCKET_CHARS):
            raise usage_error("--blobs must be s3://BUCKET[/PREFIX] (a bucket name of 3-63 of a-z, 0-9, '.', '-')")
        if ".." in parts.path.split("/") or parts.query or parts.fragment:
            raise usage_error("--blobs must be s3://BUCKET[/PREFIX], with no '..', query or fragment")
    if values["RHONE_LOCAL_BLOBS_ENDPOINT"]:
        if not values["RHONE_LOCAL_BLOBS"]:
            raise usage_error("--blobs-endpoint needs --blobs s3://BUCKET[/PREFIX]")
        if urlsplit(values["RHONE_LOCAL_BLOBS_ENDPOINT"]).scheme not in ("http", "https"):
            raise usage_error("--blobs-endpoint must be an http:// or https:// URL (the S3 API's endpoint)")
    if values["RHONE_LOCAL_EVENTS"]:
        parts = urlsplit(values["RHONE_LOCAL_EVENTS"])
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise usage_error("--events must be a NATS URL: nats://[USER:PASSWORD@]HOST:PORT")
    return {name: value for name, value in values.items() if value}


def up(
    inv: Invocation,
    root: Path,
    *,
    port: int,
    edge_port: int,
    timeout: float = HEALTH_TIMEOUT_SECONDS,
    server_environ: dict[str, str] | None = None,
    sandbox: SandboxOptions | None = None,
    node: NodeOptions | None = None,
) -> dict:
    require_server_packages()
    paths = Paths(root)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    current = status(inv, root)
    if current["running"]:
        inv.out.info(f"Rhone Local is already running at {current['api_url']} (pid {current['pid']})")
        _write_profile(inv, paths, current["api_url"])
        return {**current, "started": False}
    pid, stale = _recorded_server(paths, root)
    if pid is not None:
        raise RhoneError(
            f"Rhone Local (pid {pid}) is running on {root} but does not answer",
            code="local_unhealthy",
            exit_code=ExitCode.CONFLICT,
            hint=f"stop it with `rhone local down`, or look at {paths.log}",
        )
    if stale is not None:
        inv.out.info(f"removing stale pid file {paths.pid} (process {stale} is not Rhone Local of {root})")
        _clear_stale_records(paths)
    for name, number in (("--port", port), ("--edge-port", edge_port)):
        if number and not _port_free(number):  # 0: the server binds any free port
            raise RhoneError(
                f"port {number} on 127.0.0.1 is already in use",
                code="port_in_use",
                exit_code=ExitCode.CONFLICT,
                hint=f"free it, or choose another with `rhone local up {name} N`",
            )
    command = server_command(root, port, edge_port, sandbox, node)
    # The log is private like the rest of the data directory (docs/security.md).
    with open(os.open(paths.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:
        log_start = paths.log.stat().st_size
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **(server_environ or {})},
        )
    paths.pid.write_text(f"{process.pid}\n")
    inv.out.info(f"starting Rhone Local (pid {process.pid}), log: {paths.log}")
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            paths.pid.unlink(missing_ok=True)
            raise _start_failure(process.returncode, paths.log, log_start)
        # The server writes server.json once its ports are bound: the URL it names is the port it got.
        api_url = _announced_api_url(paths, process.pid)
        if api_url and _health(api_url, timeout=0.5):
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
    doc = {**status(inv, root), "started": True, "profile": PROFILE}
    _warn_unsealed(inv, doc.get("sandbox"))
    return doc


def _announced_api_url(paths: Paths, pid: int) -> str | None:
    """The API URL in server.json, once the server `pid` has written it (a leftover file names another pid)."""
    state = _read_state(paths)
    return state.get("api_url") if state.get("pid") == pid else None


def _warn_unsealed(inv: Invocation, sandbox: dict | None) -> None:
    if sandbox and sandbox.get("mode") == "none":
        inv.out.warn(
            f"builds and apps run WITHOUT a sandbox ({sandbox.get('reason')}): they run as this user and can read "
            "everything it can, including this data directory (rhone.db with every secret, owner.token) and other "
            "apps' files. Install bubblewrap (`apt-get install bubblewrap`) and restart Rhone Local to seal them"
        )


def gc(inv: Invocation, *, dry_run: bool) -> dict[str, Any]:
    return inv.api().local_gc(dry_run=dry_run)


def _start_failure(status: int, log: Path, offset: int) -> RhoneError:
    """Why the server exited during start-up: its own refusal (code, message, hint), else the log's last lines."""
    if status == REFUSED_STATUS:
        try:
            with log.open("rb") as handle:
                handle.seek(offset)
                written = handle.read(65536).decode(errors="replace")
        except OSError:
            written = ""
        refusal = _REFUSAL.search(written)
        if refusal:
            code, message, hint = refusal.groups()
            exit_code = REFUSAL_EXIT_CODES.get(code, ExitCode.FAILED)
            return RhoneError(message, code=f"local_{code}", exit_code=exit_code, hint=hint)
    return RhoneError(
        f"Rhone Local exited during start-up (status {status})",
        code="local_start_failed",
        exit_code=ExitCode.FAILED,
        hint="last log lines:\n" + _tail(log, 10),
    )


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


def recover_owner(inv: Invocation, root: Path) -> dict:
    """A new owner token in `owner.token`, minted by Rhone Local's own module straight into the data directory (the
    authority is write access to it; no API offers this); the `local` profile takes it when the server runs."""
    require_server_packages()
    command = [sys.executable, "-m", "rhone_local", "recover-owner", "--data-dir", str(root)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RhoneError(
            (result.stderr.strip().splitlines() or ["recovery failed"])[-1],
            code="local_recover_failed",
            exit_code=ExitCode.FAILED,
            hint=f"is {root} the data directory of your Rhone Local (--data-dir)?",
        )
    doc = json.loads(result.stdout)
    current = status(inv, root)
    if current["running"]:
        _write_profile(inv, Paths(root), current["api_url"])
    else:
        inv.out.info("Rhone Local is not running: `rhone local up` starts it and points the local profile at the token")
    return {**doc, "profile_updated": current["running"]}


def down(inv: Invocation, root: Path, *, timeout: float = 90.0) -> dict:
    paths = Paths(root)
    pid, stale = _recorded_server(paths, root)
    not_running = {"stopped": False, "was_running": False, "pid": None, "data_dir": str(root)}
    if pid is None:
        _clear_stale_records(paths)
        return {**not_running, "stale_pid_file": stale is not None}
    with server_process(pid, root) as server:
        if server is None:  # it exited (and maybe its pid was reused) since it was found
            _clear_stale_records(paths)
            return {**not_running, "stale_pid_file": True}
        server.signal(signal.SIGTERM)
        forced = not server.wait(timeout)
        if forced:
            server.signal(signal.SIGKILL)
            server.wait(timeout)
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
