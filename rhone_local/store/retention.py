"""What retention (`rhone local gc`) may keep or remove: reads only."""

from __future__ import annotations

from typing import Any

from rhone_local.store.core import LIVE, StoreCore


class RetentionStore(StoreCore):
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
                f"SELECT DISTINCT deployment_id AS id FROM allocations WHERE state IN {LIVE}",
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
        """Every deployment's state and digests: which artifacts and sources retention must keep."""
        return self.all("SELECT id, state, source_digest, artifact_digest FROM deployments ORDER BY id")
