"""The whole of Rhone Local in process, minus the edge: the API app, the real deploy pipeline, promotion stages and
runner (allocations are real processes: copies of examples/hello), driven by the test's own worker calls.

`deploy` uploads a tree of files through the API (blobs, then the deployment), and `promote`/`rollback` go through
the API too; `run_operations` drives every stage exactly as the server's workers do.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rhone_local.domain.manifest import digest_of
from tests.conftest import REPO

from .conftest import BASE, LocalEnv

HELLO_APP = (REPO / "examples" / "hello" / "app.py").read_bytes()


def hello_config(**sections: Any) -> dict[str, Any]:
    """The resolved rhone.toml of a hello copy: no build, the app itself is the artifact."""
    return {
        "build": {"output": "."},
        "process": {"start": "python3 app.py", "health_path": "/healthz", "readiness_timeout": 30},
        **sections,
    }


def hello_files(version: str = "1.0.0", **extra: bytes | str) -> dict[str, bytes]:
    app = HELLO_APP.replace(b'VERSION = "1.0.0"', f'VERSION = "{version}"'.encode())
    files: dict[str, bytes] = {"app.py": app}
    for path, content in extra.items():
        files[path] = content.encode() if isinstance(content, str) else content
    return files


def state_schema(schema_hash: str, primitives: dict[str, str] | None) -> str:
    """A generated Vango state schema: persisted primitive id -> codec fingerprint (None: a null list)."""
    persisted = None if primitives is None else {k: {"codecFingerprint": v} for k, v in primitives.items()}
    return json.dumps({"schemaHash": schema_hash, "buildSchema": "bs:1", "persistedPrimitives": persisted})


@dataclass
class Stack:
    local: LocalEnv
    project: dict[str, Any]
    app: dict[str, Any]

    @property
    def app_path(self) -> str:
        return f"{BASE}/projects/{self.project['name']}/apps/{self.app['name']}"

    def deploy(
        self,
        files: dict[str, bytes],
        config: dict[str, Any],
        *,
        app_path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict:
        """Upload `files` and deploy them to preview; run the pipeline. Returns the finished deploy operation."""
        local = self.local
        headers = headers or local.owner.headers
        entries = []
        for path in sorted(files):
            content = files[path]
            digest = hashlib.sha256(content).hexdigest()
            stored = local.client.put(
                f"/v1/blobs/sha256:{digest}",
                content=content,
                headers={**headers, "Content-Type": "application/octet-stream"},
            )
            assert stored.status_code in (200, 201), stored.text
            entries.append({"path": path, "size": len(content), "mode": "644", "sha256": digest})
        manifest = {"version": 1, "files": entries}
        created = local.client.post(
            f"{app_path or self.app_path}/deployments",
            json={"manifest": manifest, "manifest_digest": digest_of(manifest), "config": config},
            headers=headers,
        )
        assert created.status_code == 202, created.text
        local.run_operations()
        return local.operation(created.json()["id"])

    def preview_ready(self, files: dict[str, bytes], config: dict[str, Any], **kwargs: Any) -> dict:
        op = self.deploy(files, config, **kwargs)
        assert op["state"] == "preview_ready", (op["state"], op["error"])
        self.settle()  # a newer preview supersedes the older ones: they drain
        deployment = self.local.store.deployment(op["target_id"])
        assert deployment is not None
        return deployment

    def approve(self, deployment_id: str, *, ack_cold: bool = False) -> dict:
        approved = self.local.client.post(
            f"/v1/deployments/{deployment_id}/approve", json={"ack_cold": ack_cold}, headers=self.local.owner.headers
        )
        assert approved.status_code == 202, approved.text
        self.local.run_operations()
        deployment = self.local.store.deployment(deployment_id)
        assert deployment is not None and deployment["state"] == "preview_ready", deployment
        return deployment

    def promote(self, deployment_id: str, headers: dict[str, str] | None = None, **body: Any):
        """POST the promotion; when accepted, run it. Returns the response (and the operation, when one started)."""
        response = self.local.client.post(
            f"/v1/deployments/{deployment_id}/promote",
            json={"environment": "production", **body},
            headers=headers or self.local.owner.headers,
        )
        return response, self._finish(response)

    def rollback(self, headers: dict[str, str] | None = None, environment: str = "production", **body: Any):
        response = self.local.client.post(
            f"{self.app_path}/environments/{environment}/rollback",
            json=body,
            headers=headers or self.local.owner.headers,
        )
        return response, self._finish(response)

    def _finish(self, response) -> dict | None:
        if response.status_code != 202:
            return None
        self.local.run_operations()
        self.settle()
        return self.local.operation(response.json()["id"])

    def settle(self) -> None:
        """End the drains the operations started, as the server's reconciler would: in process nothing relays
        connections to an allocation, so each drain ends at the next tick (SIGTERM, then its process exits)."""
        runner = self.local.workers.pipeline.runner
        deadline = time.monotonic() + 60  # generous: hello exits on SIGTERM at once; the runner's kill grace is 5 s
        while time.monotonic() < deadline:
            runner.tick()
            if not self.local.store.allocations_in("draining"):
                return
            time.sleep(0.05)
        raise AssertionError(f"allocations still draining: {self.local.store.allocations_in('draining')}")

    def owner_of(self, environment: str = "production") -> tuple[str, int] | None:
        env = self.local.store.environment(self.app["id"], environment)
        assert env is not None
        owner = self.local.store.route_owner(self.app["id"], env["id"])
        return (owner["deployment_id"], owner["epoch"]) if owner else None

    def live_allocations(self, environment: str = "production") -> list[dict]:
        env = self.local.store.environment(self.app["id"], environment)
        assert env is not None
        return self.local.store.all(
            "SELECT * FROM allocations WHERE environment_id = ? AND state IN ('planned', 'pulling', 'starting', "
            "'ready', 'draining') ORDER BY id",
            env["id"],
        )

    def world(self) -> dict[str, Any]:
        """Everything a refused route move must leave as it was (rows of the route and allocation tables)."""
        snapshot = self.local.snapshot()
        return {
            table: snapshot[table]
            for table in ("route_owners", "route_events", "allocations", "environments", "deployments")
            if table in snapshot
        } | {"operations": len(snapshot["operations"])}


def runtime_token_of(alloc: dict[str, Any]) -> str:
    """The runtime token the runner handed to an allocation's process (read from its environment)."""
    environ = Path(f"/proc/{alloc['pid']}/environ").read_bytes().split(b"\0")
    [token] = [v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"RHONE_RUNTIME_TOKEN=")]
    return token
