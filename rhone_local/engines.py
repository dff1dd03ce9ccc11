"""The engines behind runtime services: Redis and NATS servers that Rhone Local starts, supervises and stops.

One engine process per lane (an environment in a region) and engine: a lane's data, users and connections are its
own, so an app uses any key or subject it likes with any standard client, and nothing of one lane is reachable from
another. Each runs from `<data dir>/services/engines/<environment id>/<region id>/<engine>/` (its configuration, its
log, and its data: Redis with an append-only file, NATS with JetStream's store), listens on loopback only (apps inside a
sandbox share the host's network namespace) and accepts only users Rhone Local created:

- each live allocation of the lane is a user of its own, named after the allocation, with a password derived from a
  key only the server holds (`services/engines.key`) — so `CLIENT LIST` (Redis) and `connz` (NATS) tell which
  allocation is connected, and an allocation that stops loses its user (and with it its connections);
- the engine's admin (Rhone Local itself) is one more user; apps cannot change the engine's configuration, shut it
  down or read other clients (Redis: `-@admin`).

Ports are bound by the engine itself, never picked free and closed: NATS takes `-1` and reports what it got in its
ports file; Redis cannot, so it is started on a candidate port and tried again on another when that one is taken (it
exits saying so). Either comes back on the same port after a restart when it can, so allocations' URLs stay valid;
`server_pid` and its start time are recorded, so a restarted Rhone Local adopts an engine that survived it.
See docs/architecture.md ("Runtime services").
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import random
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rhone_local import processes
from rhone_local.domain.errors import NodeStopping
from rhone_local.domain.topology import ENGINE_SERVICES
from rhone_local.resp import RespConnection, RespError
from rhone_local.stopping import Deadline, join_all

log = logging.getLogger("rhone_local.engines")

BINARIES = {"redis": "redis-server", "nats": "nats-server"}
INSTALL_HINT = {"redis": "apt-get install redis-server", "nats": "apt-get install nats-server"}
# Which runtime services each engine serves, and where in it: Redis database numbers keep a lane's sessions apart
# from its cache (a `FLUSHDB` of the cache leaves sessions), pub/sub is the same in every database.
SERVES = {engine: ENGINE_SERVICES[engine] for engine in BINARIES}
REDIS_DATABASE = {"session": 0, "broadcast": 0, "cache": 1, "queue": 2}
START_TIMEOUT = 10.0
STOP_GRACE = 5.0
STOP_BOUND = 2 * STOP_GRACE + 1  # an engine's stop at most: SIGTERM's grace, then SIGKILL's wait
PORT_TRIES = 20
CANDIDATE_PORTS = (10000, 32767)  # below the usual ephemeral range, so outgoing connections rarely hold one
ADMIN_USER = "rhone-admin"
RESTART_BASE_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
SUPERVISE_SECONDS = 0.5
CLAIM_GRACE_SECONDS = 120.0  # longer than a services stage takes to commit after starting its engine


class EngineUnavailable(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EnginesStopping(NodeStopping):
    """Rhone Local is stopping: no engine starts any more."""


@dataclass(frozen=True)
class Lane:
    environment_id: str
    region_id: str
    engine: str

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.environment_id}:{self.region_id}"


def engine_key(root: Path) -> bytes:
    """The key every engine password is derived from (created once, private to the server's user)."""
    path = root / "engines.key"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


class Engine:
    """One engine process of one lane: start or adopt, check, stop, and its users."""

    def __init__(self, lane: Lane, directory: Path, key: bytes, stopping: threading.Event | None = None) -> None:
        self.lane = lane
        self.directory = directory
        self.key = key
        self.stopping = stopping or threading.Event()  # Rhone Local is stopping: nothing starts any more
        self.child: subprocess.Popen | None = None
        self.pid: int | None = None
        self.pid_start: int | None = None
        self.port: int | None = None
        self.restarts = 0
        self.claimed_at = -CLAIM_GRACE_SECONDS  # when a binding stage last asked for it
        self.seen_up = False  # answered since this Rhone Local started (so a start from now on is a restart)
        self.failures = 0
        self.next_try = 0.0
        self.error: str | None = None
        self._lock = threading.RLock()
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self.port = json.loads(self.state_file.read_text()).get("port")  # where it comes back, if it can

    # -- secrets ---------------------------------------------------------------------------------------------------
    def password(self, user: str) -> str:
        return hmac.new(self.key, f"{self.lane.name}:{user}".encode(), hashlib.sha256).hexdigest()[:40]

    # -- lifecycle -------------------------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.directory / "engine.json"

    def binary(self) -> str:
        found = shutil.which(BINARIES[self.lane.engine]) or shutil.which(
            BINARIES[self.lane.engine], path="/usr/sbin:/usr/local/sbin:/sbin"
        )
        if found is None:
            raise EngineUnavailable(
                "engine_unavailable",
                f"{BINARIES[self.lane.engine]} is not installed on this machine: install it "
                f"({INSTALL_HINT[self.lane.engine]}), or bind an external service with --provider URL",
            )
        return found

    def running(self) -> bool:
        with self._lock:
            if self.child is not None:
                self.child.poll()
            return processes.leader_alive(self.pid, self.pid_start)

    def ensure(self) -> None:
        """Running and answering, or EngineUnavailable: adopt the process a previous server left, else start one.
        EnginesStopping once Rhone Local is stopping: it starts nothing then (a stage resumes after the next start)."""
        with self._lock:
            if self.running() and self.answers():
                return
            if self.stopping.is_set():
                raise EnginesStopping
            if self.pid is None and self._adopt():
                return
            if self.running():  # ours, but not answering (stopped, wedged): it must not hold the port or the data
                self._kill()
            self._start()  # EnginesStopping from `_attempt` when the stop begins meanwhile

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and processes.leader_alive(self.pid, self.pid_start):
            time.sleep(0.02)
        self.pid = self.pid_start = self.child = None

    def _adopt(self) -> bool:
        try:
            recorded = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return False
        pid, start, port = recorded.get("pid"), recorded.get("pid_start"), recorded.get("port")
        if not processes.leader_alive(pid, start):
            return False
        self.pid, self.pid_start, self.port = pid, start, port
        if self.answers():
            log.info("adopted %s engine of lane %s (pid %s, port %s)", self.lane.engine, self.lane.name, pid, port)
            return True
        self.pid = self.pid_start = None
        return False

    def _record(self) -> None:
        state = {"pid": self.pid, "pid_start": self.pid_start, "port": self.port}
        self.state_file.write_text(json.dumps(state))

    def _attempt(self, argv: list[str], ready: Any) -> str | None:
        """Start the engine with `argv` and wait until `ready`: None once it runs (and is recorded), else why not;
        EnginesStopping when the stop begins before or during the attempt (what it spawned is stopped)."""
        if self.stopping.is_set():
            raise EnginesStopping
        self._spawn(argv)
        failure = self._wait_started(ready)
        if failure is None:
            self._record()
            self.error = None
        else:
            self.pid = self.pid_start = None
        return failure

    def _spawn(self, argv: list[str]) -> None:
        log_file = self.directory / f"{self.lane.engine}.log"
        with log_file.open("ab") as handle:
            self.child = subprocess.Popen(
                argv,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives a crash of Rhone Local, which adopts it again
                restore_signals=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        self.pid = self.child.pid
        self.pid_start = processes.start_time(self.pid)

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        with self._lock:
            if not processes.leader_alive(self.pid, self.pid_start):
                self.pid = self.pid_start = None
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGTERM)  # both engines save their data on SIGTERM
            deadline = time.monotonic() + STOP_GRACE
            while time.monotonic() < deadline and processes.leader_alive(self.pid, self.pid_start):
                time.sleep(0.05)
            self._kill()

    def log_tail(self, lines: int = 2) -> str:
        try:
            text = (self.directory / f"{self.lane.engine}.log").read_text(errors="replace")
        except OSError:
            return ""
        kept = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(kept[-lines:])

    def _wait_started(self, ready: Any) -> str | None:
        """Wait until `ready()` is true (None) or the process exited (its log tail)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.child is not None and self.child.poll() is not None:
                return self.log_tail() or f"exited with status {self.child.returncode}"
            if ready():
                return None
            if self.stopping.is_set():  # a stop does not wait out a start: it stops what it started
                self.stop()
                raise EnginesStopping
            time.sleep(0.05)
        self.stop()
        return f"did not answer within {START_TIMEOUT:.0f}s"

    # -- what subclasses answer ------------------------------------------------------------------------------------
    def answers(self) -> bool:
        raise NotImplementedError

    def sync_users(self, wanted: list[str]) -> None:
        """Make the engine's app users exactly `wanted` (supervision and starting allocations both call this)."""
        with self._lock:
            self._sync_users(wanted)

    def _sync_users(self, wanted: list[str]) -> None:
        raise NotImplementedError

    def connections(self) -> dict[str, int]:
        raise NotImplementedError

    def url(self, user: str, service: str) -> str:
        raise NotImplementedError

    def endpoint(self, service: str) -> str:
        raise NotImplementedError


def connections_by_user(users: Iterable[str | None]) -> dict[str, int]:
    """How many connections each app user holds, from one user name (or None) per connection."""
    return dict(Counter(u for u in users if u and u != ADMIN_USER))


def _candidate_port(previous: int | None, attempt: int) -> int:
    if previous and attempt == 0:
        return previous
    return random.randint(*CANDIDATE_PORTS)


class RedisEngine(Engine):
    def _start(self) -> None:
        binary = self.binary()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            previous = json.loads(self.state_file.read_text()).get("port")
        except (OSError, ValueError):
            previous = None
        admin = hashlib.sha256(self.password(ADMIN_USER).encode()).hexdigest()
        last = "not started"
        for attempt in range(PORT_TRIES):
            port = _candidate_port(previous, attempt)
            config = self.directory / "redis.conf"
            config.write_text(
                "\n".join(
                    [
                        f"port {port}",
                        "bind 127.0.0.1",
                        "protected-mode yes",
                        "daemonize no",
                        f'dir "{self.directory}"',
                        "appendonly yes",
                        "appendfsync everysec",
                        "save 60 1",
                        "databases 16",
                        "user default off",
                        f"user {ADMIN_USER} on #{admin} ~* &* +@all",
                        "",
                    ]
                )
            )
            os.chmod(config, 0o600)
            self.port = port
            failure = self._attempt([binary, str(config)], self.answers)
            if failure is None:
                return
            last = failure
            if "in use" not in failure:
                break
        raise EngineUnavailable(
            "engine_unavailable", f"redis-server did not start (its log: {self.directory}/redis.log): {last}"
        )

    def _admin(self) -> RespConnection:
        if self.port is None:
            raise OSError("no port")
        conn = RespConnection(self.port)
        try:
            conn.call("AUTH", ADMIN_USER, self.password(ADMIN_USER))
        except BaseException:
            conn.sock.close()
            raise
        return conn

    def answers(self) -> bool:
        """Our engine answers: it knows our admin password, and it is the process we started or adopted."""
        try:
            with self._admin() as conn:
                info = conn.call("INFO", "server")
        except (OSError, RespError):
            return False
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return fields.get("process_id", "").strip() == str(self.pid)

    def _sync_users(self, wanted: list[str]) -> None:
        with self._admin() as conn:
            present = set(conn.call("ACL", "USERS")) - {ADMIN_USER, "default"}
            for user in sorted(set(wanted) - present):
                digest = hashlib.sha256(self.password(user).encode()).hexdigest()
                conn.call("ACL", "SETUSER", user, "reset", "on", f"#{digest}", "~*", "&*", "+@all", "-@admin")
            gone = sorted(present - set(wanted))
            if gone:
                conn.call("ACL", "DELUSER", *gone)  # also closes their connections

    def connections(self) -> dict[str, int]:
        with self._admin() as conn:
            listing = conn.call("CLIENT", "LIST", "TYPE", "normal") + conn.call("CLIENT", "LIST", "TYPE", "pubsub")
        fields = (dict(part.split("=", 1) for part in line.split() if "=" in part) for line in listing.splitlines())
        return connections_by_user(f.get("user") for f in fields)

    def url(self, user: str, service: str) -> str:
        return f"redis://{quote(user, safe='')}:{self.password(user)}@127.0.0.1:{self.port}/{REDIS_DATABASE[service]}"

    def endpoint(self, service: str) -> str:
        return f"redis://127.0.0.1:{self.port}/{REDIS_DATABASE[service]}"


class NatsEngine(Engine):
    def __init__(self, lane: Lane, directory: Path, key: bytes, stopping: threading.Event | None = None) -> None:
        super().__init__(lane, directory, key, stopping)
        self.monitor: int | None = None
        self.users: list[str] = []

    def _config(self, port: int | str) -> Path:
        users = [{"user": ADMIN_USER, "password": self.password(ADMIN_USER)}] + [
            {"user": u, "password": self.password(u)} for u in self.users
        ]
        config = {
            "listen": f"127.0.0.1:{port}",
            "http": "127.0.0.1:-1",
            "ports_file_dir": str(self.directory),
            "jetstream": {"store_dir": str(self.directory / "jetstream")},
            "accounts": {"LANE": {"jetstream": "enabled", "users": users}},
        }
        path = self.directory / "nats.conf"
        path.write_text(json.dumps(config, indent=1))  # NATS reads JSON as its configuration format
        os.chmod(path, 0o600)
        return path

    def _ports(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.directory / f"nats-server_{self.pid}.ports").read_text())
        except (OSError, ValueError, TypeError):
            return None

    def _start(self) -> None:
        binary = self.binary()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in self.directory.glob("nats-server_*.ports"):
            stale.unlink(missing_ok=True)
        try:
            previous = json.loads(self.state_file.read_text()).get("port")
        except (OSError, ValueError):
            previous = None
        last = "not started"
        for port in ([previous] if previous else []) + ["-1"]:
            failure = self._attempt([binary, "-c", str(self._config(port))], self._read_ports)
            if failure is None:
                return
            last = failure
        raise EngineUnavailable(
            "engine_unavailable", f"nats-server did not start (its log: {self.directory}/nats.log): {last}"
        )

    def _read_ports(self) -> bool:
        ports = self._ports()
        if not ports:
            return False
        self.port = int(ports["nats"][0].rsplit(":", 1)[1])
        self.monitor = int(ports["monitoring"][0].rsplit(":", 1)[1])
        return self.answers()

    def _record(self) -> None:
        state = {"pid": self.pid, "pid_start": self.pid_start, "port": self.port, "monitor": self.monitor}
        self.state_file.write_text(json.dumps(state))

    def _adopt(self) -> bool:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            self.monitor = json.loads(self.state_file.read_text()).get("monitor")
            config = json.loads((self.directory / "nats.conf").read_text())
            self.users = sorted(u["user"] for u in config["accounts"]["LANE"]["users"] if u["user"] != ADMIN_USER)
        return super()._adopt()

    def _monitor(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}{path}", timeout=2) as answer:
            return json.loads(answer.read())

    def answers(self) -> bool:
        if not self.monitor:
            return False
        try:
            varz = self._monitor("/varz")
        except (OSError, ValueError):
            return False
        return varz.get("port") == self.port and self._ports() is not None

    def _sync_users(self, wanted: list[str]) -> None:
        if sorted(set(wanted)) == self.users:
            return
        before = self._monitor("/varz").get("config_load_time")
        self.users = sorted(set(wanted))
        self._config(self.port)
        os.kill(self.pid, signal.SIGHUP)  # reload: connections of removed users are closed
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self._monitor("/varz").get("config_load_time") == before:
            time.sleep(0.02)

    def connections(self) -> dict[str, int]:
        listing = self._monitor("/connz?auth=1&limit=10000").get("connections") or []
        return connections_by_user(c.get("authorized_user") for c in listing)

    def url(self, user: str, service: str) -> str:
        return f"nats://{quote(user, safe='')}:{self.password(user)}@127.0.0.1:{self.port}"

    def endpoint(self, service: str) -> str:
        return f"nats://127.0.0.1:{self.port}"


