"""The PostgreSQL backend of the store (`rhone local up --store postgresql://…`, docs/multi-node.md).

`PostgresStore` is `Store` with another core: every aggregate method and every statement are SQLite's, run through
`PgConnection`, which maps `?`/`:name` placeholders to psycopg's and hands back rows that behave like `sqlite3.Row`.
What differs between the databases is here, once:
- the migration files (one set, in the portable subset of docs/architecture.md, "The store") are translated by
  `pg_schema`, applied under an advisory lock and recorded in `schema_migrations`;
- the few SQLite functions the statements use (`json_extract`, `json_insert(…, '$[#]', …)`, `json_set`) and the
  lease clock `rhone_now()` (the database server's clock) are SQL functions defined at migration;
- a write transaction (`write()`) takes one transaction-scoped advisory lock, so multi-statement writes are
  serialized as SQLite's `BEGIN IMMEDIATE` serializes them: the checks that read before they write (idempotency keys,
  environment busy, names, bootstrap) stay true across nodes. Single-statement writes (claims, stage records, lease
  renewals) do not take it: they are compare-and-swaps, and claims skip the rows another claimer has locked;
- route events are numbered from a counter row updated in the route move's transaction (commit order, no gap);
- triggers NOTIFY every commit that changes an operation, a route or an allocation; a listener thread wakes the
  process's `ChangeNotifier` and counts changes for the edge feed (`data_version`).

One connection per thread, as for SQLite, rather than a pool: a store method reads through `self.conn` inside the
caller's write transaction and must see that transaction's own writes, which only the same connection does; the
threads are few and long-lived (API threads, workers, the reconciler).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types.string import StrDumper

from rhone_local.store import Store
from rhone_local.store.core import (
    SCHEMA_VERSION,
    NotRhoneDatabase,
    SchemaTooNew,
    StorageConflict,
    StorageError,
    StoreUnavailable,
    migration_scripts,
)

log = logging.getLogger("rhone_local.store")

CHANNEL = "rhone_changes"
CONNECT_TIMEOUT_SECONDS = 10


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for `name` (every node computes the same)."""
    return int.from_bytes(hashlib.sha256(f"rhone:{name}".encode()).digest()[:8], "big", signed=True)


MIGRATION_LOCK = lock_key("migrations")
WRITE_LOCK = lock_key("write")

# -- migrations -----------------------------------------------------------------------------------------------------
_NOW_UTC = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT PRIMARY KEY"),
    (re.compile(r"\)\s*STRICT\s*;"), ");"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    # Byte order, as SQLite compares text: ids sort in creation order whatever the database's locale.
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),
    (re.compile(r"strftime\('%Y-%m-%dT%H:%M:%fZ', 'now'\)"), _NOW_UTC),
)
_NOT_PORTABLE = re.compile(r"\b(AUTOINCREMENT|PRAGMA|strftime|json_\w+|INSERT OR|julianday|datetime|GLOB)\b", re.I)


def pg_schema(script: str, name: str = "migration") -> str:
    """A migration file of the portable subset (docs/architecture.md, "The store") as PostgreSQL runs it; ValueError
    naming what is not portable."""
    code = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    for pattern, replacement in _TYPES:
        code = pattern.sub(replacement, code)
    leftover = _NOT_PORTABLE.search(code)
    if leftover:
        raise ValueError(f"{name} is not in the portable subset of SQL: {leftover.group(0)!r}")
    return code


# Besides operations: every table the edge feed reads (routes, and the allocations it may route to with what decides
# whether they may serve), so `data_version` moves whenever its view could.
NOTIFYING_TABLES = (
    "route_owners",
    "route_events",
    "allocations",
    "deployments",
    "environments",
    "environment_regions",
    "regions",
)

# Defined at every start (CREATE OR REPLACE): the SQLite functions the statements use, as PostgreSQL functions of the
# same name and meaning for the paths the statements pass; the lease clock; the counter of route events; the
# notifications.
PG_SUPPORT = f"""
CREATE OR REPLACE FUNCTION rhone_now() RETURNS double precision LANGUAGE sql VOLATILE
    AS $$ SELECT extract(epoch FROM clock_timestamp())::double precision $$;
CREATE OR REPLACE FUNCTION json(value text) RETURNS json LANGUAGE sql IMMUTABLE AS $$ SELECT value::json $$;
CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT doc::jsonb #>> string_to_array(substr(path, 3), '.') $$;
CREATE OR REPLACE FUNCTION json_insert(doc text, path text, value json) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT CASE WHEN path = '$[#]' THEN (doc::jsonb || jsonb_build_array(value::jsonb))::text END $$;
CREATE OR REPLACE FUNCTION json_set(doc text, path text, value json) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT jsonb_set(doc::jsonb, string_to_array(substr(path, 3), '.'), value::jsonb)::text $$;
CREATE TABLE IF NOT EXISTS route_event_counter (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL);
INSERT INTO route_event_counter SELECT 1, COALESCE(MAX(seq), 0) FROM route_events ON CONFLICT (id) DO NOTHING;
CREATE OR REPLACE FUNCTION rhone_notify_operation() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN PERFORM pg_notify('{CHANNEL}', NEW.id); RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION rhone_notify_table() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME); RETURN NULL; END $$;
""" + "".join(
    # Created once (a DO block, not DROP and CREATE at every start: that would lock the live tables of running nodes).
    f"""DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'rhone_notify' AND tgrelid = '{table}'::regclass) THEN
        CREATE TRIGGER rhone_notify {when} ON {table} {each};
    END IF;
END $$;
"""
    for table, when, each in (
        ("operations", "AFTER INSERT OR UPDATE OF version", "FOR EACH ROW EXECUTE FUNCTION rhone_notify_operation()"),
        *(
            (table, "AFTER INSERT OR UPDATE OR DELETE", "FOR EACH STATEMENT EXECUTE FUNCTION rhone_notify_table()")
            for table in NOTIFYING_TABLES
        ),
    )
)


