"""The control database: SQLite behind one module.

Rules (they are what keeps the invariants true under concurrency and crashes):
- every connection runs in autocommit mode (`isolation_level=None`) with WAL, `busy_timeout` and foreign keys;
- a state transition is ONE conditional statement (compare-and-swap on `version`, or on `lease_owner`) — a writer
  holding stale knowledge changes nothing and learns so from the row count;
- a multi-statement write runs in `BEGIN IMMEDIATE`, which takes the write lock up front so `busy_timeout` applies
  (a plain BEGIN that upgrades from read to write fails instantly with SQLITE_BUSY under contention);
- no HTTP or subprocess work inside a transaction.
One connection per thread. Nothing outside this module writes SQL, so a PostgreSQL backend can replace it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from rhone_local.domain.access import Principal
from rhone_local.domain.ids import new_id
from rhone_local.domain.operations import MACHINES

JSON_COLUMNS = frozenset(
    {
        "params",
        "stages",
        "error",
        "response",
        "detail",
        "config",
        "source",
        "evidence",
        "approval",
        "facts",
        "manifest",
        "health",
    }
)
SCHEMA_VERSION = 9
# An allocation's runtime token works while the allocation starts and serves; from `draining` on (and in any state a
# later version adds) it is refused.
TOKEN_LIVE_STATES = ("planned", "pulling", "starting", "ready")


class SchemaTooNew(Exception):
    """The database was written by a newer rhone: migrating it backwards is not possible."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    data = dict(row)
    for column in JSON_COLUMNS & data.keys():
        if data[column] is not None:
            data[column] = json.loads(data[column])
    return data


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self.migrate()

    # -- connections and transactions ------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A short BEGIN IMMEDIATE transaction."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            # A COMMIT refused for a full disk may leave the transaction open: end it, or this thread's
            # connection could never write again.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        return _row(self.conn.execute(sql, args).fetchone())

    def all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [_row(r) for r in self.conn.execute(sql, args).fetchall()]  # type: ignore[misc]

    def migrate(self) -> None:
        conn = self.conn
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        self.migrated_from = current  # what start-up fills in after an upgrade depends on it (0: a new database)
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(f"{self.path} has schema version {current}; this rhone knows {SCHEMA_VERSION}")
        scripts = sorted(p for p in resources.files("rhone_local.migrations").iterdir() if p.name.endswith(".sql"))
        for script in scripts:
            number = int(script.name.split("_", 1)[0])
            if number <= current:
                continue
            # executescript commits; the version bump is part of the same script run.
            conn.executescript(f"BEGIN IMMEDIATE;\n{script.read_text()}\nPRAGMA user_version={number};\nCOMMIT;")

    # -- bootstrap, principals, topology ---------------------------------------------------------------------------
    def is_bootstrapped(self) -> bool:
        return self.one("SELECT 1 AS x FROM workspaces LIMIT 1") is not None

    def bootstrap(self, *, workspace: str, owner: str, token_hash: str, region: str, cell: str) -> dict[str, str]:
        ts = now_iso()
        ids = {
            "workspace_id": new_id("workspace"),
            "user_id": new_id("user"),
            "token_id": new_id("token"),
            "region_id": new_id("region"),
            "cell_id": new_id("cell"),
        }
        with self.write() as c:
            c.execute("INSERT INTO workspaces VALUES (?, ?, ?)", (ids["workspace_id"], workspace, ts))
            c.execute("INSERT INTO users VALUES (?, ?, NULL, ?)", (ids["user_id"], owner, ts))
            c.execute("INSERT INTO members VALUES (?, ?, 'owner', ?)", (ids["workspace_id"], ids["user_id"], ts))
            self.create_token(
                c,
                subject_kind="user",
                subject_id=ids["user_id"],
                name="bootstrap",
                secret_hash=token_hash,
                workspace_id=ids["workspace_id"],
                role="owner",
                token_id=ids["token_id"],
            )
            c.execute(
                "INSERT INTO regions (id, name, created_at, is_primary) VALUES (?, ?, ?, 1)",
                (ids["region_id"], region, ts),
            )
            c.execute("INSERT INTO cells VALUES (?, ?, ?, ?)", (ids["cell_id"], ids["region_id"], cell, ts))
        return ids

    def principal_for_token(self, token_hash: str) -> Principal | None:
        """Who a token acts for, or None when it is unknown, revoked, expired, or bound to an allocation that is no
        longer live. An allocation token is checked against its allocation's state here, in the same read, rather
        than revoked when the allocation moves: every move (drain, stop, failure, a crash found at start-up) takes
        effect for its token the moment it commits, whichever code path made it, with nothing to forget or race."""
        marks = ", ".join("?" * len(TOKEN_LIVE_STATES))
        token = self.one(
            "SELECT t.* FROM tokens t LEFT JOIN allocations a ON a.id = t.allocation_id "
            "WHERE t.secret_hash = ? AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?) "
            f"AND (t.allocation_id IS NULL OR a.state IN ({marks}))",
            token_hash,
            now_iso(),
            *TOKEN_LIVE_STATES,
        )
        if token is None:
            return None
        if token["subject_kind"] == "user":
            user = self.one("SELECT * FROM users WHERE id = ?", token["subject_id"])
            if user is None:
                return None
            # The token acts in the workspace it was minted for, with at most the role it was minted with.
            return Principal(
                "user", user["id"], user["name"], token["id"], workspace_id=token["workspace_id"], role=token["role"]
            )
        identity = self.one("SELECT * FROM runtime_identities WHERE id = ?", token["subject_id"])
        if identity is None:
            return None
        return Principal(
            "runtime",
            identity["id"],
            f"runtime:{identity['app_id']}",
            token["id"],
            identity["app_id"],
            identity["workspace_id"],
        )

    def token_expired(self, token_hash: str) -> bool:
        """Whether the token exists, unrevoked, and only its expiry makes it invalid (the client may refresh)."""
        row = self.one(
            "SELECT 1 AS x FROM tokens WHERE secret_hash = ? AND revoked_at IS NULL AND expires_at <= ?",
            token_hash,
            now_iso(),
        )
        return row is not None

    # -- device login and refresh tokens -----------------------------------------------------------------------------
    def create_device_code(
        self, *, device_code_hash: str, user_code: str, client_name: str, expires_at: str
    ) -> dict[str, Any]:
        row = {
            "id": new_id("device_code"),
            "device_code_hash": device_code_hash,
            "user_code": user_code,
            "client_name": client_name,
            "created_at": now_iso(),
            "expires_at": expires_at,
        }
        with self.write() as c:
            c.execute(
                "INSERT INTO device_codes (id, device_code_hash, user_code, client_name, state, created_at, "
                "expires_at) VALUES (:id, :device_code_hash, :user_code, :client_name, 'pending', :created_at, "
                ":expires_at)",
                row,
            )
        return {**row, "state": "pending"}

    def device_code(self, *, device_code_hash: str | None = None, user_code: str | None = None) -> dict | None:
        if device_code_hash is not None:
            return self.one("SELECT * FROM device_codes WHERE device_code_hash = ?", device_code_hash)
        return self.one("SELECT * FROM device_codes WHERE user_code = ?", user_code)

    def note_device_poll(self, code_id: str, at: float, interval: float) -> bool:
        """Record a poll; False when it came sooner than `interval` after the previous one (slow_down)."""
        with self.write() as c:
            moved = c.execute(
                "UPDATE device_codes SET last_poll_at = ? WHERE id = ? AND (last_poll_at IS NULL OR last_poll_at <= ?)",
                (at, code_id, at - interval),
            ).rowcount
            if not moved:
                c.execute("UPDATE device_codes SET last_poll_at = ? WHERE id = ?", (at, code_id))
        return moved == 1

    def decide_device_code(
        self, code_id: str, state: str, *, user_id: str, workspace_id: str | None, role: str | None
    ) -> bool:
        """pending → approved | denied, once, while it has not expired; an approval grants what the approver's own
        token may do (its workspace and role), never more."""
        with self.write() as c:
            return (
                c.execute(
                    "UPDATE device_codes SET state = ?, user_id = ?, workspace_id = ?, role = ?, decided_at = ? "
                    "WHERE id = ? AND state = 'pending' AND expires_at > ?",
                    (state, user_id, workspace_id, role, now_iso(), code_id, now_iso()),
                ).rowcount
                == 1
            )

    def issue_device_tokens(
        self, code: dict[str, Any], *, access_hash: str, refresh_hash: str, access_expires: str, refresh_expires: str
    ) -> dict[str, Any] | None:
        """approved → issued, with its access and refresh tokens, in one transaction; None if it was issued already."""
        with self.write() as c:
            moved = c.execute(
                "UPDATE device_codes SET state = 'issued' WHERE id = ? AND state = 'approved'", (code["id"],)
            ).rowcount
            if moved != 1:
                return None
            name = f"device login: {code['client_name']}"
            hashes, expiries = (access_hash, refresh_hash), (access_expires, refresh_expires)
            scope = (code["workspace_id"], code["role"])
            return self._token_pair(c, code["user_id"], name, scope, hashes, expiries)

    def refresh(
        self, refresh_hash: str, *, access_hash: str, new_refresh_hash: str, access_expires: str, refresh_expires: str
    ) -> dict[str, Any] | None:
        """Use a refresh token once: the old access token is revoked and a new pair issued; None if the refresh token
        is unknown, used, expired, or its user's access token was revoked."""
        ts = now_iso()
        with self.write() as c:
            old = c.execute(
                "SELECT r.*, t.name, t.workspace_id, t.role FROM refresh_tokens r "
                "JOIN tokens t ON t.id = r.access_token_id "
                "WHERE r.secret_hash = ? AND r.used_at IS NULL AND r.expires_at > ? AND t.revoked_at IS NULL",
                (refresh_hash, ts),
            ).fetchone()
            if old is None:
                return None
            c.execute("UPDATE refresh_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL", (ts, old["id"]))
            c.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (ts, old["access_token_id"]))
            hashes, expiries = (access_hash, new_refresh_hash), (access_expires, refresh_expires)
            scope = (old["workspace_id"], old["role"])
            return self._token_pair(c, old["user_id"], old["name"], scope, hashes, expiries)

    def _token_pair(
        self,
        c: sqlite3.Connection,
        user_id: str,
        name: str,
        scope: tuple[str | None, str | None],
        hashes: tuple[str, str],
        expiries: tuple[str, str],
    ) -> dict[str, Any]:
        """An expiring access token bound to `scope` (workspace, role) and its refresh token (by their hashes and
        expiry times)."""
        (access_hash, refresh_hash), (access_expires, refresh_expires) = hashes, expiries
        token = self.create_token(
            c,
            subject_kind="user",
            subject_id=user_id,
            name=name,
            secret_hash=access_hash,
            expires_at=access_expires,
            workspace_id=scope[0],
            role=scope[1],
        )
        c.execute(
            "INSERT INTO refresh_tokens (id, secret_hash, access_token_id, user_id, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (new_id("refresh_token"), refresh_hash, token["id"], user_id, now_iso(), refresh_expires),
        )
        return token

    def token_in_workspace(self, token_id: str, workspace_id: str) -> dict[str, Any] | None:
        """The token, if it acts in the workspace: a user token bound to it, or a runtime identity's of this
        workspace."""
        return self.one(
            "SELECT t.* FROM tokens t WHERE t.id = ? AND ("
            "  (t.subject_kind = 'user' AND t.workspace_id = ?)"
            "  OR (t.subject_kind = 'runtime' AND EXISTS (SELECT 1 FROM runtime_identities r "
            "       WHERE r.id = t.subject_id AND r.workspace_id = ?)))",
            token_id,
            workspace_id,
            workspace_id,
        )

    def role_of(self, workspace_id: str, user_id: str) -> str | None:
        row = self.one("SELECT role FROM members WHERE workspace_id = ? AND user_id = ?", workspace_id, user_id)
        return row["role"] if row else None

    def regions(self) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM regions ORDER BY id")

    def cells(self) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM cells ORDER BY id")

    def region(self, ref: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM regions WHERE id = ? OR name = ?", ref, ref)

    def primary_region(self) -> dict[str, Any]:
        return self.one("SELECT * FROM regions ORDER BY is_primary DESC, id LIMIT 1")  # type: ignore[return-value]

    def ensure_region(self, name: str, jurisdiction: str, cells: list[str], *, primary: bool = False) -> None:
        """Idempotent: the region and its cells exist with this jurisdiction (topology declared by the server)."""
        ts = now_iso()
        with self.write() as c:
            row = c.execute("SELECT id FROM regions WHERE name = ?", (name,)).fetchone()
            region_id = row["id"] if row else new_id("region")
            if row is None:
                c.execute(
                    "INSERT INTO regions (id, name, created_at, jurisdiction, is_primary) VALUES (?, ?, ?, ?, ?)",
                    (region_id, name, ts, jurisdiction, int(primary)),
                )
            else:
                c.execute(
                    "UPDATE regions SET jurisdiction = ?, is_primary = ? WHERE id = ?",
                    (jurisdiction, int(primary), region_id),
                )
            for cell in cells:
                c.execute(
                    "INSERT INTO cells VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                    (new_id("cell"), region_id, cell, ts),
                )

    def eligible_regions(self, environment_id: str) -> list[dict[str, Any]]:
        """Regions that may serve the environment: the primary, and those a Region Enablement made eligible."""
        return self.all(
            "SELECT r.* FROM regions r LEFT JOIN environment_regions er "
            "ON er.region_id = r.id AND er.environment_id = ? "
            "WHERE r.is_primary = 1 OR er.state = 'eligible' ORDER BY r.is_primary DESC, r.id",
            environment_id,
        )

    def environment_region_states(self, environment_id: str) -> dict[str, dict[str, Any]]:
        rows = self.all("SELECT * FROM environment_regions WHERE environment_id = ?", environment_id)
        return {r["region_id"]: r for r in rows}

    def set_environment_region(
        self,
        c: sqlite3.Connection,
        environment_id: str,
        region_id: str,
        state: str,
        operation_id: str,
        reason: str | None,
    ) -> None:
        c.execute(
            "INSERT INTO environment_regions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (environment_id, region_id) "
            "DO UPDATE SET state = excluded.state, operation_id = excluded.operation_id, reason = excluded.reason, "
            "updated_at = excluded.updated_at",
            (environment_id, region_id, state, operation_id, reason, now_iso()),
        )

    # Listed without --all: live allocations, and the last failed one of a crash-looping environment (its marker).
    LISTED_ALLOCATIONS = (
        "(a.state IN ('planned', 'pulling', 'starting', 'ready', 'draining') OR a.id IN "
        "(SELECT last_allocation_id FROM environment_heal WHERE crash_loop = 1))"
    )

    def allocation_views(
        self, where: str, *args: Any, newest_first: bool = False, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Allocations with their region, cell and environment names, and whether their deployment owns the route
        (by id, at most `limit`)."""
        rows = self.all(
            "SELECT a.*, r.name AS region, c.name AS cell, e.name AS environment, "
            "(o.deployment_id IS NOT NULL) AS route_owner FROM allocations a "
            "JOIN regions r ON r.id = a.region_id JOIN cells c ON c.id = a.cell_id "
            "JOIN environments e ON e.id = a.environment_id "
            "LEFT JOIN route_owners o ON o.environment_id = a.environment_id AND o.deployment_id = a.deployment_id "
            f"WHERE {where} ORDER BY a.id{' DESC' if newest_first else ''}{' LIMIT ?' if limit else ''}",
            *args,
            *([limit] if limit else []),
        )
        keys = (
            "id", "deployment_id", "environment", "state", "region", "cell", "region_id", "cell_id", "artifact_digest",
            "route_owner", "health", "created_at", "updated_at",
        )  # fmt: skip
        return [{k: bool(r[k]) if k == "route_owner" else r[k] for k in keys} for r in rows]

    def live_operations(
        self, c: sqlite3.Connection, environment_id: str, kinds: tuple[str, ...], *, exclude: str
    ) -> list[dict[str, Any]]:
        """Unfinished operations of `kinds` on an environment (read in the caller's write transaction)."""
        from rhone_local.domain.operations import TERMINAL_STATES

        rows = c.execute(
            f"SELECT id, kind, state FROM operations WHERE kind IN ({', '.join('?' * len(kinds))}) AND id != ? "
            f"AND state NOT IN ({', '.join('?' * len(TERMINAL_STATES))}) "
            "AND json_extract(params, '$.environment_id') = ? ORDER BY id",
            (*kinds, exclude, *sorted(TERMINAL_STATES), environment_id),
        ).fetchall()
        return [dict(r) for r in rows]

    # -- provider and runtime service bindings ---------------------------------------------------------------------
    def provider_bindings(self, environment_id: str, *, live: bool = True) -> list[dict[str, Any]]:
        states = ("binding", "ready", "unbinding") if live else ("binding", "ready", "unbinding", "removed", "failed")
        marks = ", ".join("?" * len(states))
        return self.all(
            f"SELECT b.*, r.name AS region FROM provider_bindings b JOIN regions r ON r.id = b.region_id "
            f"WHERE b.environment_id = ? AND b.state IN ({marks}) ORDER BY b.name, r.name",
            environment_id,
            *states,
        )

    def provider_binding(self, binding_id: str) -> dict[str, Any] | None:
        return self.one(
            "SELECT b.*, r.name AS region FROM provider_bindings b JOIN regions r ON r.id = b.region_id WHERE b.id = ?",
            binding_id,
        )

    def bindings_of_resource(self, resource: str, *, exclude: str | None = None) -> list[dict[str, Any]]:
        """Bindings of an external resource still in use in any environment, with the environment's name: live ones,
        and removed ones whose environment still runs allocations started before the removal (they keep the
        binding's variables until they stop)."""
        return self.all(
            "SELECT b.*, e.name AS environment FROM provider_bindings b JOIN environments e ON e.id = b.environment_id "
            "WHERE b.resource = ? AND b.id != ? AND (b.state IN ('binding', 'ready', 'unbinding') OR "
            "(b.state = 'removed' AND EXISTS (SELECT 1 FROM allocations a WHERE a.environment_id = b.environment_id "
            "AND a.region_id = b.region_id AND a.created_at <= b.updated_at "
            "AND a.state IN ('planned', 'pulling', 'starting', 'ready', 'draining'))))",
            resource,
            exclude or "",
        )

    def provisioned(self, environment_id: str, name: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM provisioned_data WHERE environment_id = ? AND name = ?", environment_id, name)

    def all_provisioned(self) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM provisioned_data ORDER BY environment_id, name")

    def record_provisioned(self, c: sqlite3.Connection, environment_id: str, name: str, plan: Any) -> None:
        c.execute(
            "INSERT INTO provisioned_data VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (environment_id, name) DO NOTHING",
            (environment_id, name, plan.kind, plan.location, plan.role, now_iso()),
        )

    def forget_provisioned(self, c: sqlite3.Connection, environment_id: str, name: str) -> None:
        c.execute("DELETE FROM provisioned_data WHERE environment_id = ? AND name = ?", (environment_id, name))

    def allocations_given(self, c: sqlite3.Connection, binding: dict[str, Any]) -> list[str]:
        """Live allocations that received a binding's variables (started in its environment and region while it
        was ready), read in the caller's transaction."""
        rows = c.execute(
            "SELECT id FROM allocations WHERE environment_id = ? AND region_id = ? AND created_at >= ? "
            "AND state IN ('planned', 'pulling', 'starting', 'ready', 'draining') ORDER BY id",
            (binding["environment_id"], binding["region_id"], binding["created_at"]),
        ).fetchall()
        return [r["id"] for r in rows]

    def secret_names(self, binding_id: str) -> list[str]:
        return [
            r["name"]
            for r in self.all("SELECT name FROM binding_secrets WHERE binding_id = ? ORDER BY name", binding_id)
        ]

    def ready_providers(self, environment_id: str, region_id: str | None = None) -> list[str]:
        """Names of providers with a ready binding in the environment (in one region, when given)."""
        rows = self.all(
            "SELECT DISTINCT name FROM provider_bindings WHERE environment_id = ? AND state = 'ready' "
            "AND (? IS NULL OR region_id = ?) ORDER BY name",
            environment_id,
            region_id,
            region_id,
        )
        return [r["name"] for r in rows]

    def service_bindings(self, environment_id: str) -> list[dict[str, Any]]:
        return self.all(
            "SELECT s.*, r.name AS region FROM runtime_service_bindings s JOIN regions r ON r.id = s.region_id "
            "WHERE s.environment_id = ? AND s.state = 'ready' ORDER BY r.name, s.service",
            environment_id,
        )

    def bound_services(self, environment_id: str, region_id: str) -> list[str]:
        rows = self.all(
            "SELECT service FROM runtime_service_bindings WHERE environment_id = ? AND region_id = ? "
            "AND state = 'ready'",
            environment_id,
            region_id,
        )
        return [r["service"] for r in rows]

    def engine_service_bindings(self, environment_id: str, region_id: str) -> list[dict[str, Any]]:
        """A lane's ready runtime services served by an engine Rhone Local runs (Redis, NATS)."""
        return self.all(
            "SELECT * FROM runtime_service_bindings WHERE environment_id = ? AND region_id = ? AND state = 'ready' "
            "AND provider IN ('redis', 'nats') ORDER BY service",
            environment_id,
            region_id,
        )

    def engine_lanes(self) -> list[dict[str, Any]]:
        """Every lane and engine some ready runtime service needs running."""
        return self.all(
            "SELECT DISTINCT environment_id, region_id, provider FROM runtime_service_bindings "
            "WHERE state = 'ready' AND provider IN ('redis', 'nats')"
        )

    def live_allocation_ids(self, environment_id: str, region_id: str) -> list[str]:
        rows = self.all(
            "SELECT id FROM allocations WHERE environment_id = ? AND region_id = ? "
            "AND state IN ('planned', 'pulling', 'starting', 'ready', 'draining') ORDER BY id",
            environment_id,
            region_id,
        )
        return [r["id"] for r in rows]

    def set_service_endpoint(
        self, environment_id: str, region_id: str, provider: str, endpoints: dict[str, str]
    ) -> None:
        """Record where a lane's engine listens now (it came back on another port): allocations started from now on
        receive it, and the ones before are stale for the next scale or promotion."""
        with self.write() as c:
            for service, endpoint in endpoints.items():
                c.execute(
                    "UPDATE runtime_service_bindings SET endpoint = ?, updated_at = ? WHERE environment_id = ? "
                    "AND region_id = ? AND provider = ? AND service = ? AND state = 'ready' AND endpoint != ?",
                    (endpoint, now_iso(), environment_id, region_id, provider, service, endpoint),
                )

    def allocation_environment(self, environment_id: str, region_id: str) -> dict[str, str]:
        """What an allocation receives from its environment in its region: its settings, each ready provider
        binding's resource and secrets (which win over a setting of the same name), and each runtime service's
        endpoint. Read at start, never logged."""
        variables = {s["name"]: s["value"] for s in self.settings(environment_id)}
        for binding in self.all(
            "SELECT * FROM provider_bindings WHERE environment_id = ? AND region_id = ? AND state = 'ready' "
            "ORDER BY name",
            environment_id,
            region_id,
        ):
            prefix = "RHONE_PROVIDER_" + binding["name"].upper().replace("-", "_")
            variables[prefix + "_KIND"] = binding["kind"]
            variables[prefix + "_RESOURCE"] = binding["resource"]
            for secret in self.all("SELECT name, value FROM binding_secrets WHERE binding_id = ?", binding["id"]):
                variables[secret["name"]] = secret["value"]
        for service in self.all(
            "SELECT service, endpoint FROM runtime_service_bindings WHERE environment_id = ? AND region_id = ? "
            "AND state = 'ready'",
            environment_id,
            region_id,
        ):
            variables["RHONE_SERVICE_" + service["service"].upper() + "_URL"] = service["endpoint"]
        return variables

    # -- allocations (the runner's rows) -----------------------------------------------------------------------------
    def insert_allocation(self, alloc: dict[str, Any]) -> None:
        columns = (
            "id", "deployment_id", "environment_id", "artifact_digest", "region_id", "cell_id", "state", "version",
            "pid", "port", "health", "created_at", "updated_at", "bindings_digest",
        )  # fmt: skip
        values = [json.dumps(alloc[c]) if c == "health" and alloc[c] is not None else alloc[c] for c in columns]
        self.conn.execute(
            f"INSERT INTO allocations ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values
        )

    def move_allocation(self, alloc: dict[str, Any], state: str, **columns: Any) -> dict[str, Any] | None:
        """Compare-and-swap an allocation to `state` (and `columns`) from the version the caller read; None when
        someone moved it first."""
        sets = "".join(f", {name} = ?" for name in columns)
        values = [json.dumps(v) if name == "health" else v for name, v in columns.items()]
        row = self.conn.execute(
            f"UPDATE allocations SET state = ?, version = version + 1, updated_at = ?{sets} "
            "WHERE id = ? AND version = ? RETURNING *",
            (state, now_iso(), *values, alloc["id"], alloc["version"]),
        ).fetchone()
        return _row(row)

    def allocation(self, alloc_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM allocations WHERE id = ?", alloc_id)

    def allocations_of(self, deployment_id: str) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM allocations WHERE deployment_id = ? ORDER BY id", deployment_id)

    def allocations_in(self, *states: str) -> list[dict[str, Any]]:
        return self.all(
            f"SELECT * FROM allocations WHERE state IN ({', '.join('?' * len(states))}) ORDER BY id", *states
        )

    def cells_of(self, region_id: str) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM cells WHERE region_id = ? ORDER BY id", region_id)

    def superseded_previews(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        """Allocations an older deployment of the same app runs in `deployment`'s own environment, where that older
        deployment is validated (preview_ready), does not own the environment's route, and is not being promoted or
        rolled back to anywhere: a newer validated preview supersedes exactly those. A deployment still validating
        is never touched (its own pipeline decides), nor is the route owner's production."""
        return self.all(
            "SELECT a.* FROM allocations a JOIN deployments d ON d.id = a.deployment_id "
            "WHERE d.app_id = ? AND a.environment_id = ? AND d.environment_id = a.environment_id AND d.id < ? "
            "AND d.state = 'preview_ready' AND a.state IN ('planned', 'pulling', 'starting', 'ready') "
            "AND NOT EXISTS (SELECT 1 FROM route_owners o WHERE o.environment_id = a.environment_id "
            "                AND o.deployment_id = d.id) "
            "AND NOT EXISTS (SELECT 1 FROM operations op WHERE op.kind IN ('promote', 'rollback') "
            "                AND op.state NOT IN ('healthy', 'rolled_back', 'failed') "
            "                AND json_extract(op.params, '$.deployment_id') = d.id) "
            "ORDER BY a.id",
            deployment["app_id"],
            deployment["environment_id"],
            deployment["id"],
        )

    def stray_allocations(self) -> list[dict[str, Any]]:
        """Ready allocations that nothing claims: in an environment that is not their deployment's own lane, whose
        route their deployment does not own, while no promotion or rollback is changing that environment (one places
        its target there, and drains the previous owner only once the edge has the new epoch) — for example, a
        replacement that started just as the route moved away."""
        return self.all(
            "SELECT a.* FROM allocations a JOIN deployments d ON d.id = a.deployment_id "
            "WHERE a.state = 'ready' AND d.environment_id != a.environment_id "
            "AND NOT EXISTS (SELECT 1 FROM route_owners o WHERE o.environment_id = a.environment_id "
            "                AND o.deployment_id = a.deployment_id) "
            "AND NOT EXISTS (SELECT 1 FROM operations op WHERE op.kind IN ('promote', 'rollback') "
            "                AND op.state NOT IN ('healthy', 'rolled_back', 'failed') "
            "                AND json_extract(op.params, '$.environment_id') = a.environment_id) "
            "ORDER BY a.id"
        )

    def newest_previews(self) -> list[dict[str, Any]]:
        """The newest preview_ready deployment of each app environment."""
        return self.all(
            "SELECT d.* FROM deployments d WHERE d.state = 'preview_ready' AND d.id = ("
            "  SELECT MAX(id) FROM deployments x WHERE x.app_id = d.app_id AND x.environment_id = d.environment_id "
            "  AND x.state = 'preview_ready')"
        )

    def log_allocations(
        self, app_id: str, *, environment: str | None, deployment_id: str | None, active_since: str
    ) -> list[dict[str, Any]]:
        """The app's allocations whose output `rhone logs` shows: a deployment's, all of them; otherwise those live
        or ended since `active_since`; optionally of one environment."""
        where = ["d.app_id = ?"]
        args: list[Any] = [app_id]
        if deployment_id is not None:
            where.append("a.deployment_id = ?")
            args.append(deployment_id)
        else:
            where.append("(a.state IN ('planned', 'pulling', 'starting', 'ready', 'draining') OR a.updated_at >= ?)")
            args.append(active_since)
        if environment is not None:
            where.append("e.name = ?")
            args.append(environment)
        return self.all(
            "SELECT a.id, a.deployment_id, e.name AS environment FROM allocations a "
            "JOIN deployments d ON d.id = a.deployment_id JOIN environments e ON e.id = a.environment_id "
            f"WHERE {' AND '.join(where)} ORDER BY a.id LIMIT 200",
            *args,
        )

    def route_owned_environments(self) -> list[dict[str, Any]]:
        """Every environment with a route owner: the environment's row with the owner's deployment id."""
        return self.all(
            "SELECT e.*, o.deployment_id AS owner_deployment_id FROM route_owners o "
            "JOIN environments e ON e.id = o.environment_id ORDER BY e.id"
        )

    def route_owner_of(self, environment_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM route_owners WHERE environment_id = ?", environment_id)

    def mark_crash_loop(self, alloc_id: str, failures: int, next_attempt_in: float) -> None:
        """Annotate the last failed allocation of a crash-looping environment (it is terminal; nothing races it)."""
        marker = {"failures": failures, "next_attempt_in": next_attempt_in, "at": now_iso()}
        self.conn.execute(
            "UPDATE allocations SET health = json_set(COALESCE(health, '{}'), '$.crash_loop', json(?)), "
            "version = version + 1 WHERE id = ?",
            (json.dumps(marker), alloc_id),
        )

    def end_crash_loop(self, environment_id: str) -> None:
        self.conn.execute(
            "UPDATE environment_heal SET crash_loop = 0, updated_at = ? WHERE environment_id = ?",
            (now_iso(), environment_id),
        )

    def scaling(self, environment_id: str) -> bool:
        """A scale operation of the environment is under way (it converges the instances itself)."""
        return (
            self.one(
                "SELECT 1 AS x FROM operations WHERE kind = 'scale' AND state NOT IN ('scaled', 'failed') "
                "AND json_extract(params, '$.environment_id') = ? LIMIT 1",
                environment_id,
            )
            is not None
        )

    # -- healing ---------------------------------------------------------------------------------------------------
    def heal_state(self, environment_id: str) -> dict[str, Any]:
        row = self.one("SELECT * FROM environment_heal WHERE environment_id = ?", environment_id)
        return row or {"environment_id": environment_id, "failures": 0, "next_attempt_at": 0.0, "crash_loop": 0}

    def record_heal(
        self,
        environment_id: str,
        *,
        failures: int,
        next_attempt_at: float,
        crash_loop: bool,
        last_allocation_id: str | None,
        last_error: str | None,
    ) -> None:
        self.conn.execute(
            "INSERT INTO environment_heal VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (environment_id) DO UPDATE SET "
            "failures = excluded.failures, next_attempt_at = excluded.next_attempt_at, "
            "crash_loop = excluded.crash_loop, last_allocation_id = excluded.last_allocation_id, "
            "last_error = excluded.last_error, updated_at = excluded.updated_at",
            (environment_id, failures, next_attempt_at, int(crash_loop), last_allocation_id, last_error, now_iso()),
        )

    # -- environment settings ---------------------------------------------------------------------------------------
    def settings(self, environment_id: str) -> list[dict[str, Any]]:
        return self.all(
            "SELECT name, value, secret, operation_id, updated_at FROM environment_settings WHERE environment_id = ? "
            "ORDER BY name",
            environment_id,
        )

    def change_settings(
        self,
        c: sqlite3.Connection,
        environment_id: str,
        operation_id: str,
        *,
        values: dict[str, str],
        secret: bool,
        unset: list[str],
    ) -> None:
        ts = now_iso()
        c.executemany(
            "INSERT INTO environment_settings VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (environment_id, name) DO UPDATE "
            "SET value = excluded.value, secret = excluded.secret, operation_id = excluded.operation_id, "
            "updated_at = excluded.updated_at",
            [(environment_id, name, value, int(secret), operation_id, ts) for name, value in sorted(values.items())],
        )
        c.executemany(
            "DELETE FROM environment_settings WHERE environment_id = ? AND name = ?",
            [(environment_id, name) for name in unset],
        )

    def provided_names(self, environment_id: str) -> set[str]:
        """Variables the environment provides its allocations: its settings and its live bindings' secrets."""
        rows = self.all(
            "SELECT name FROM environment_settings WHERE environment_id = ? UNION "
            "SELECT s.name FROM binding_secrets s JOIN provider_bindings b ON b.id = s.binding_id "
            "WHERE b.environment_id = ? AND b.state IN ('binding', 'ready', 'unbinding')",
            environment_id,
            environment_id,
        )
        return {r["name"] for r in rows}

    def newest_deployment(self, environment_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM deployments WHERE environment_id = ? ORDER BY id DESC LIMIT 1", environment_id)

    def environment_by_id(self, environment_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM environments WHERE id = ?", environment_id)

    def live_deployments(self, environment_id: str) -> list[str]:
        """Deployments with live allocations in the environment, oldest first."""
        rows = self.all(
            "SELECT DISTINCT deployment_id FROM allocations WHERE environment_id = ? "
            "AND state IN ('planned', 'pulling', 'starting', 'ready', 'draining') ORDER BY deployment_id",
            environment_id,
        )
        return [r["deployment_id"] for r in rows]

    # -- builds ------------------------------------------------------------------------------------------------------
    def record_build(self, c: sqlite3.Connection, deployment: dict[str, Any], build_key: str, digest: str) -> None:
        c.execute(
            "INSERT INTO builds VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (deployment_id) DO UPDATE SET "
            "build_key = excluded.build_key, artifact_digest = excluded.artifact_digest",
            (deployment["id"], deployment["app_id"], deployment["source_digest"], build_key, digest, now_iso()),
        )

    def built_deployments(self, app_id: str, source_digest: str, build_key: str) -> list[dict[str, Any]]:
        """The app's deployments whose build recorded an artifact from this source with this build key, newest
        first."""
        return self.all(
            "SELECT deployment_id AS id, artifact_digest FROM builds WHERE app_id = ? AND source_digest = ? "
            "AND build_key = ? ORDER BY deployment_id DESC LIMIT 20",
            app_id,
            source_digest,
            build_key,
        )

    # -- retention ---------------------------------------------------------------------------------------------------
    def retained_deployments(self, history_cutoff: str, keep_last: int) -> set[str]:
        """Deployments retention keeps (see rhone_local/retention.py for why each kind)."""
        from rhone_local.domain.operations import TERMINAL_STATES

        terminal = sorted(TERMINAL_STATES)
        queries = [
            ("SELECT deployment_id AS id FROM route_owners", ()),
            (
                "SELECT e.previous_deployment_id AS id FROM route_events e JOIN route_owners o "
                "ON o.route_key = e.route_key AND o.epoch = e.epoch",
                (),
            ),
            ("SELECT deployment_id AS id FROM route_events WHERE created_at >= ?", (history_cutoff,)),
            ("SELECT previous_deployment_id AS id FROM route_events WHERE created_at >= ?", (history_cutoff,)),
            (
                "SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY app_id ORDER BY id DESC) AS n "
                "FROM deployments) WHERE n <= ?",
                (keep_last,),
            ),
            (
                "SELECT MAX(id) AS id FROM deployments WHERE state = 'preview_ready' GROUP BY app_id, environment_id",
                (),
            ),
            ("SELECT id FROM deployments WHERE state NOT IN ('preview_ready', 'failed')", ()),
            (
                "SELECT DISTINCT deployment_id AS id FROM allocations "
                "WHERE state IN ('planned', 'pulling', 'starting', 'ready', 'draining')",
                (),
            ),
            (
                "SELECT json_extract(params, '$.deployment_id') AS id FROM operations "
                f"WHERE kind IN ('promote', 'rollback') AND state NOT IN ({', '.join('?' * len(terminal))})",
                tuple(terminal),
            ),
        ]
        kept: set[str] = set()
        for sql, args in queries:
            kept.update(r["id"] for r in self.all(sql, *args) if r["id"])
        return kept

    def deployment_digests(self) -> list[dict[str, Any]]:
        return self.all("SELECT id, state, source_digest, artifact_digest FROM deployments ORDER BY id")

    def finished_allocations(self) -> list[dict[str, Any]]:
        return self.all("SELECT id, deployment_id FROM allocations WHERE state IN ('stopped', 'failed') ORDER BY id")

    def bootstrap_workspace(self) -> dict[str, Any] | None:
        """The workspace Rhone Local created on its first start (its owner administers the machine)."""
        return self.one("SELECT * FROM workspaces ORDER BY created_at, id LIMIT 1")

    # -- lookups by id or name -------------------------------------------------------------------------------------
    def workspace(self, ref: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM workspaces WHERE id = ? OR name = ?", ref, ref)

    def workspaces_of(self, user_id: str) -> list[dict[str, Any]]:
        return self.all(
            "SELECT w.*, m.role FROM workspaces w JOIN members m ON m.workspace_id = w.id "
            "WHERE m.user_id = ? ORDER BY w.id",
            user_id,
        )

    def project(self, workspace_id: str, ref: str) -> dict[str, Any] | None:
        return self.one(
            "SELECT * FROM projects WHERE workspace_id = ? AND (id = ? OR name = ?)", workspace_id, ref, ref
        )

    def app(self, project_id: str, ref: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM apps WHERE project_id = ? AND (id = ? OR name = ?)", project_id, ref, ref)

    def app_named_elsewhere(
        self, workspace_id: str, name: str, *, exclude: str, conn: sqlite3.Connection | None = None
    ) -> dict[str, Any] | None:
        """Another app of the workspace with this name (whatever its project), with its project's name: app names
        name routes (`<app>--<env>`), so two apps of one name would claim the same hostnames."""
        row = (
            (conn or self.conn)
            .execute(
                "SELECT a.*, p.name AS project FROM apps a JOIN projects p ON p.id = a.project_id "
                "WHERE a.workspace_id = ? AND a.name = ? AND a.id != ? ORDER BY a.id LIMIT 1",
                (workspace_id, name, exclude),
            )
            .fetchone()
        )
        return _row(row)

    def app_by_id(self, app_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM apps WHERE id = ?", app_id)

    def environment(self, app_id: str, ref: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM environments WHERE app_id = ? AND (id = ? OR name = ?)", app_id, ref, ref)

    def environments_of(self, app_id: str) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM environments WHERE app_id = ? ORDER BY id", app_id)

    def update_environment(self, c: sqlite3.Connection, environment_id: str, **policy: bool) -> dict[str, Any]:
        """Set policy columns (`frozen`, `approval_required`) of an environment in the caller's transaction; its row."""
        assert set(policy) <= {"frozen", "approval_required"}
        sets = ", ".join(f"{name} = ?" for name in policy)
        c.execute(f"UPDATE environments SET {sets} WHERE id = ?", (*(int(v) for v in policy.values()), environment_id))
        return _row(c.execute("SELECT * FROM environments WHERE id = ?", (environment_id,)).fetchone())  # type: ignore[return-value]

    def page(
        self, table: str, where: str, args: tuple, *, limit: int, cursor: str | None, newest_first: bool = False
    ) -> list[dict[str, Any]]:
        """Rows of `table` matching `where`, ordered by id (ids are time-ordered, so `newest_first` is creation
        order reversed), after `cursor` in that order."""
        assert table in {
            "projects",
            "apps",
            "environments",
            "operations",
            "audit",
            "tokens",
            "deployments",
            "route_events",
        }
        sql = f"SELECT * FROM {table} WHERE {where}"
        if cursor:
            sql += " AND id < ?" if newest_first else " AND id > ?"
            args = (*args, cursor)
        sql += " ORDER BY id DESC LIMIT ?" if newest_first else " ORDER BY id LIMIT ?"
        return self.all(sql, *args, limit + 1)

    def route_history(
        self, app_id: str, environment_id: str, *, limit: int, after: int | None, newest_first: bool
    ) -> list[dict[str, Any]]:
        """An app environment's route events, by sequence (one more than `limit`, to tell whether a page follows)."""
        sql = "SELECT * FROM route_events WHERE app_id = ? AND environment_id = ?"
        args: list[Any] = [app_id, environment_id]
        if after is not None:
            sql += " AND seq < ?" if newest_first else " AND seq > ?"
            args.append(after)
        sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        return self.all(sql, *args, limit + 1)

    def newest_preview_ready(self, app_id: str, environment_id: str) -> str | None:
        """The id of an app environment's newest preview_ready deployment: the one whose preview still runs (every
        older one was superseded)."""
        row = self.one(
            "SELECT MAX(id) AS id FROM deployments WHERE app_id = ? AND environment_id = ? AND state = 'preview_ready'",
            app_id,
            environment_id,
        )
        return row["id"] if row else None

    def owned_routes(self, deployment_id: str) -> list[dict[str, Any]]:
        """The routes this deployment owns, with their environment's name."""
        return self.all(
            "SELECT o.*, e.name AS environment FROM route_owners o JOIN environments e ON e.id = o.environment_id "
            "WHERE o.deployment_id = ? ORDER BY e.name",
            deployment_id,
        )

    # -- members and tokens ----------------------------------------------------------------------------------------
    def members(self, workspace_id: str) -> list[dict[str, Any]]:
        return self.all(
            "SELECT u.id AS user_id, u.name, u.email, m.role, m.created_at FROM members m "
            "JOIN users u ON u.id = m.user_id WHERE m.workspace_id = ? ORDER BY m.created_at, u.id",
            workspace_id,
        )

    def add_member(self, c: sqlite3.Connection, workspace_id: str, email: str, name: str, role: str) -> dict:
        user = _row(c.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone())
        ts = now_iso()
        if user is None:
            user = {"id": new_id("user"), "name": name, "email": email, "created_at": ts}
            c.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (user["id"], name, email, ts))
        existing = c.execute(
            "SELECT role FROM members WHERE workspace_id = ? AND user_id = ?", (workspace_id, user["id"])
        ).fetchone()
        if existing is not None:
            return {"user_id": user["id"], "name": user["name"], "email": email, "role": existing[0], "added": False}
        c.execute("INSERT INTO members VALUES (?, ?, ?, ?)", (workspace_id, user["id"], role, ts))
        return {
            "user_id": user["id"],
            "name": user["name"],
            "email": email,
            "role": role,
            "added": True,
            "created_at": ts,
        }

    def create_token(
        self,
        c: sqlite3.Connection,
        *,
        subject_kind: str,
        subject_id: str,
        name: str,
        secret_hash: str,
        expires_at: str | None = None,
        workspace_id: str | None = None,
        role: str | None = None,
        token_id: str | None = None,
        allocation_id: str | None = None,
    ) -> dict[str, Any]:
        """A user token is bound to `workspace_id` with at most `role` there (a token bound to no workspace acts in
        none); a runtime token acts for its identity, and only while `allocation_id` (when given) is live."""
        token = {
            "id": token_id or new_id("token"),
            "subject_kind": subject_kind,
            "subject_id": subject_id,
            "name": name,
            "created_at": now_iso(),
            "expires_at": expires_at,
            "workspace_id": workspace_id,
            "role": role,
            "allocation_id": allocation_id,
        }
        c.execute(
            "INSERT INTO tokens (id, secret_hash, subject_kind, subject_id, name, created_at, expires_at, "
            "workspace_id, role, allocation_id) VALUES (:id, :secret_hash, :subject_kind, :subject_id, :name, "
            ":created_at, :expires_at, :workspace_id, :role, :allocation_id)",
            {**token, "secret_hash": secret_hash},
        )
        return token

    def owner_tokens(self, c: sqlite3.Connection, workspace_id: str) -> list[str]:
        """Ids of the valid tokens that act as an owner in the workspace: bound to it, owner-capable, unrevoked,
        unexpired, and held by a member who is an owner there (read in the caller's transaction)."""
        rows = c.execute(
            "SELECT t.id FROM tokens t JOIN members m ON m.user_id = t.subject_id AND m.workspace_id = t.workspace_id "
            "WHERE t.workspace_id = ? AND t.subject_kind = 'user' AND m.role = 'owner' "
            "AND (t.role IS NULL OR t.role = 'owner') AND t.revoked_at IS NULL "
            "AND (t.expires_at IS NULL OR t.expires_at > ?) ORDER BY t.id",
            (workspace_id, now_iso()),
        ).fetchall()
        return [row["id"] for row in rows]

    def revoke_token(self, c: sqlite3.Connection, token_id: str) -> dict[str, Any]:
        """Revoke a token (a second revocation keeps the first time); returns its row."""
        c.execute("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", (now_iso(), token_id))
        return _row(c.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone())  # type: ignore[return-value]

    def first_owner(self, workspace_id: str) -> dict[str, Any] | None:
        """The workspace's longest-standing owner (the one a locked-out Rhone Local recovers)."""
        return self.one(
            "SELECT u.* FROM members m JOIN users u ON u.id = m.user_id WHERE m.workspace_id = ? AND m.role = 'owner' "
            "ORDER BY m.created_at, u.id LIMIT 1",
            workspace_id,
        )

    def create_runtime_identity(self, c: sqlite3.Connection, workspace_id: str, app_id: str) -> dict[str, Any]:
        identity = {
            "id": new_id("runtime_identity"),
            "workspace_id": workspace_id,
            "app_id": app_id,
            "created_at": now_iso(),
        }
        c.execute("INSERT INTO runtime_identities VALUES (?, ?, ?, ?)", tuple(identity.values()))
        return identity

    # -- counts (tests and the "nothing changed" checks) -------------------------------------------------------------
    def count(self, table: str) -> int:
        assert table.isidentifier()
        return self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    # -- operations ------------------------------------------------------------------------------------------------
    def create_operation(
        self,
        c: sqlite3.Connection,
        *,
        workspace_id: str,
        kind: str,
        target_kind: str,
        target_id: str,
        params: dict,
        principal: Principal,
        request_id: str,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        ts = now_iso()
        first = MACHINES[kind].happy_path[0]  # queued, or requested for promotions
        op = {
            "id": new_id("operation"),
            "workspace_id": workspace_id,
            "kind": kind,
            "state": first,
            "version": 1,
            "target_kind": target_kind,
            "target_id": target_id,
            "params": params,
            "stages": [{"state": first, "entered_at": ts, "evidence": {}, "error": None}],
            "error": None,
            "actor_kind": principal.kind,
            "actor_id": principal.id,
            "idempotency_key": idempotency_key,
            "request_id": request_id,
            "created_at": ts,
            "updated_at": ts,
            "lease_owner": None,
            "lease_until": None,
        }
        c.execute(
            "INSERT INTO operations VALUES (:id, :workspace_id, :kind, :state, :version, :target_kind, :target_id, "
            ":params, :stages, NULL, :actor_kind, :actor_id, :idempotency_key, :request_id, :created_at, "
            ":updated_at, NULL, NULL)",
            {**op, "params": json.dumps(params), "stages": json.dumps(op["stages"])},
        )
        return op

    def operation(self, op_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM operations WHERE id = ?", op_id)

    def claim_operation(
        self,
        worker: str,
        lease_seconds: float,
        terminal: frozenset[str],
        *,
        pool: tuple[str, frozenset[str]] | None = None,
        outside_pool: bool = False,
    ) -> dict[str, Any] | None:
        """Lease the oldest runnable operation (not terminal, lease free or expired) to `worker`; None if none.
        With `pool` (a kind and its states), only operations of that kind in one of those states — or, with
        `outside_pool`, every other runnable operation."""
        now = time.time()
        marks = ",".join("?" * len(terminal))
        pool_filter, pool_args = "", ()
        if pool is not None:
            kind, states = pool
            pool_filter = (
                f"AND {'NOT ' if outside_pool else ''}(kind = ? AND state IN ({','.join('?' * len(states))})) "
            )
            pool_args = (kind, *sorted(states))
        row = self.conn.execute(
            f"UPDATE operations SET lease_owner = ?, lease_until = ? WHERE id = ("
            f"  SELECT id FROM operations WHERE state NOT IN ({marks}) {pool_filter}"
            f"  AND (lease_until IS NULL OR lease_until < ?) ORDER BY id LIMIT 1"
            f") RETURNING *",
            (worker, now + lease_seconds, *sorted(terminal), *pool_args, now),
        ).fetchone()
        return _row(row)

    def advance_operation(
        self,
        op: dict[str, Any],
        new_state: str,
        *,
        evidence: dict | None = None,
        error: dict | None = None,
        worker: str | None = None,
        lease_seconds: float = 30.0,
        conn: sqlite3.Connection | None = None,
    ) -> dict[str, Any] | None:
        """Record `new_state` iff the operation is still at `op['version']` (and leased to `worker`, if given,
        whose lease is renewed by the same write).

        Returns the updated operation, or None when the write was stale and changed nothing.
        """
        stage = {"state": new_state, "entered_at": now_iso(), "evidence": evidence or {}, "error": error}
        sql = (
            "UPDATE operations SET state = ?, version = version + 1, stages = json_insert(stages, '$[#]', json(?)), "
            "error = COALESCE(?, error), updated_at = ? WHERE id = ? AND version = ?"
        )
        args: list[Any] = [
            new_state,
            json.dumps(stage),
            json.dumps(error) if error else None,
            stage["entered_at"],
            op["id"],
            op["version"],
        ]
        if worker is not None:
            sql = sql.replace("updated_at = ?", "updated_at = ?, lease_until = ?")
            args.insert(4, time.time() + lease_seconds)
            sql += " AND lease_owner = ?"
            args.append(worker)
        row = (conn or self.conn).execute(sql + " RETURNING *", args).fetchone()
        return _row(row)

    def renew_lease(self, op_id: str, worker: str, lease_seconds: float) -> bool:
        cursor = self.conn.execute(
            "UPDATE operations SET lease_until = ? WHERE id = ? AND lease_owner = ?",
            (time.time() + lease_seconds, op_id, worker),
        )
        return cursor.rowcount == 1

    def deployment(self, deployment_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM deployments WHERE id = ?", deployment_id)

    def update_deployment(self, c: sqlite3.Connection, deployment_id: str, **columns: Any) -> None:
        columns["updated_at"] = now_iso()
        sets = ", ".join(f"{name} = ?" for name in columns)
        values = [json.dumps(v) if name in JSON_COLUMNS and v is not None else v for name, v in columns.items()]
        c.execute(f"UPDATE deployments SET {sets} WHERE id = ?", (*values, deployment_id))

    def release_leases_except(self, owner_prefix: str) -> int:
        """Free every lease not held by this process's workers (named `owner_prefix…`).

        Called once at start-up: one server owns a data directory (it holds its lock), so a lease from
        any other owner belongs to a process that died — without this its operations would wait for the lease
        to expire before resuming."""
        cursor = self.conn.execute(
            "UPDATE operations SET lease_owner = NULL, lease_until = NULL "
            "WHERE lease_owner IS NOT NULL AND lease_owner NOT LIKE ? || '%'",
            (owner_prefix,),
        )
        return cursor.rowcount

    def release_operation(self, op_id: str, worker: str) -> None:
        self.conn.execute(
            "UPDATE operations SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
            (op_id, worker),
        )

    # -- route ownership ------------------------------------------------------------------------------------------
    def route_owner(self, app_id: str, environment_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM route_owners WHERE app_id = ? AND environment_id = ?", app_id, environment_id)

    def route_owner_named(self, app_id: str, environment_name: str) -> dict[str, Any] | None:
        """The owner of the app's route in the environment named `environment_name` (production, for the gates)."""
        return self.one(
            "SELECT r.* FROM route_owners r JOIN environments e ON e.id = r.environment_id "
            "WHERE r.app_id = ? AND e.name = ?",
            app_id,
            environment_name,
        )

    def route_key_holder(self, c: sqlite3.Connection, route_key: str, app_id: str) -> dict[str, Any] | None:
        """The other app whose route holds `route_key` (read in the caller's transaction), with its project's name."""
        row = c.execute(
            "SELECT a.id, a.name, a.workspace_id, p.name AS project FROM route_owners r JOIN apps a ON a.id = r.app_id "
            "JOIN projects p ON p.id = a.project_id WHERE r.route_key = ? AND r.app_id != ?",
            (route_key, app_id),
        ).fetchone()
        return _row(row)

    def move_route(
        self,
        c: sqlite3.Connection,
        *,
        app_id: str,
        environment_id: str,
        route_key: str,
        expect_epoch: int,
        deployment_id: str,
        artifact_digest: str,
        operation_id: str,
        kind: str,
    ) -> dict[str, Any] | None:
        """Compare-and-swap the route owner from `expect_epoch` to the next epoch, and append its event, in the
        caller's transaction. Returns the event, or None when the epoch moved (nothing is written)."""
        ts = now_iso()
        current = self.route_owner(app_id, environment_id)
        if expect_epoch == 0:
            if current is not None:
                return None
            c.execute(
                "INSERT INTO route_owners VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
                (app_id, environment_id, route_key, deployment_id, artifact_digest, operation_id, ts),
            )
        else:
            moved = c.execute(
                "UPDATE route_owners SET deployment_id = ?, artifact_digest = ?, epoch = epoch + 1, "
                "operation_id = ?, updated_at = ? WHERE app_id = ? AND environment_id = ? AND epoch = ?",
                (deployment_id, artifact_digest, operation_id, ts, app_id, environment_id, expect_epoch),
            ).rowcount
            if moved != 1:
                return None
        row = c.execute(
            "INSERT INTO route_events (route_key, app_id, environment_id, epoch, deployment_id, artifact_digest, "
            "previous_deployment_id, operation_id, kind, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "RETURNING *",
            (
                route_key,
                app_id,
                environment_id,
                expect_epoch + 1,
                deployment_id,
                artifact_digest,
                current["deployment_id"] if current else None,
                operation_id,
                kind,
                ts,
            ),
        ).fetchone()
        return _row(row)

    def route_owner_history(self, environment_id: str) -> list[str]:
        """Every deployment that has owned the environment's route, most recent first (each once)."""
        rows = self.all(
            "SELECT deployment_id, MAX(seq) AS last FROM route_events WHERE environment_id = ? "
            "GROUP BY deployment_id ORDER BY last DESC",
            environment_id,
        )
        return [row["deployment_id"] for row in rows]

    # -- database migrations applied per environment ----------------------------------------------------------------
    def record_applied_migrations(
        self,
        c: sqlite3.Connection,
        environment_id: str,
        migrations: dict[str, str],
        *,
        deployment_id: str,
        operation_id: str,
    ) -> None:
        """Add `migrations` (name -> directory) to the environment's applied set, in the caller's transaction (the
        route move that applies them); names already there keep their first record."""
        ts = now_iso()
        c.executemany(
            "INSERT INTO environment_migrations VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (environment_id, name) DO NOTHING",
            [
                (environment_id, name, directory, deployment_id, operation_id, ts)
                for name, directory in migrations.items()
            ],
        )

    def applied_migrations(self, environment_id: str) -> dict[str, str]:
        """The environment's applied migrations: name -> the directory it was found in."""
        rows = self.all(
            "SELECT name, directory FROM environment_migrations WHERE environment_id = ? ORDER BY name", environment_id
        )
        return {row["name"]: row["directory"] for row in rows}

    def route_event_owners(self) -> list[dict[str, Any]]:
        """Each (environment, deployment) that ever owned a route, with the first operation that made it the owner."""
        return self.all(
            "SELECT environment_id, deployment_id, MIN(operation_id) AS operation_id FROM route_events "
            "GROUP BY environment_id, deployment_id ORDER BY MIN(seq)"
        )

    def route_snapshot(self) -> tuple[int, list[dict[str, Any]], str]:
        """Every route owner, the sequence number they reflect (read in one transaction), and their checksum."""
        from rhone_local.domain.routing import Owner, checksum

        conn = self.conn
        conn.execute("BEGIN")
        try:
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM route_events").fetchone()[0]
            owners = [_row(r) for r in conn.execute("SELECT * FROM route_owners").fetchall()]
        finally:
            conn.execute("COMMIT")
        mapping = {o["route_key"]: Owner(o["deployment_id"], o["artifact_digest"], o["epoch"]) for o in owners}
        return seq, owners, checksum(seq, mapping)  # type: ignore[return-value]

    def route_events_after(self, seq: int, limit: int = 500) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM route_events WHERE seq > ? ORDER BY seq LIMIT ?", seq, limit)

    # -- the edge's feed (docs/architecture.md, "The edge") -------------------------------------------------------
    def data_version(self) -> int:
        """A number that changes whenever another connection commits: a cheap "did anything change?" for followers."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def last_route_seq(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM route_events").fetchone()[0]

    def edge_candidates(self) -> list[dict[str, Any]]:
        """Every ready allocation in a region eligible to serve its environment: its port, deployment, environment
        name, whether that environment is its deployment's own (its lane), and whether it belongs to its deployment's
        app (a route's candidates must)."""
        return self.all(
            "SELECT a.id, a.port, a.deployment_id, e.name AS environment, "
            "(d.environment_id = a.environment_id) AS lane, (d.app_id = e.app_id) AS own_app "
            "FROM allocations a JOIN environments e ON e.id = a.environment_id "
            "JOIN deployments d ON d.id = a.deployment_id "
            "JOIN regions r ON r.id = a.region_id "
            "LEFT JOIN environment_regions er ON er.environment_id = a.environment_id AND er.region_id = a.region_id "
            "WHERE a.state = 'ready' AND (r.is_primary = 1 OR er.state = 'eligible') "
            "ORDER BY a.id"
        )

    def deployment_ids(self) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT id FROM deployments ORDER BY id").fetchall()]

    # -- idempotency ------------------------------------------------------------------------------------------------
    def idempotent_response(self, c: sqlite3.Connection, principal_id: str, key: str) -> dict[str, Any] | None:
        return _row(
            c.execute("SELECT * FROM idempotency WHERE principal_id = ? AND key = ?", (principal_id, key)).fetchone()
        )

    def remember_response(
        self,
        c: sqlite3.Connection,
        *,
        principal_id: str,
        key: str,
        method: str,
        path: str,
        body_hash: str,
        status: int,
        response: Any,
    ) -> None:
        c.execute(
            "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (principal_id, key, method, path, body_hash, status, json.dumps(response), now_iso()),
        )

    # -- audit --------------------------------------------------------------------------------------------------------
    def audit(
        self,
        *,
        workspace_id: str | None,
        principal: Principal,
        action: str,
        target: str,
        request_id: str,
        result: str,
        detail: dict | None = None,
        conn: sqlite3.Connection | None = None,
    ) -> None:
        (conn or self.conn).execute(
            "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                new_id("audit"),
                workspace_id,
                now_iso(),
                principal.kind,
                principal.id,
                action,
                target,
                request_id,
                result,
                json.dumps(detail) if detail else None,
            ),
        )
