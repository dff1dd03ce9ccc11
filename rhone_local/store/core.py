"""The store's core: connections, transactions, migrations, and how rows come back.

Rules (they are what keeps the invariants true under concurrency and crashes; docs/architecture.md, "The store"):
- every connection runs in autocommit mode (`isolation_level=None`) with WAL, `busy_timeout` and foreign keys;
- a state transition is ONE conditional statement (compare-and-swap on `version`, or on `lease_owner`) — a writer
  holding stale knowledge changes nothing and learns so from the row count;
- a multi-statement write runs in `BEGIN IMMEDIATE` (`Store.write()`), which takes the write lock up front so
  `busy_timeout` applies (a plain BEGIN that upgrades from read to write fails instantly with SQLITE_BUSY under
  contention); a method that takes a `tx` runs inside the caller's transaction and commits with it;
- no HTTP or subprocess work inside a transaction.
One connection per thread. Nothing outside this package writes SQL or imports sqlite3 (tests/test_layers.py). The
PostgreSQL backend (postgres.py) runs the same statements through an adapter: statements are written in the portable
subset docs/architecture.md ("The store") describes, and the few things the databases do differently are methods
or attributes of the core (`SKIP_LOCKED`, `SINGLE_OWNER`, `_next_route_seq`, `rhone_now()`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from rhone_local.domain.allocations import ENDED_STATES, LIVE_STATES
from rhone_local.domain.operations import MACHINES


class Tx(Protocol):
    """A write transaction opened by `Store.write()` (an SQLite connection, or the PostgreSQL adapter's): callers only
    pass it on to store methods that take a `tx`."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...


class StorageError(Exception):
    """A storage failure of the PostgreSQL backend (the server unreachable, a statement refused)."""


class StoreUnavailable(StorageError):
    """The PostgreSQL server could not be reached, or the connection broke (a restart, a failover): transient. The
    thread's next statement connects again; the API answers 503 `store_unavailable` so clients retry."""


class StorageConflict(StorageError):
    """A constraint of the PostgreSQL backend refused a write (a unique index decided between two writers)."""


# Errors the store raises for a storage failure (a full disk, a busy database past its timeout, a broken file, a
# database server out of reach), and for a file that is not a usable database at all: the API maps the first to
# 507/500, start-up the second to a refusal naming the file.
STORAGE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, StorageError)
# A unique index's refusal of a write, on either backend.
CONFLICT_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, StorageConflict)
UNREADABLE_ERRORS: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)

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
SCHEMA_VERSION = 10


class SchemaTooNew(Exception):
    """The database was written by a newer rhone: migrating it backwards is not possible."""


class NotRhoneDatabase(Exception):
    """The file is an SQLite database, but not one Rhone Local started (it has tables and no schema version), or a
    new, empty one where the caller said the database already existed: opening it would write into it."""


class NameTaken(Exception):
    """A unique name (a project's in its workspace, an environment's in its app) was taken by a concurrent write: the
    index decided, and the caller's transaction wrote nothing."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def row_dict(row: sqlite3.Row | None) -> dict[str, Any] | None:
    """A row as a dict, its JSON columns decoded."""
    if row is None:
        return None
    data = dict(row)
    for column in JSON_COLUMNS & data.keys():
        if data[column] is not None:
            data[column] = json.loads(data[column])
    return data


def marks(values: Any) -> str:
    """`?, ?, ?` for an IN list of `values`."""
    return ", ".join("?" * len(values))


def in_list(values: Iterable[str]) -> str:
    """`('a', 'b')`: a constant IN list of state names, from the domain's own tuples (never from input)."""
    names = sorted(values)
    assert all(name.isidentifier() for name in names), names
    return "(" + ", ".join(f"'{name}'" for name in names) + ")"


# The state lists the statements share, written once from the domain's definitions.
LIVE = in_list(LIVE_STATES)  # allocations with (or about to have) a process
NOT_DRAINING = in_list(set(LIVE_STATES) - {"draining"})
ENDED = in_list(ENDED_STATES)
ROUTE_MOVE_ENDED = in_list(MACHINES["promote"].terminal | MACHINES["rollback"].terminal)


def migration_scripts() -> list[tuple[int, str]]:
    """Every migration file, (number, text), in order: one set for both backends (docs/architecture.md, "The
    store")."""
    files = sorted(p for p in resources.files("rhone_local.migrations").iterdir() if p.name.endswith(".sql"))
    return [(int(p.name.split("_", 1)[0]), p.read_text()) for p in files]