ENGINE_TYPES = {"redis": RedisEngine, "nats": NatsEngine}


class Engines:
    """Every lane's engines: started when a service is bound, kept running (restarted with backoff when they die),
    told which allocations may connect, stopped with Rhone Local (their data stays)."""

    def __init__(self, store: Any, data_dir: Path) -> None:
        self.store = store
        self.root = data_dir / "services"
        self._key: bytes | None = None
        self._engines: dict[Lane, Engine] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = engine_key(self.root)
        return self._key

    def engine(self, lane: Lane) -> Engine:
        with self._lock:
            found = self._engines.get(lane)
            if found is None:
                # Apart from each lane's `services/<environment>/<region>/` (a sandboxed allocation sees it, for Rhone
                # Local's own SQLite services): an app reaches its engine over loopback, never its files.
                directory = self.root / "engines" / lane.environment_id / lane.region_id / lane.engine
                found = self._engines[lane] = ENGINE_TYPES[lane.engine](lane, directory, self.key, self._stop)
            return found

    def ensure(self, lane: Lane) -> Engine:
        """The lane's engine, running and holding a user for each of the lane's live allocations."""
        engine = self.engine(lane)
        engine.claimed_at = time.monotonic()  # its binding commits after this: supervision must not stop it meanwhile
        engine.ensure()
        engine.sync_users(self.store.live_allocation_ids(lane.environment_id, lane.region_id))
        return engine

    # -- what allocations receive ----------------------------------------------------------------------------------
    def credentials(self, allocation_id: str, environment_id: str, region_id: str) -> dict[str, str]:
        """The URLs an allocation starting in a lane receives for its engine-backed services, each with a user of its
        own (created now when the engine runs; else supervision creates it when the engine is back)."""
        users = sorted({*self.store.live_allocation_ids(environment_id, region_id), allocation_id})
        admitted: dict[Lane, Engine] = {}
        variables: dict[str, str] = {}
        for binding in self.store.engine_service_bindings(environment_id, region_id):
            lane = Lane(environment_id, region_id, binding["provider"])
            if lane not in admitted:
                admitted[lane] = self.engine(lane)
                with contextlib.suppress(EngineUnavailable, EnginesStopping, OSError, RespError):
                    admitted[lane].ensure()
                    admitted[lane].sync_users(users)
            if admitted[lane].port is not None:
                variables[service_variable(binding["service"])] = admitted[lane].url(allocation_id, binding["service"])
        return variables

    # -- supervision -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Supervise in a thread of its own: starting an engine may take seconds, which must not hold up drains."""
        self._thread = threading.Thread(target=self._loop, name="engines", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(SUPERVISE_SECONDS):
            try:
                self.tick()
            except Exception:
                log.exception("supervising runtime-service engines failed; retrying")

    def tick(self) -> None:
        """Each lane with an engine-backed binding has its engine up, with exactly its live allocations as users; an
        engine no binding needs any more is stopped (its data stays for a later binding)."""
        wanted = {Lane(r["environment_id"], r["region_id"], r["provider"]) for r in self.store.engine_lanes()}
        for lane in wanted:
            if self._stop.is_set():  # a shutdown waits for at most the start under way, not one per lane
                return
            self._supervise(self.engine(lane))
        with self._lock:
            unwanted = [
                e
                for lane, e in self._engines.items()
                if lane not in wanted and time.monotonic() - e.claimed_at > CLAIM_GRACE_SECONDS
            ]
        for engine in unwanted:
            if engine.pid is not None:
                log.info(
                    "stopping %s engine of lane %s: no service is bound to it", engine.lane.engine, engine.lane.name
                )
                engine.stop()

    def _supervise(self, engine: Engine) -> None:
        lane = engine.lane
        if engine.running() and engine.answers():
            engine.failures, engine.seen_up = 0, True
            with contextlib.suppress(OSError, RespError):
                engine.sync_users(self.store.live_allocation_ids(lane.environment_id, lane.region_id))
            return
        if time.monotonic() < engine.next_try:
            return
        if engine.failures == 0 and engine.seen_up:
            log.warning("the engine of lane %s stopped answering (%s); restarting it", lane.name, engine.log_tail(2))
        try:
            engine.ensure()
            engine.sync_users(self.store.live_allocation_ids(lane.environment_id, lane.region_id))
            engine.restarts += int(engine.seen_up)  # a start after it had served in this process
            engine.failures, engine.seen_up = 0, True
            bindings = self.store.engine_service_bindings(lane.environment_id, lane.region_id)
            endpoints = {b["service"]: engine.endpoint(b["service"]) for b in bindings if b["provider"] == lane.engine}
            self.store.set_service_endpoint(lane.environment_id, lane.region_id, lane.engine, endpoints)
        except EnginesStopping:  # the stop began during this start: no failure, no retry
            return
        except (EngineUnavailable, OSError, RespError) as error:
            engine.failures += 1
            engine.error = getattr(error, "message", str(error))
            delay = min(RESTART_BASE_SECONDS * 2 ** (engine.failures - 1), RESTART_MAX_SECONDS)
            engine.next_try = time.monotonic() + delay
            log.warning(
                "%s engine of lane %s did not start (%s); next try in %.1fs",
                lane.engine,
                lane.name,
                engine.error,
                delay,
            )

    def status(self, environment_id: str, region_id: str, engine_name: str) -> dict[str, Any]:
        """Whether a lane's engine is up, and how many connections each of its users holds."""
        engine = self.engine(Lane(environment_id, region_id, engine_name))
        if not (engine.running() and engine.answers()):
            return {
                "engine": engine_name,
                "up": False,
                "restarts": engine.restarts,
                "error": engine.error or "not running",
                "connections": {},
            }
        try:
            connections = engine.connections()
        except (OSError, RespError, ValueError):
            connections = {}
        return {
            "engine": engine_name,
            "up": True,
            "restarts": engine.restarts,
            "error": None,
            "connections": connections,
        }

    def down(self, environment_id: str, region_id: str, services: list[str]) -> list[dict[str, str]]:
        """The engine-backed services among `services` whose engine is not answering in the lane."""
        found = []
        for binding in self.store.engine_service_bindings(environment_id, region_id):
            if binding["service"] not in services:
                continue
            engine = self.engine(Lane(environment_id, region_id, binding["provider"]))
            if not (engine.running() and engine.answers()):
                found.append(
                    {
                        "service": binding["service"],
                        "engine": binding["provider"],
                        "error": engine.error or "not running",
                    }
                )
        return found

    def stop_supervising(self) -> None:
        """No engine starts or restarts from now on; a start under way gives up and stops what it spawned
        (`Engine._attempt`). A shutdown says this first, before the drains."""
        self._stop.set()

    def stop_all(self) -> None:
        """Stop supervising, then every engine at once (each saves its data on SIGTERM, within STOP_GRACE, and is
        killed past it): one slow engine does not add its grace to the others'."""
        self.stop_supervising()
        join_all([self._thread], Deadline(STOP_BOUND))  # a start under way stops what it spawned: one engine's stop
        with self._lock:
            engines = list(self._engines.values())
        stoppers = [
            threading.Thread(target=engine.stop, name=f"stop-engine-{engine.lane.name}", daemon=True)
            for engine in engines
        ]
        for stopper in stoppers:
            stopper.start()
        for stopper in join_all(stoppers, Deadline(STOP_BOUND)):
            log.warning("stopping without waiting longer for %s", stopper.name)


def service_variable(service: str) -> str:
    return "RHONE_SERVICE_" + service.upper() + "_URL"
