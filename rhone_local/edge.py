"""The edge: one HTTP listener that routes by Host header to allocations.

- `dep-<id>.<suffix>` reaches that deployment's ready allocations in its own lane — the environment it was deployed
  to — and never its allocations elsewhere (production's, after a promotion); the id's `_` becomes `-`: hostnames
  have no underscores;
- `<app>--<env>.<suffix>` reaches the route owner's ready allocations in that environment. Ownership comes from the
  edge's own route table (`domain/routing.py`): a verified snapshot, then the store's route events applied by
  sequence and epoch; a gap fails closed until a fresh snapshot. Allocation health never picks the owner.
An unknown host is 404; a known route or deployment without a ready allocation is 503 — the edge never falls back
to another deployment or lane. This module decides where a request goes; `edge_relay.py` carries it there.

Among several ready allocations a client stays on the one that first served it: the edge issues its own affinity
cookie (`Affinity`), naming that allocation and signed with a key only the server holds. A client moves only when
its allocation is no longer a ready candidate (gone, draining, not the owner's any more); a cookie that does not
verify counts as none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import logging
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path

from rhone_local.domain.routing import Owner, RouteEvent, RouteTable
from rhone_local.edge_relay import AFFINITY_COOKIE, Target
from rhone_local.store import Store

log = logging.getLogger("rhone_local.edge")
SYNC_INTERVAL_SECONDS = 0.02
AFFINITY_KEY_FILE = "edge-affinity.key"
AFFINITY_KEY_BYTES = 32
AFFINITY_SIGNATURE_BYTES = 16  # 128 bits of HMAC-SHA256: not guessable, short enough for a cookie


def affinity_key(data_dir: Path) -> bytes:
    """The server's affinity signing key: created on first start (0600, written whole or not at all), then reused so
    clients keep their allocation across restarts of Rhone Local."""
    path = data_dir / AFFINITY_KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) == AFFINITY_KEY_BYTES:
        return key
    key = secrets.token_bytes(AFFINITY_KEY_BYTES)  # missing or damaged: a new key only re-pins clients
    temporary = data_dir / f".{AFFINITY_KEY_FILE}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    os.replace(temporary, path)
    return key


class Affinity:
    """The edge's affinity cookie: `<allocation id>.<signature>`, HttpOnly, for the whole site. Only the server can
    sign, so a client can neither pick an allocation nor forge another client's."""

    MAX_CACHED = 4096

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._values: dict[str, str] = {}  # allocation id -> cookie value (real allocations only: they are bounded)

    def value(self, alloc_id: str) -> str:
        value = self._values.get(alloc_id)
        if value is None:
            digest = hmac.new(self.key, alloc_id.encode(), hashlib.sha256).digest()[:AFFINITY_SIGNATURE_BYTES]
            value = alloc_id + "." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if len(self._values) >= self.MAX_CACHED:
                self._values.clear()
            self._values[alloc_id] = value
        return value

    def set_cookie(self, alloc_id: str) -> bytes:
        return b"%s=%s; Path=/; HttpOnly; SameSite=Lax" % (AFFINITY_COOKIE, self.value(alloc_id).encode())

    def pinned(self, values: tuple[str, ...], candidate_ids: list[str]) -> int | None:
        """The index in `candidate_ids` of the allocation a valid cookie value names, or None."""
        for value in values:
            alloc_id = value.rpartition(".")[0]
            if alloc_id in candidate_ids and hmac.compare_digest(value, self.value(alloc_id)):
                return candidate_ids.index(alloc_id)
        return None


class Edge:
    def __init__(self, store: Store, suffix: str = "localhost", key: bytes | None = None) -> None:
        self.store = store
        self.suffix = suffix
        self.table = RouteTable()
        self.affinity = Affinity(key or secrets.token_bytes(AFFINITY_KEY_BYTES))
        self._turns = itertools.count()
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None
        # Told the ports of every allocation in rotation whenever that set changes (the relay drops idle
        # connections to the others, so an allocation that left rotation is not held open by the edge).
        self.on_rotation: Callable[[frozenset[int]], None] | None = None
        self.rotation: frozenset[int] | None = None

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
        self._publish_rotation()

    def _publish_rotation(self) -> None:
        rotation = self.store.ready_allocation_ports()
        if rotation != self.rotation:
            self.rotation = rotation
            if self.on_rotation is not None:
                self.on_rotation(rotation)

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

    def candidates(self, host: str, affinity: tuple[str, ...] = ()) -> tuple[int, str | list[Target]]:
        """(200, targets in order of preference) or (status, reason) for a Host header and the values of the edge's
        affinity cookie the request carried.

        Only the route owner's ready allocations in the environment's eligible regions are candidates: health picks
        among them, never the owner. The relay tries the next target only when one refuses."""
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
            return 200, self._targets(allocations, affinity)
        if label.startswith("dep-") and "." not in label:
            deployment_id = "dep_" + label[4:]
            allocations = self.store.ready_lane_allocations(deployment_id)
            if allocations is None:
                return 404, f"no deployment {deployment_id}"
            if not allocations:
                return 503, f"deployment {deployment_id} has no ready allocation in its own environment"
            return 200, self._targets(allocations, affinity)
        return 404, f"no route for {name}"

    def _targets(self, allocations: list[dict], affinity: tuple[str, ...]) -> list[Target]:
        """The client's own allocation first when its cookie names a candidate; otherwise the next in round-robin
        order, each with the cookie that pins the client to it should it serve the request. One allocation needs
        no cookie: there is nothing to choose."""
        if len(allocations) == 1:
            return [Target(allocations[0]["port"])]
        pinned = self.affinity.pinned(affinity, [a["id"] for a in allocations]) if affinity else None
        start = pinned if pinned is not None else next(self._turns) % len(allocations)
        ordered = allocations[start:] + allocations[:start]
        targets = [Target(a["port"], self.affinity.set_cookie(a["id"])) for a in ordered]
        if pinned is not None:
            targets[0] = Target(ordered[0]["port"])  # the client already holds this one's cookie
        return targets