def _statements(script: str) -> Iterator[str]:
    """A script's statements one by one (a trailing comment is no statement)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""


class StoreCore:
    """One SQLite database: a connection per thread, short write transactions, migrations at open."""

    # Appended to the claim's inner SELECT: PostgreSQL's row lock that lets concurrent claimers pass each other by
    # (SQLite serializes writers, so it needs none).
    SKIP_LOCKED = ""
    # One server owns an SQLite data directory (its lock): a lease of another process is a dead process's.
    SINGLE_OWNER = True

    def __init__(self, path: Path, *, must_exist: bool = False) -> None:
        """Open (and migrate) the database at `path`. `must_exist`: the caller knows a Rhone Local database was
        already there, so an empty one is refused (NotRhoneDatabase) instead of being given a fresh schema."""
        self.path = path
        self._local = threading.local()
        self._refuse_foreign(must_exist)
        self.migrate()

    # -- connections and transactions ------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=ON")
        # The lease clock of the statements (PostgreSQL defines the same function on the database server's clock).
        conn.create_function("rhone_now", 0, time.time)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        """Close this thread's connection (a thread that used the store closes it before it ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A short write transaction (BEGIN IMMEDIATE): serialized with every other writer, all or nothing. An
        exception inside rolls it back."""
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

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read transaction: every read inside sees one snapshot of committed rows."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        """One row of a query (for this package and for tests; nothing else in rhone_local writes SQL)."""
        return row_dict(self.conn.execute(sql, args).fetchone())

    def all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Every row of a query (for this package and for tests)."""
        return [row_dict(r) for r in self.conn.execute(sql, args).fetchall()]  # type: ignore[misc]

    def _refuse_foreign(self, must_exist: bool) -> None:
        """NotRhoneDatabase for a database this store did not create, read on a plain connection (no WAL switch, no
        write) so that a refused file is left exactly as it was."""
        probe = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        try:
            if probe.execute("PRAGMA user_version").fetchone()[0] != 0:
                return
            names = [r[0] for r in probe.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")]
        finally:
            probe.close()
        if names:
            shown = ", ".join(sorted(names)[:5]) + (", …" if len(names) > 5 else "")
            raise NotRhoneDatabase(f"{self.path} holds tables that are not Rhone Local's ({shown})")
        if must_exist:
            raise NotRhoneDatabase(f"{self.path} holds no Rhone Local tables")

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION in one write transaction (the version read inside it, so of two
        openers at once one migrates and the other finds it done); refuse a newer database."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            self.migrated_from = current  # what start-up fills in after an upgrade depends on it (0: a new database)
            if current > SCHEMA_VERSION:
                raise SchemaTooNew(f"{self.path} has schema version {current}; this rhone knows {SCHEMA_VERSION}")
            for number, script in migration_scripts():
                if number <= current:
                    continue
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _next_route_seq(self, c: Tx) -> int | None:
        """The sequence number of the next route event, in the route move's transaction; None: the database numbers
        it (SQLite's AUTOINCREMENT, in commit order since writers are serialized)."""
        return None

    def listen_for_changes(self, notifier: Any) -> None:
        """Wake `notifier` when another node commits a change. One SQLite store has one server: its own writers
        notify in process, so there is nothing to listen to."""

    def session_lock(self, name: str) -> Any:
        """A lock named `name`, held across every process sharing the store until released or its holder dies (the
        route-event publisher's, a node name's); None: one process per SQLite store, so an in-process lock (or the
        data directory's) is enough (route_stream.LocalPublisherLock)."""
        return None

    # -- counts (tests and the "nothing changed" checks) -------------------------------------------------------------
    def count(self, table: str) -> int:
        """The number of rows of a table (tests' "nothing else changed" checks)."""
        assert table.isidentifier()
        return self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def table_names(self) -> list[str]:
        """The database's tables, sorted (tests' "nothing else changed" snapshots)."""
        rows = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        return sorted(row[0] for row in rows)

    def data_version(self) -> int:
        """A number that changes whenever another connection commits: a cheap "did anything change?" for followers."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    # -- pages ------------------------------------------------------------------------------------------------------
    def _page(
        self,
        table: str,
        filters: dict[str, Any],
        *,
        limit: int,
        cursor: str | None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Rows of `table` whose columns equal `filters` (a None value is no filter), ordered by id (ids are
        time-ordered, so `newest_first` is creation order reversed), after `cursor` in that order; one more than
        `limit`, to tell whether a page follows."""
        where = [f"{column} = ?" for column, value in filters.items() if value is not None]
        args: list[Any] = [value for value in filters.values() if value is not None]
        if cursor:
            where.append("id < ?" if newest_first else "id > ?")
            args.append(cursor)
        order = "DESC" if newest_first else "ASC"
        return self.all(
            f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?", *args, limit + 1
        )
