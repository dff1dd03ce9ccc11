"""Environment settings (plain and secret values).

Guarantees: a change is written in the transaction that records its operation.
"""

from __future__ import annotations

from typing import Any

from rhone_local.store.core import StoreCore, Tx, now_iso


class SettingStore(StoreCore):
    def settings(self, environment_id: str) -> list[dict[str, Any]]:
        """An environment's settings (secret values included: callers mask them), sorted by name."""
        return self.all(
            "SELECT name, value, secret, operation_id, updated_at FROM environment_settings WHERE environment_id = ? "
            "ORDER BY name",
            environment_id,
        )

    def change_settings(
        self,
        c: Tx,
        environment_id: str,
        operation_id: str,
        *,
        values: dict[str, str],
        secret: bool,
        unset: list[str],
    ) -> None:
        """In the caller's transaction (the operation's): set or remove settings, all or nothing."""
        ts = now_iso()
        c.executemany(
            "INSERT INTO environment_settings VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (environment_id, name) DO UPDATE "
            "SET value = excluded.value, secret = excluded.secret, operation_id = excluded.operation_id, "
            "updated_at = excluded.updated_at",
            [(environment_id, name, value, int(secret), operation_id, ts) for name, value in sorted(values.items())],
        )
        c.executemany(
            "DELETE FROM environment_settings WHERE environment_id = ? AND name = ?",
            [(environment_id, name) for name in unset],
        )
