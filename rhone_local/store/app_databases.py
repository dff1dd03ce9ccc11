"""The statements that administer apps' own databases, never the control store: the SQLite files Rhone Local
provisions for environments and for the runtime services it implements itself, and the PostgreSQL databases and
login roles it provisions on the server given with `rhone local up --app-databases` (rhone_local/provisioning.py
decides where each lives and what allocations receive).

Each function is idempotent: a provisioning stage retried after a crash finds what the first attempt created.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

# Services Rhone Local still implements itself, per environment and region (domain/topology.py, LOCAL_SERVICES): an
# idempotency table in a SQLite database, and a directory of objects. The others run on engines (engines.py).
LOCAL_SERVICE_SCHEMAS = {
    "idempotency": "CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, response BLOB, created_at REAL)",
    "object_storage": None,  # a directory of objects
}


def create_sqlite(path: Path, schema: str | None = None) -> None:
    """The SQLite database at `path` in WAL mode (readers and a writer of several instances side by side), with
    `schema` applied, private to this user."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        if schema:
            db.execute(schema)
    db.close()
    os.chmod(path, 0o600)


def ensure_postgres_database(admin: Any, database: str, role: str, password: str) -> None:
    """On the admin connection `admin` (autocommit): `role` logs in with `password` (a fresh one each time: only
    allocations started from now on receive it) and owns `database`, which no other role may connect to."""
    exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    admin.execute(f"{verb} ROLE {_ident(role)} LOGIN PASSWORD {_literal(password)}")
    if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
        admin.execute(f"CREATE DATABASE {_ident(database)} OWNER {_ident(role)}")
    admin.execute(f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC")


def drop_postgres_database(admin: Any, database: str, role: str | None) -> None:
    """`database` and its `role` gone, connections to it closed (absent ones are not an error)."""
    admin.execute(f"DROP DATABASE IF EXISTS {_ident(database)} WITH (FORCE)")
    if role:
        admin.execute(f"DROP ROLE IF EXISTS {_ident(role)}")


def _ident(name: str) -> str:
    # Names are ours (letters, digits, underscores), quoted all the same.
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
