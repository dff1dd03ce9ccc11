"""Databases Rhone Local provisions for an environment (`rhone env bind ENV NAME --kind sqlite|postgres --provision`).

Data must outlive every release, so it lives outside every artifact and every allocation (whose own files are
ephemeral: each allocation gets a fresh copy of its artifact):
- sqlite: a file `data/<environment id>/<name>.sqlite3` under Rhone Local's data directory, handed to allocations as
  `sqlite:////absolute/path`;
- postgres: a database and a login role of its own, with a random password, on the PostgreSQL server Rhone Local was
  given for app databases (`rhone local up --app-databases postgresql://…`, apart from the control store). Other
  roles lose CONNECT on it, so preview's role cannot open production's database.
One environment, one database per provider name: preview never sees production's data. Provisioning is idempotent (a
stage retried after a crash finds what it created), and binding again after an unbind finds the same data.

Also the files of the runtime services Rhone Local still implements itself (`local_service`). The statements
themselves are the store's (`rhone_local/store/app_databases.py`); this module decides where data lives and which URL
allocations receive.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from rhone_local.domain.errors import DomainError
from rhone_local.store.app_databases import (
    LOCAL_SERVICE_SCHEMAS,
    create_sqlite,
    drop_postgres_database,
    ensure_postgres_database,
)

KINDS = ("sqlite", "postgres")


def local_service(directory: Path, service: str) -> str:
    """Create (idempotently) Rhone Local's own implementation of `service` in `directory`; its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    schema = LOCAL_SERVICE_SCHEMAS[service]
    if schema is None:
        (directory / service).mkdir(exist_ok=True)
        return (directory / service).as_uri()
    path = directory / f"{service}.db"
    create_sqlite(path, schema)
    return "sqlite://" + str(path)


@dataclass(frozen=True)
class Plan:
    kind: str
    location: str  # the SQLite file, or the PostgreSQL database name
    role: str | None  # PostgreSQL: the database's own login role
    resource: str  # what the binding records: where the data is, without credentials


class Provisioner:
    def __init__(self, data_dir: Path, app_databases: str | None = None) -> None:
        self.root = data_dir / "data"
        self.app_databases = app_databases  # the admin connection to PostgreSQL for app databases, or None

    def plan(self, environment_id: str, name: str, kind: str) -> Plan:
        """Where an environment's provisioned `name` lives (no side effect; raises when it cannot be provisioned)."""
        if kind == "sqlite":
            path = self.root / environment_id / f"{name}.sqlite3"
            return Plan(kind, str(path), None, "sqlite://" + str(path))
        if kind == "postgres":
            server = self._server()
            lane = hashlib.sha256(environment_id.encode()).hexdigest()[:16]
            identifier = f"rhone_{name.replace('-', '_')[:30]}_{lane}"  # one per environment; at most 63 bytes
            where = f"{server.get('host') or 'localhost'}:{server.get('port') or 5432}"
            return Plan(kind, identifier, identifier, f"postgresql://{where}/{identifier}")
        raise DomainError("not_provisionable", f"only {' and '.join(KINDS)} databases can be provisioned", 409)

    def provision(self, plan: Plan) -> str:
        """Create the database (idempotently); the URL allocations receive, with its credentials."""
        if plan.kind == "sqlite":
            path = Path(plan.location)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            create_sqlite(path)
            return "sqlite:///" + str(path)
        return self._provision_postgres(plan)

    def delete(self, kind: str, location: str, role: str | None) -> None:
        if kind == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(location + suffix).unlink(missing_ok=True)
            return
        with self._admin() as conn:
            drop_postgres_database(conn, location, role)

    # -- PostgreSQL ------------------------------------------------------------------------------------------------
    def _server(self) -> dict[str, str]:
        if not self.app_databases:
            raise DomainError(
                "app_databases_unavailable",
                "this Rhone Local has no PostgreSQL server for app databases; restart it with "
                "`rhone local up --app-databases postgresql://USER@HOST/DB` (a server apart from Rhone Local's own "
                "store), or provision --kind sqlite",
                409,
            )
        from psycopg.conninfo import conninfo_to_dict

        return {k: str(v) for k, v in conninfo_to_dict(self.app_databases).items()}

    def _admin(self):
        import psycopg

        try:
            return psycopg.connect(self.app_databases, autocommit=True, connect_timeout=10)
        except psycopg.Error as error:
            raise DomainError(
                "app_databases_unreachable", f"the PostgreSQL server for app databases does not answer: {error}", 503
            ) from None

    def _provision_postgres(self, plan: Plan) -> str:
        password = secrets.token_urlsafe(24)
        assert plan.role is not None
        with self._admin() as conn:
            ensure_postgres_database(conn, plan.location, plan.role, password)
        server = self._server()
        credentials = f"{quote(plan.role, safe='')}:{quote(password, safe='')}"
        host, port = server.get("host") or "localhost", server.get("port") or "5432"
        if host.startswith("/"):  # a unix-socket directory
            return f"postgresql://{credentials}@/{plan.location}?host={quote(host, safe='/')}&port={port}"
        return f"postgresql://{credentials}@{host}:{port}/{plan.location}"
