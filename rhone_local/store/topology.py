"""Regions, cells, and which regions each environment may serve from.

Guarantees: `ensure_region` is idempotent; `set_environment_region` is an upsert in the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from rhone_local.domain.ids import new_id
from rhone_local.store.core import StoreCore, Tx, now_iso


class TopologyStore(StoreCore):
    def regions(self) -> list[dict[str, Any]]:
        """Every region, in creation order."""
        return self.all("SELECT * FROM regions ORDER BY id")

    def cells(self) -> list[dict[str, Any]]:
        """Every cell, in creation order."""
        return self.all("SELECT * FROM cells ORDER BY id")

    def region(self, ref: str) -> dict[str, Any] | None:
        """A region by id or name; None if unknown."""
        return self.one("SELECT * FROM regions WHERE id = ? OR name = ?", ref, ref)

    def primary_region(self) -> dict[str, Any]:
        """The primary region (the first one, on a database from before regions had a primary)."""
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
        """An environment's region records (eligible, enabling, failed …) by region id."""
        rows = self.all("SELECT * FROM environment_regions WHERE environment_id = ?", environment_id)
        return {r["region_id"]: r for r in rows}

    def set_environment_region(
        self,
        c: Tx,
        environment_id: str,
        region_id: str,
        state: str,
        operation_id: str,
        reason: str | None,
    ) -> None:
        """In the caller's transaction: upsert an environment's state in a region."""
        c.execute(
            "INSERT INTO environment_regions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (environment_id, region_id) "
            "DO UPDATE SET state = excluded.state, operation_id = excluded.operation_id, reason = excluded.reason, "
            "updated_at = excluded.updated_at",
            (environment_id, region_id, state, operation_id, reason, now_iso()),
        )

    def cells_of(self, region_id: str) -> list[dict[str, Any]]:
        """A region's cells, in creation order."""
        return self.all("SELECT * FROM cells WHERE region_id = ? ORDER BY id", region_id)