# -- the connection adapter -----------------------------------------------------------------------------------------
@lru_cache(maxsize=2048)
def pg_statement(sql: str) -> str:
    """An SQLite statement with psycopg's placeholders: `?` -> `%s`, `:name` -> `%(name)s`, a literal `%` doubled;
    quoted text is left as it is (bar the `%`)."""
    out, i, n = [], 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch == "'":
            end = sql.index("'", i + 1)
            while end + 1 < n and sql[end + 1] == "'":
                end = sql.index("'", end + 2)
            out.append(sql[i : end + 1].replace("%", "%%"))
            i = end + 1
        elif ch == "?":
            out.append("%s")
            i += 1
        elif ch == "%":
            out.append("%%")
            i += 1
        elif ch == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_") and sql[i - 1 : i] != ":":
            match = re.match(r"\w+", sql[i + 1 :])
            assert match is not None
            out.append(f"%({match.group(0)})s")
            i += 1 + match.end()
        else:
            out.append(ch)
            i += 1
    return "".join(out)


class Row:
    """A row as `sqlite3.Row` gives it: by index or by column name, and `dict(row)`."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: dict[str, int], values: Sequence[Any]) -> None:
        self._names, self._values = names, values

    def keys(self) -> list[str]:
        return list(self._names)

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key] if isinstance(key, int) else self._values[self._names[key]]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _rows(cursor: Any) -> Any:
    names = {column.name: index for index, column in enumerate(cursor.description or ())}
    return lambda values: Row(names, values)


class _BoolAsInteger(Dumper):
    """Python booleans as 0/1: the schema's flags are INTEGER columns (as in SQLite)."""

    oid = psycopg.adapters.types["int8"].oid
    format = Format.TEXT

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


