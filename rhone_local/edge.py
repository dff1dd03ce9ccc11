"""The edge: one HTTP listener that routes by Host header to allocations.

- `dep-<id>.<suffix>` reaches that deployment's own ready allocation (the id's `_` becomes `-`: hostnames have
  no underscores);
- `<app>--<env>.<suffix>` reaches the route owner's ready allocation in that environment. Ownership comes from the
  edge's own route table (`domain/routing.py`): a verified snapshot, then the store's route events applied by
  sequence and epoch; a gap fails closed until a fresh snapshot. Allocation health never picks the owner.
An unknown host is 404; a known route or deployment without a ready allocation is 503 — the edge never falls back
to another deployment. This module decides where a request goes; `edge_relay.py` carries it there.
"""

from __future__ import annotations

import itertools
import logging
import threading

from rhone_local.domain import topology
from rhone_local.domain.routing import Owner, RouteEvent, RouteTable
from rhone_local.store import Store

log = logging.getLogger("rhone_local.edge")
SYNC_INTERVAL_SECONDS = 0.02


class Edge:
    def __init__(self, store: Store, suffix: str = "localhost") -> None:
        self.store = store
        self.suffix = suffix
        self.table = RouteTable()
        self._turns = itertools.count()
        self._cookies: dict[str, str] = {}
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None

    # -- route ownership ---------------------------------------------------------------------------------------
    def load_snapshot(self) -> None:
        seq, owners, expected = self.store.route_snapshot()
        mapping = {o["route_key"]: Owner(o["deployment_id"], o["artifact_digest"], o["epoch"]) for o in owners}
        self.table.load_snapshot(seq, mapping, expected)

    def sync_once(self) -> None:
        """Bring the route table up to date: contiguous events, or a fresh snapshot after a gap."""
        if not self.table.serving:
            self.load_snapshot()
        for row in self.store.route_events_after(self.table.seq or 0):
            event = RouteEvent(row["seq"], row["route_key"], row["epoch"], row["deployment_id"], row["artifact_digest"])
            if self.table.apply(event) == "gap":
                self.load_snapshot()
                break

    def start_sync(self) -> None:
        def loop() -> None:
            try:
                while not self._stop.wait(SYNC_INTERVAL_SECONDS):
                    try:
                        self.sync_once()
                    except Exception:
                        log.exception("route table sync failed; retrying")
            finally:
                self.store.close()

        self.sync_once()
        self._sync_thread = threading.Thread(target=loop, name="edge-routes", daemon=True)
        self._sync_thread.start()

    def stop_sync(self) -> None:
        self._stop.set()
        if self._sync_thread is not None:
            self._sync_thread.join(2)

    def candidates(self, host: str, cookie: str | None = None) -> tuple[int, str | list[int]]:
        """(200, upstream ports in order of preference) or (status, reason) for a Host header.

        Only the route owner's ready allocations in the environment's eligible regions are candidates: health picks
        among them, never the owner. With the owner's session cookie the order is that session's (affinity);
        without it, requests are spread round-robin. The relay tries the next candidate only when one refuses."""
        name = host.split(":", 1)[0].lower().rstrip(".")
        if not name.endswith("." + self.suffix):
            return 404, f"{name} is not under .{self.suffix}"
        label = name[: -len(self.suffix) - 1]
        if "--" in label and "." not in label:
            _, _, environment = label.partition("--")
            if not self.table.serving:
                return 503, "route table rebuilding after a gap (failing closed)"
            owner = self.table.owner(label)
            if owner is None:
                return 404, f"no route {label}"
            allocations = self.store.ready_route_allocations(owner.deployment_id, environment)
            if not allocations:
                return 503, f"route {label} (epoch {owner.epoch}, {owner.deployment_id}) has no ready allocation"
            return 200, self._order(owner.deployment_id, allocations, cookie)
        if label.startswith("dep-") and "." not in label:
            deployment_id = "dep_" + label[4:]
            deployment = self.store.one("SELECT id FROM deployments WHERE id = ?", deployment_id)
            if deployment is None:
                return 404, f"no deployment {deployment_id}"
            allocations = self.store.ready_deployment_allocations(deployment_id)
            if not allocations:
                return 503, f"deployment {deployment_id} has no ready allocation"
            return 200, [allocations[-1]["port"]]
        return 404, f"no route for {name}"

    def _order(self, deployment_id: str, allocations: list[dict], cookie: str | None) -> list[int]:
        if len(allocations) == 1:
            return [allocations[0]["port"]]
        ports = {a["id"]: a["port"] for a in allocations}
        session = topology.session_value(cookie, self._session_cookie(deployment_id))
        if session is not None:
            return [ports[i] for i in topology.by_affinity(list(ports), session)]
        start = next(self._turns) % len(allocations)
        ordered = allocations[start:] + allocations[:start]
        return [a["port"] for a in ordered]

    def _session_cookie(self, deployment_id: str) -> str:
        name = self._cookies.get(deployment_id)
        if name is None:  # a deployment's config never changes: read it once
            row = self.store.one("SELECT config FROM deployments WHERE id = ?", deployment_id)
            name = topology.runtime_of(row["config"] if row else {})["session_cookie"]
            self._cookies[deployment_id] = name
        return name
