"""Route ownership: owners, the ordered event log, the migrations each environment applied, and the edges' reads.

Guarantees: `move_route` is a compare-and-swap on the epoch committed with its event (in the caller's
transaction): of two moves from one epoch exactly one commits. Events are numbered in commit order (SQLite
serializes writers; PostgreSQL numbers them from a counter row updated in the move's transaction, whose row lock
orders the moves), gap-free, so a reader never sees sequence N+1 before N. `route_snapshot` reads owners and the
sequence they reflect in one read transaction.
"""

from __future__ import annotations

from typing import Any

from rhone_local.domain.routing import Owner, checksum
from rhone_local.store.core import StoreCore, Tx, now_iso, row_dict


class RouteStore(StoreCore):
    def route_owner(self, app_id: str, environment_id: str) -> dict[str, Any] | None:
        """The route owner of an app's environment; None if nothing serves it."""
        return self.one("SELECT * FROM route_owners WHERE app_id = ? AND environment_id = ?", app_id, environment_id)

    def route_owner_named(self, app_id: str, environment_name: str) -> dict[str, Any] | None:
        """The owner of the app's route in the environment named `environment_name` (production, for the gates)."""
        return self.one(
            "SELECT r.* FROM route_owners r JOIN environments e ON e.id = r.environment_id "
            "WHERE r.app_id = ? AND e.name = ?",
            app_id,
            environment_name,
        )

    def route_key_holder(self, route_key: str, app_id: str, *, tx: Tx | None = None) -> dict[str, Any] | None:
        """The other app whose route holds `route_key`, with its project's name; read in `tx` when given (the route
        move's transaction, so of two apps racing for one key exactly one moves)."""
        row = (
            (tx or self.conn)
            .execute(
                "SELECT a.id, a.name, a.workspace_id, p.name AS project FROM route_owners r "
                "JOIN apps a ON a.id = r.app_id JOIN projects p ON p.id = a.project_id "
                "WHERE r.route_key = ? AND r.app_id != ?",
                (route_key, app_id),
            )
            .fetchone()
        )
        return row_dict(row)

    def move_route(
        self,
        c: Tx,
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
            "INSERT INTO route_events (seq, route_key, app_id, environment_id, epoch, deployment_id, "
            "artifact_digest, previous_deployment_id, operation_id, kind, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (
                self._next_route_seq(c),
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
        return row_dict(row)

    def route_owner_history(self, environment_id: str) -> list[str]:
        """Every deployment that has owned the environment's route, most recent first (each once)."""
        rows = self.all(
            "SELECT deployment_id, MAX(seq) AS last FROM route_events WHERE environment_id = ? "
            "GROUP BY deployment_id ORDER BY last DESC",
            environment_id,
        )
        return [row["deployment_id"] for row in rows]

    def record_applied_migrations(
        self,
        c: Tx,
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
        with self.read() as conn:
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM route_events").fetchone()[0]
            owners = [row_dict(r) for r in conn.execute("SELECT * FROM route_owners").fetchall()]
        mapping = {o["route_key"]: Owner(o["deployment_id"], o["artifact_digest"], o["epoch"]) for o in owners}
        return seq, owners, checksum(seq, mapping)  # type: ignore[return-value]

    def route_events_after(self, seq: int, limit: int = 500) -> list[dict[str, Any]]:
        """Up to `limit` route events after sequence `seq`, in sequence order (committed events only)."""
        return self.all("SELECT * FROM route_events WHERE seq > ? ORDER BY seq LIMIT ?", seq, limit)

    def last_route_seq(self) -> int:
        """The sequence of the newest committed route event (0 if none)."""
        return self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM route_events").fetchone()[0]

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

    def owned_routes(self, deployment_id: str) -> list[dict[str, Any]]:
        """The routes this deployment owns, with their environment's name."""
        return self.all(
            "SELECT o.*, e.name AS environment FROM route_owners o JOIN environments e ON e.id = o.environment_id "
            "WHERE o.deployment_id = ? ORDER BY e.name",
            deployment_id,
        )

    def route_owned_environments(self) -> list[dict[str, Any]]:
        """Every environment with a route owner: the environment's row with the owner's deployment id."""
        return self.all(
            "SELECT e.*, o.deployment_id AS owner_deployment_id FROM route_owners o "
            "JOIN environments e ON e.id = o.environment_id ORDER BY e.id"
        )

    def route_owner_of(self, environment_id: str) -> dict[str, Any] | None:
        """The route owner of an environment; None if nothing serves it."""
        return self.one("SELECT * FROM route_owners WHERE environment_id = ?", environment_id)

    def route_owners_of_app(self, app_id: str) -> list[dict[str, Any]]:
        """The app's routes, with their environment's name."""
        return self.all(
            "SELECT o.*, e.name AS environment FROM route_owners o JOIN environments e ON e.id = o.environment_id "
            "WHERE o.app_id = ? ORDER BY o.route_key",
            app_id,
        )

    def previous_owner(self, route_key: str, epoch: int) -> str | None:
        """The deployment that owned the route before the move that made `epoch` (None: it had no owner before)."""
        row = self.one(
            "SELECT previous_deployment_id FROM route_events WHERE route_key = ? AND epoch = ?", route_key, epoch
        )
        return row["previous_deployment_id"] if row else None

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