class PgConnection:
    """A psycopg connection that runs the store's SQLite statements and raises the store's errors."""

    def __init__(self, raw: psycopg.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        with _store_errors():
            return self.raw.execute(pg_statement(sql), parameters if parameters is not None else ())

    def executemany(self, sql: str, parameters: Iterable[Any]) -> Any:
        with _store_errors():
            cursor = self.raw.cursor()
            cursor.executemany(pg_statement(sql), list(parameters))
            return cursor

    def script(self, code: str) -> None:
        """Statements without parameters, as written (a migration)."""
        with _store_errors():
            self.raw.execute(code.encode())

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.errors.IntegrityError as error:
        raise StorageConflict(str(error).strip()) from error
    except psycopg.OperationalError as error:  # the server out of reach or restarted (AdminShutdown is one)
        raise StoreUnavailable(str(error).strip()) from error
    except psycopg.Error as error:
        raise StorageError(str(error).strip()) from error


def _end_quietly(conn: PgConnection) -> None:
    """Roll back what is left of a transaction that failed (nothing to do on a connection that broke)."""
    if not conn.raw.closed and not conn.raw.broken and conn.in_transaction:
        with suppress(StorageError):
            conn.execute("ROLLBACK")


def connect(url: str) -> psycopg.Connection:
    raw = psycopg.connect(url, autocommit=True, row_factory=_rows, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    raw.adapters.register_dumper(bool, _BoolAsInteger)
    # Text as text (not psycopg's untyped default): SQLite's statements give a parameter no other type to infer.
    raw.adapters.register_dumper(str, StrDumper)
    return raw


# -- the store ------------------------------------------------------------------------------------------------------
class PostgresStore(Store):
    """The control database on PostgreSQL: Store's methods over a database several nodes share."""

    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"
    SINGLE_OWNER = False

    def __init__(self, url: str, root: Path) -> None:
        """Open (and migrate) the database at `url`. `root` is this node's data directory: `path.parent` is where
        the node keeps its local files, as for SQLite."""
        self.url = url
        self.path = root / "postgresql"
        self._local = threading.local()
        self._changes = 0
        self._notifiers: list[Any] = []
        self._listener: threading.Thread | None = None
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self.migrate()

    def _connect(self) -> PgConnection:  # type: ignore[override]
        with _store_errors():
            return PgConnection(connect(self.url))

    @property
    def conn(self) -> PgConnection:  # type: ignore[override]
        """This thread's connection, opened again when the last one broke (a restarted database server)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.raw.closed or conn.raw.broken:
            conn = self._local.conn = self._connect()
        return conn

    @contextmanager
    def write(self) -> Iterator[PgConnection]:  # type: ignore[override]
        """A short write transaction, serialized with every other one of every node (one advisory lock), all or
        nothing. An exception inside rolls it back."""
        conn = self.conn
        try:
            conn.script(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")  # one round trip
            yield conn
        except BaseException:
            _end_quietly(conn)
            raise
        try:
            conn.execute("COMMIT")
        except StorageError:
            _end_quietly(conn)
            raise

    @contextmanager
    def read(self) -> Iterator[PgConnection]:  # type: ignore[override]
        """A read transaction: every read inside sees one snapshot of committed rows."""
        conn = self.conn
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def migrate(self) -> None:
        """Apply the migration files this database lacks (recorded in `schema_migrations`), all in one transaction
        under an advisory lock: of several nodes starting at once, one migrates and the others find it done."""
        conn = self.conn
        with self.write():
            conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            self._refuse_foreign_pg(conn)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
            current = max(applied, default=0)
            self.migrated_from = current
            if current > SCHEMA_VERSION:
                raise SchemaTooNew(f"the database has schema version {current}; this rhone knows {SCHEMA_VERSION}")
            for number, script in migration_scripts():
                if number in applied:
                    continue
                conn.script(pg_schema(script, f"migration {number}"))
                conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (number,))
            conn.script(PG_SUPPORT)

    @staticmethod
    def _refuse_foreign_pg(conn: PgConnection) -> None:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
            ).fetchall()
        ]
        if tables and "schema_migrations" not in tables:
            shown = ", ".join(tables[:5]) + (", …" if len(tables) > 5 else "")
            raise NotRhoneDatabase(f"the database holds tables that are not Rhone Local's ({shown})")

    def table_names(self) -> list[str]:
        rows = self.conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall()
        return sorted(row[0] for row in rows)

    def _next_route_seq(self, c: Any) -> int:
        return c.execute("UPDATE route_event_counter SET seq = seq + 1 RETURNING seq").fetchone()[0]

    def data_version(self) -> int:
        """The number of change notifications this process received: it moves whenever a node commits a change to
        an operation or to a table the edge feed reads (NOTIFYING_TABLES)."""
        self._listen()
        return self._changes

    # -- notifications ------------------------------------------------------------------------------------------------
    def listen_for_changes(self, notifier: Any) -> None:
        self._notifiers.append(notifier)
        self._listen()

    def _listen(self) -> None:
        """Start the listener thread once; return when it listens (a commit after this is never missed)."""
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen_loop, name="store-listener", daemon=True)
            self._listener.start()
        self._listening.wait(CONNECT_TIMEOUT_SECONDS)

    def _listen_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                with connect(self.url) as raw:
                    raw.execute(f"LISTEN {CHANNEL}")
                    self._changed(None)  # whatever happened while no connection listened
                    self._listening.set()
                    while not self._stopping.is_set():
                        for note in raw.notifies(timeout=0.5):
                            self._changed(note.payload)
            except psycopg.Error as error:
                log.warning("listening for store changes failed (%s); listening again", error)
                self._stopping.wait(1.0)

    def _changed(self, payload: str | None) -> None:
        """One notification (`payload`: an operation id or a table name), or None: the listener (re)connected, and
        what was committed while nobody listened is unknown — every waiter reads again."""
        self._changes += 1
        for notifier in self._notifiers:
            if payload is None:
                notifier.everything_changed()
            elif payload.startswith("op_"):
                notifier.changed(payload)
            notifier.work_available()

    def shutdown(self) -> None:
        """Stop listening and close this thread's connection (tests open many stores in one process)."""
        self._stopping.set()
        if self._listener is not None:
            self._listener.join(5)
        self.close()

    # -- locks held across nodes (the route-event publisher's, a node name's) -----------------------------------------
    def session_lock(self, name: str) -> AdvisoryLock:
        return AdvisoryLock(self.url, name)


class AdvisoryLock:
    """A session advisory lock held on a connection of its own: one holder across every node (the route-event
    publisher's `PublisherLock`). The lock ends with its connection, so a holder that dies frees it."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.key = url, lock_key(f"lock:{name}")
        self._conn: psycopg.Connection | None = None

    def acquire(self) -> bool:
        if self._conn is not None:
            return True
        raw = connect(self.url)
        if raw.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]:
            self._conn = raw
            return True
        raw.close()
        return False

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the session's end releases the lock
            self._conn = None
