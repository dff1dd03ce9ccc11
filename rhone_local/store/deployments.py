"""Deployments, their artifacts and builds.

Guarantees: a deployment's columns change with the operation stage that changes them (`update_deployment` runs in
the stage's transaction); artifacts are immutable (recorded once per digest).
"""

from __future__ import annotations

import json
from typing import Any

from rhone_local.store.core import JSON_COLUMNS, StoreCore, Tx, now_iso


class DeploymentStore(StoreCore):
    def deployment(self, deployment_id: str) -> dict[str, Any] | None:
        """The deployment, as committed now; None if unknown."""
        return self.one("SELECT * FROM deployments WHERE id = ?", deployment_id)

    def insert_deployment(
        self,
        c: Tx,
        *,
        deployment_id: str,
        workspace_id: str,
        app_id: str,
        environment_id: str,
        operation_id: str,
        prebuilt: bool,
        source_digest: str,
        config: dict[str, Any],
        source: dict[str, Any],
    ) -> None:
        """A queued deployment, in the transaction that creates its deploy operation."""
        ts = now_iso()
        c.execute(
            "INSERT INTO deployments VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, NULL, ?, ?, '{}', NULL, ?, ?)",
            (
                deployment_id,
                workspace_id,
                app_id,
                environment_id,
                operation_id,
                int(prebuilt),
                source_digest,
                json.dumps(config),
                json.dumps(source),
                ts,
                ts,
            ),
        )

    def update_deployment(self, c: Tx, deployment_id: str, **columns: Any) -> None:
        """Set columns of a deployment in the caller's transaction (the stage that changes them)."""
        columns["updated_at"] = now_iso()
        sets = ", ".join(f"{name} = ?" for name in columns)
        values = [json.dumps(v) if name in JSON_COLUMNS and v is not None else v for name, v in columns.items()]
        c.execute(f"UPDATE deployments SET {sets} WHERE id = ?", (*values, deployment_id))

    def newest_deployment(self, environment_id: str) -> dict[str, Any] | None:
        """An environment's most recently created deployment; None if none."""
        return self.one("SELECT * FROM deployments WHERE environment_id = ? ORDER BY id DESC LIMIT 1", environment_id)

    def newest_preview_ready(self, app_id: str, environment_id: str) -> str | None:
        """The id of an app environment's newest preview_ready deployment: the one whose preview still runs (every
        older one was superseded)."""
        row = self.one(
            "SELECT MAX(id) AS id FROM deployments WHERE app_id = ? AND environment_id = ? AND state = 'preview_ready'",
            app_id,
            environment_id,
        )
        return row["id"] if row else None

    def newest_previews(self) -> list[dict[str, Any]]:
        """The newest preview_ready deployment of each app environment."""
        return self.all(
            "SELECT d.* FROM deployments d WHERE d.state = 'preview_ready' AND d.id = ("
            "  SELECT MAX(id) FROM deployments x WHERE x.app_id = d.app_id AND x.environment_id = d.environment_id "
            "  AND x.state = 'preview_ready')"
        )

    def deployment_ids(self) -> list[str]:
        """Every deployment's id, in creation order."""
        return [row[0] for row in self.conn.execute("SELECT id FROM deployments ORDER BY id").fetchall()]

    def deployments_page(
        self, app_id: str, *, limit: int, cursor: str | None, newest_first: bool = False
    ) -> list[dict[str, Any]]:
        """A page of an app's deployments, in id order (committed rows)."""
        return self._page("deployments", {"app_id": app_id}, limit=limit, cursor=cursor, newest_first=newest_first)

    def record_artifact(
        self, c: Tx, digest: str, *, workspace_id: str, app_id: str, manifest: dict[str, Any], facts: dict[str, Any]
    ) -> None:
        """In the caller's transaction; an artifact recorded before keeps its first record (artifacts are immutable:
        one digest, one content)."""
        c.execute(
            "INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
            (digest, workspace_id, app_id, json.dumps(manifest), json.dumps(facts), now_iso()),
        )

    def record_build(self, c: Tx, deployment: dict[str, Any], build_key: str, digest: str) -> None:
        """In the caller's transaction: the build a deployment's artifact came from (one per deployment; a rebuild
        replaces it)."""
        c.execute(
            "INSERT INTO builds VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (deployment_id) DO UPDATE SET "
            "build_key = excluded.build_key, artifact_digest = excluded.artifact_digest",
            (deployment["id"], deployment["app_id"], deployment["source_digest"], build_key, digest, now_iso()),
        )

    def built_deployments(self, app_id: str, source_digest: str, build_key: str) -> list[dict[str, Any]]:
        """The app's deployments whose build recorded an artifact from this source with this build key, newest
        first."""
        return self.all(
            "SELECT deployment_id AS id, artifact_digest FROM builds WHERE app_id = ? AND source_digest = ? "
            "AND build_key = ? ORDER BY deployment_id DESC LIMIT 20",
            app_id,
            source_digest,
            build_key,
        )
