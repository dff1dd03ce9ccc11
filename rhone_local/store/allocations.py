"""Allocations (the runner's rows), their views, and the healing record of each environment.

Guarantees: every state change is a compare-and-swap on the allocation's version (`move_allocation` returns None when
someone moved it first).
"""

from __future__ import annotations

import json
from typing import Any

from rhone_local.store.core import ENDED, LIVE, NOT_DRAINING, ROUTE_MOVE_ENDED, StoreCore, now_iso, row_dict


class AllocationStore(StoreCore):
    # Listed without --all: live allocations, and the last failed one of a crash-looping environment (its marker).
    LISTED_ALLOCATIONS = (
        f"(a.state IN {LIVE} OR a.id IN (SELECT last_allocation_id FROM environment_heal WHERE crash_loop = 1))"
    )
    VIEW_KEYS = (
        "id", "deployment_id", "environment", "state", "region", "cell", "region_id", "cell_id", "node",
        "artifact_digest", "route_owner", "health", "created_at", "updated_at",
    )  # fmt: skip

    def _allocation_views(
        self, where: list[str], args: list[Any], *, newest_first: bool = False, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Allocations with their region, cell and environment names, and whether their deployment owns the route
        (by id, at most `limit`)."""
        rows = self.all(
            "SELECT a.*, r.name AS region, c.name AS cell, e.name AS environment, "
            "(o.deployment_id IS NOT NULL) AS route_owner FROM allocations a "
            "JOIN regions r ON r.id = a.region_id JOIN cells c ON c.id = a.cell_id "
            "JOIN environments e ON e.id = a.environment_id "
            "LEFT JOIN route_owners o ON o.environment_id = a.environment_id AND o.deployment_id = a.deployment_id "
            f"WHERE {' AND '.join(where)} ORDER BY a.id{' DESC' if newest_first else ''}{' LIMIT ?' if limit else ''}",
            *args,
            *([limit] if limit else []),
        )
        return [{k: bool(r[k]) if k == "route_owner" else r[k] for k in self.VIEW_KEYS} for r in rows]

    def deployment_allocation_views(self, deployment_id: str) -> list[dict[str, Any]]:
        """Every allocation of a deployment, as listed (`_allocation_views`), oldest first."""
        return self._allocation_views(["a.deployment_id = ?"], [deployment_id])

    def app_allocation_views(
        self,
        app_id: str,
        *,
        environment: str | None = None,
        deployment_id: str | None = None,
        all_states: bool = False,
        cursor: str | None = None,
        newest_first: bool = False,
        limit: int,
    ) -> list[dict[str, Any]]:
        """An app's allocations (of one environment or deployment, when given; live ones and crash-loop markers
        unless `all_states`), after `cursor` in id order; at most `limit`."""
        where, args = ["e.app_id = ?"], [app_id]
        if environment is not None:
            where.append("e.name = ?")
            args.append(environment)
        if deployment_id is not None:
            where.append("a.deployment_id = ?")
            args.append(deployment_id)
        if not all_states:
            where.append(self.LISTED_ALLOCATIONS)
        if cursor:
            where.append("a.id < ?" if newest_first else "a.id > ?")
            args.append(cursor)
        return self._allocation_views(where, args, newest_first=newest_first, limit=limit)

    def insert_allocation(self, alloc: dict[str, Any]) -> None:
        """One new allocation row, committed at once (its id is new: no conflict to decide)."""
        columns = (
            "id", "deployment_id", "environment_id", "artifact_digest", "region_id", "cell_id", "state", "version",
            "pid", "port", "health", "created_at", "updated_at", "bindings_digest", "node", "address",
        )  # fmt: skip
        values = [json.dumps(alloc[c]) if c == "health" and alloc[c] is not None else alloc.get(c) for c in columns]
        self.conn.execute(
            f"INSERT INTO allocations ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values
        )

    def insert_hand_over(self, alloc: dict[str, Any], *, leaving_node: str, wanted: int) -> bool:
        """Insert `alloc`, the replacement of an instance on `leaving_node` (a node stopping cleanly), only while its
        deployment runs fewer than `wanted` instances in its environment on other nodes (not draining): one write
        transaction, so a replacement another node placed first is counted and none is placed twice."""
        with self.write() as c:
            row = c.execute(
                "SELECT COUNT(*) FROM allocations WHERE deployment_id = ? AND environment_id = ? "
                f"AND state IN {NOT_DRAINING} AND (node IS NULL OR node != ?)",
                (alloc["deployment_id"], alloc["environment_id"], leaving_node),
            ).fetchone()
            if row[0] >= wanted:
                return False
            self.insert_allocation(alloc)
        return True

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
        return row_dict(row)

    def allocation(self, alloc_id: str) -> dict[str, Any] | None:
        """The allocation, as committed now; None if unknown."""
        return self.one("SELECT * FROM allocations WHERE id = ?", alloc_id)

    def allocations_of(self, deployment_id: str) -> list[dict[str, Any]]:
        """A deployment's allocations in creation order (committed rows)."""
        return self.all("SELECT * FROM allocations WHERE deployment_id = ? ORDER BY id", deployment_id)

    def allocations_in(self, *states: str) -> list[dict[str, Any]]:
        """Every allocation in one of `states`, in creation order (committed rows)."""
        return self.all(
            f"SELECT * FROM allocations WHERE state IN ({', '.join('?' * len(states))}) ORDER BY id", *states
        )

    def superseded_previews(self, deployment: dict[str, Any]) -> list[dict[str, Any]]:
        """Allocations an older deployment of the same app runs in `deployment`'s own environment, where that older
        deployment is validated (preview_ready), does not own the environment's route, and is not being promoted or
        rolled back to anywhere: a newer validated preview supersedes exactly those. A deployment still validating
        is never touched (its own pipeline decides), nor is the route owner's production."""
        return self.all(
            "SELECT a.* FROM allocations a JOIN deployments d ON d.id = a.deployment_id "
            "WHERE d.app_id = ? AND a.environment_id = ? AND d.environment_id = a.environment_id AND d.id < ? "
            f"AND d.state = 'preview_ready' AND a.state IN {NOT_DRAINING} "
            "AND NOT EXISTS (SELECT 1 FROM route_owners o WHERE o.environment_id = a.environment_id "
            "                AND o.deployment_id = d.id) "
            "AND NOT EXISTS (SELECT 1 FROM operations op WHERE op.kind IN ('promote', 'rollback') "
            f"                AND op.state NOT IN {ROUTE_MOVE_ENDED} "
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
            f"                AND op.state NOT IN {ROUTE_MOVE_ENDED} "
            "                AND json_extract(op.params, '$.environment_id') = a.environment_id) "
            "ORDER BY a.id"
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
            where.append(f"(a.state IN {LIVE} OR a.updated_at >= ?)")
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

    def live_deployments(self, environment_id: str) -> list[str]:
        """Deployments with live allocations in the environment, oldest first."""
        rows = self.all(
            "SELECT DISTINCT deployment_id FROM allocations WHERE environment_id = ? "
            f"AND state IN {LIVE} ORDER BY deployment_id",
            environment_id,
        )
        return [r["deployment_id"] for r in rows]

    def live_allocation_ids(self, environment_id: str, region_id: str) -> list[str]:
        """Ids of the allocations with (or about to have) a process in one environment and region."""
        rows = self.all(
            f"SELECT id FROM allocations WHERE environment_id = ? AND region_id = ? AND state IN {LIVE} ORDER BY id",
            environment_id,
            region_id,
        )
        return [r["id"] for r in rows]

    def mark_crash_loop(self, alloc_id: str, failures: int, next_attempt_in: float) -> None:
        """Annotate the last failed allocation of a crash-looping environment (it is terminal; nothing races it)."""
        marker = {"failures": failures, "next_attempt_in": next_attempt_in, "at": now_iso()}
        self.conn.execute(
            "UPDATE allocations SET health = json_set(COALESCE(health, '{}'), '$.crash_loop', json(?)), "
            "version = version + 1 WHERE id = ?",
            (json.dumps(marker), alloc_id),
        )

    def end_crash_loop(self, environment_id: str) -> None:
        """Clear an environment's crash-loop flag (one statement; a person's decision, so last writer wins)."""
        self.conn.execute(
            "UPDATE environment_heal SET crash_loop = 0, updated_at = ? WHERE environment_id = ?",
            (now_iso(), environment_id),
        )

    def heal_state(self, environment_id: str) -> dict[str, Any]:
        """An environment's healing record (failures, back-off, crash loop); zeros if it never healed."""
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
        """Upsert an environment's healing record in one statement (only the healer writes it)."""
        self.conn.execute(
            "INSERT INTO environment_heal VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (environment_id) DO UPDATE SET "
            "failures = excluded.failures, next_attempt_at = excluded.next_attempt_at, "
            "crash_loop = excluded.crash_loop, last_allocation_id = excluded.last_allocation_id, "
            "last_error = excluded.last_error, updated_at = excluded.updated_at",
            (environment_id, failures, next_attempt_at, int(crash_loop), last_allocation_id, last_error, now_iso()),
        )

    def finished_allocations(self) -> list[dict[str, Any]]:
        """Ids and deployments of the allocations that ended (what retention may clean up)."""
        return self.all(f"SELECT id, deployment_id FROM allocations WHERE state IN {ENDED} ORDER BY id")
