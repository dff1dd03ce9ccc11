"""Idempotency keys: the first answer to a request, replayed for its copies.

Guarantees: read and recorded in the mutation's own write transaction, so concurrent copies of one request are
serialized and create one resource.
"""

from __future__ import annotations

import json
from typing import Any

from rhone_local.store.core import StoreCore, Tx, now_iso, row_dict


class IdempotencyStore(StoreCore):
    def idempotent_response(self, c: Tx, principal_id: str, key: str) -> dict[str, Any] | None:
        """In the caller's write transaction: the response first given to this key, None if it is new."""
        return row_dict(
            c.execute("SELECT * FROM idempotency WHERE principal_id = ? AND key = ?", (principal_id, key)).fetchone()
        )

    def remember_response(
        self,
        c: Tx,
        *,
        principal_id: str,
        key: str,
        method: str,
        path: str,
        body_hash: str,
        status: int,
        response: Any,
    ) -> None:
        """In the caller's write transaction: the response to give every later copy of the request."""
        c.execute(
            "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (principal_id, key, method, path, body_hash, status, json.dumps(response), now_iso()),
        )
