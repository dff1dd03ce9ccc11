"""The audit log: one record per mutation (allowed, denied or failed).

Guarantees: a record written with a `tx` commits (or not) with the mutation it describes; without one it commits at
once (a refusal is recorded even though nothing else is written).
"""

from __future__ import annotations

import json
from typing import Any

from rhone_local.domain.access import Principal
from rhone_local.domain.ids import new_id
from rhone_local.store.core import StoreCore, Tx, now_iso


class AuditStore(StoreCore):
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
        tx: Tx | None = None,
    ) -> None:
        """One audit record; with `tx` it commits with the mutation, without one at once."""
        (tx or self.conn).execute(
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

    def audit_page(
        self,
        workspace_id: str,
        *,
        action: str | None = None,
        limit: int,
        cursor: str | None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """A page of a workspace's audit records (optionally one action), in id order (committed rows)."""
        filters = {"workspace_id": workspace_id, "action": action}
        return self._page("audit", filters, limit=limit, cursor=cursor, newest_first=newest_first)
