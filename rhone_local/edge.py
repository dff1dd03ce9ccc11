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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rhone_local.domain.routing import Owner, RouteEvent, RouteTable
from rhone_local.domain.urls import host_label
from rhone_local.edge_relay import AFFINITY_COOKIE, Target

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
    """Where a request goes, decided from the edge's own tables — a route table and an allocation table — that its
    feed fills (`apply`): no database query per request. The feed is anything with `document(seq, version)` (the
    control plane's `EdgeFeed` in process, or its HTTP long-poll in an edge process)."""

    MAX_CACHED_HOSTS = 4096

    def __init__(self, feed: Any = None, suffix: str = "localhost", key: bytes | None = None) -> None:
        self.feed = feed
        self.suffix = suffix
        self.table = RouteTable()
        self.affinity = Affinity(key or secrets.token_bytes(AFFINITY_KEY_BYTES))
        self.version: int | None = None  # the allocation table's version
        self._routes: dict[tuple[str, str], list[tuple[str, int]]] = {}
        self._lanes: dict[str, list[tuple[str, int]]] = {}
        self._deployments: frozenset[str] = frozenset()
        # A one-allocation list's targets (its only one, without a cookie), made once per table.
        self._single: dict[int, tuple[list[tuple[str, int]], list[Target]]] = {}
        self._hosts: dict[str, tuple[str, str, str]] = {}  # Host header -> what it names (see _host)
        self._turns = itertools.count()
        # Until when the tables may be trusted (monotonic; None: always, for a feed read in process). An edge that
        # loses its feed fails closed when this passes rather than serve an owner that may have moved.
        self.lease_until: float | None = None
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None
        # Told the ports of every allocation in rotation whenever that set changes (the relay drops idle
        # connections to the others, so an allocation that left rotation is not held open by the edge).
        self.on_rotation: Callable[[frozenset[int]], None] | None = None
        self.rotation: frozenset[int] | None = None

    # -- the feed ----------------------------------------------------------------------------------------------------
    @property
    def wanted_seq(self) -> int | None:
        """The route sequence to ask the feed for events after; None asks for a snapshot."""
        return self.table.seq if self.table.serving else None

    def apply(self, document: dict[str, Any]) -> None:
        """Apply one feed document: the allocation table first, then route ownership (a snapshot, verified, or events
        in sequence — a gap fails closed until a snapshot). Raises SnapshotRejected for a snapshot that does not
        verify (the table stays as it was: closed, if it was)."""
        if document.get("allocations") is not None:
            self._apply_allocations(document["allocations"])
        routes = document.get("routes") or {}
        if "snapshot" in routes:
            snapshot = routes["snapshot"]
            owners = {
                k: Owner(o["deployment_id"], o["artifact_digest"], o["epoch"]) for k, o in snapshot["owners"].items()
            }
            self.table.load_snapshot(snapshot["seq"], owners, snapshot["checksum"])
        for e in routes.get("events", ()):
            event = RouteEvent(e["seq"], e["route_key"], e["epoch"], e["deployment_id"], e["artifact_digest"])
            if self.table.apply(event) == "gap":
                break

    def _apply_allocations(self, table: dict[str, Any]) -> None:
        routes: dict[tuple[str, str], list[tuple[str, int]]] = {}
        for key, entries in table["routes"].items():
            deployment_id, _, environment = key.partition("/")
            routes[(deployment_id, environment)] = [(alloc_id, port) for alloc_id, port in entries]
        self._routes = routes
        self._lanes = {dep: [(alloc_id, port) for alloc_id, port in entries] for dep, entries in table["lanes"].items()}
        self._deployments = frozenset(table["deployments"])
        self._single = {}
        self.version = table["version"]
        rotation = frozenset(port for entries in (*routes.values(), *self._lanes.values()) for _, port in entries)
        if rotation != self.rotation:
            self.rotation = rotation
            if self.on_rotation is not None:
                self.on_rotation(rotation)

    def sync_once(self) -> None:
        """Bring both tables up to date from the feed at once (in process: tests, and a feed with no wait)."""
        self.apply(self.feed.document(self.wanted_seq, self.version))
        if not self.table.serving:  # a gap: reload from a snapshot in the same call
            self.apply(self.feed.document(None, self.version))

    def start_sync(self, interval: float = SYNC_INTERVAL_SECONDS) -> None:
        """Follow an in-process feed from a thread, every `interval` (an edge process long-polls instead)."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.sync_once()
                except Exception:
                    log.exception("route table sync failed; retrying")

        self.sync_once()
        self._sync_thread = threading.Thread(target=loop, name="edge-routes", daemon=True)
        self._sync_thread.start()

    def stop_sync(self) -> None:
        self._stop.set()
        if self._sync_thread is not None:
            self._sync_thread.join(2)

    # -- routing -----------------------------------------------------------------------------------------------------
    def _host(self, host: str) -> tuple[str, str, str]:
        """What a Host header names: ("route", route key, environment), ("lane", deployment id, ""), or
        ("none", reason, "") — a pure function of the header, cached."""
        named = self._hosts.get(host)
        if named is not None:
            return named
        name = host.split(":", 1)[0].lower().rstrip(".")
        label = name[: -len(self.suffix) - 1]
        if not name.endswith("." + self.suffix):
            named = ("none", f"{name} is not under .{self.suffix}", "")
        else:
            named = host_label(label) or ("none", f"no route for {name}", "")
        if len(self._hosts) >= self.MAX_CACHED_HOSTS:
            self._hosts.clear()
        self._hosts[host] = named
        return named

    def candidates(self, host: str, affinity: tuple[str, ...] = ()) -> tuple[int, str | list[Target]]:
        """(200, targets in order of preference) or (status, reason) for a Host header and the values of the edge's
        affinity cookie the request carried.

        Only the route owner's ready allocations in the environment's eligible regions are candidates: health picks
        among them, never the owner. The relay tries the next target only when one refuses."""
        named = self._hosts.get(host)  # (_host, when cached: on every request of every client)
        kind, name, environment = named if named is not None else self._host(host)
        if kind == "none":
            return 404, name
        if self.lease_until is not None and time.monotonic() > self.lease_until:
            return 503, "the edge lost its feed from the control plane (failing closed)"
        if kind == "route":
            table = self.table
            if not table.serving:
                return 503, "route table rebuilding after a gap (failing closed)"
            owner = table.owners.get(name)  # (serving: what `owner()` would check again)
            if owner is None:
                return 404, f"no route {name}"
            allocations = self._routes.get((owner.deployment_id, environment))
            if not allocations:
                return 503, f"route {name} (epoch {owner.epoch}, {owner.deployment_id}) has no ready allocation"
            single = self._single.get(id(allocations))  # (_targets, for one allocation: made once per table)
            if single is not None and single[0] is allocations:
                return 200, single[1]
            return 200, self._targets(allocations, affinity)
        allocations = self._lanes.get(name)
        if not allocations:
            if name not in self._deployments:
                return 404, f"no deployment {name}"
            return 503, f"deployment {name} has no ready allocation in its own environment"
        return 200, self._targets(allocations, affinity)

    def _targets(self, allocations: list[tuple[str, int]], affinity: tuple[str, ...]) -> list[Target]:
        """The client's own allocation first when its cookie names a candidate; otherwise the next in round-robin
        order, each with the cookie that pins the client to it should it serve the request. One allocation needs
        no cookie: there is nothing to choose."""
        if len(allocations) == 1:
            cached = self._single.get(id(allocations))
            if cached is None or cached[0] is not allocations:  # (the entry holds its list: its id is not reused)
                cached = self._single[id(allocations)] = (allocations, [Target(allocations[0][1])])
            return cached[1]
        pinned = self.affinity.pinned(affinity, [a[0] for a in allocations]) if affinity else None
        start = pinned if pinned is not None else next(self._turns) % len(allocations)
        ordered = allocations[start:] + allocations[:start]
        targets = [Target(port, self.affinity.set_cookie(alloc_id)) for alloc_id, port in ordered]
        if pinned is not None:
            targets[0] = Target(ordered[0][1])  # the client already holds this one's cookie
        return targets
