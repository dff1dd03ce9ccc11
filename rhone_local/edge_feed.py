"""The edge's feed and back-channel, on the control plane's side (docs/architecture.md, "The edge").

Edges run in their own processes and never open the control database. They learn two things from `EdgeFeed`, one
document at a time (`document`), long-polled over `GET /v1/edge/feed` until something changes:
- route ownership: a verified snapshot, then the route events after the sequence number the edge has applied;
- the allocation table: every ready allocation in an eligible region — per route (deployment and environment) and
  per deployment lane — with its port, and the deployments that exist. It carries a version that changes with it.
A document's table is read after its route events, so an edge that applies both (the table first) never learns an
owner without the allocations that were ready when the owner moved.

Edges report back (`POST /v1/edge/reports`) the route sequence and table version they apply and their open
connections per allocation port. Promotion waits on the first (`wait_applied`), the runner's drains read the second
(`open_connections`). Both are leases: an edge that has not been heard from for `EDGE_LEASE_SECONDS` stops serving
routes by itself (it counts from when it sent its last answered request, which is before the server heard it), so
the control plane may stop waiting for it — but its connections count as open until a drain's deadline, since a
silent edge may still hold some.

Edges of every node (docs/multi-node.md, "Nodes"): an edge's identity is also in the store (`register_edge`), so an API
node recognises an edge another node started (an edge-only node's, following this API), and what each edge reports
applying is written there too (when it changes, and every `REPORT_STORE_SECONDS`): `wait_applied` waits for every live
edge of every node, including those that follow another API node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rhone_local.domain.access import EDGE_TOKEN, new_secret
from rhone_local.nodes import DEFAULT_NODE
from rhone_local.store import STORAGE_ERRORS, Store

log = logging.getLogger("rhone_local.edge")

EDGE_LEASE_SECONDS = 10.0  # an edge serves routes this long after its last answered feed request, no longer
REPORT_INTERVAL_SECONDS = 0.5  # an edge reports at least this often (and at once when what it applies changes)
REPORT_STALENESS_SECONDS = 2.0  # an older report does not say how many connections an edge holds
WATCH_INTERVAL_SECONDS = 0.002  # how often the feed asks the database whether anything was committed
MAX_EVENTS = 500
REPORT_STORE_SECONDS = 2.0  # an unchanged report is written to the store at most this often (what other nodes read)
APPLIED_POLL_SECONDS = 0.05  # how often `wait_applied` reads other nodes' edges from the store


@dataclass
class EdgeState:
    """One edge process as the control plane knows it."""

    edge_id: str
    token_digest: bytes
    last_contact: float = float("-inf")  # monotonic: when its last feed request or report arrived
    seq: int | None = None  # the route sequence it applies (None: none yet, or failing closed after a gap)
    version: int | None = None  # the allocation table version it applies
    open: dict[int, int] = field(default_factory=dict)  # port -> connections it holds open there
    reported_at: float = float("-inf")
    stored: tuple[int | None, float] = (None, float("-inf"))  # the sequence last written to the store, and when


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class EdgeFeed:
    def __init__(self, store: Store, node: str = DEFAULT_NODE) -> None:
        self.store = store
        self.node = node  # whose edges `register` makes (an edge-only node uses a feed only as their registry)
        self._lock = threading.Lock()
        self.seq = 0  # the last route sequence seen by refresh()
        self.version = 0  # the allocation table's version
        self._table: dict[str, Any] | None = None
        self._rotation: frozenset[int] = frozenset()
        self.retired: dict[int, int] = {}  # port -> the table version from which it is out of rotation
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._waiters_lock = threading.Lock()
        self._edges: dict[str, EdgeState] = {}
        # Edges whose process is gone: a request of theirs still in flight must not bring them back (edge_for_token).
        self._forgotten: set[str] = set()
        self._reported = threading.Condition()
        self._poke = threading.Event()
        self._stop = threading.Event()
        self._closing = False
        self._watcher: threading.Thread | None = None
        self._listeners: list[Callable[[], None]] = []

    # -- what edges learn --------------------------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Read the route sequence, then the allocation table; True when either changed."""
        with self._lock:
            seq = self.store.last_route_seq()
            rows = self.store.edge_candidates()
            deployments = self.store.deployment_ids()
            routes: dict[str, list[list[Any]]] = {}
            lanes: dict[str, list[list[Any]]] = {}
            for row in rows:
                entry = [row["id"], row["port"]]
                if row["own_app"]:
                    routes.setdefault(f"{row['deployment_id']}/{row['environment']}", []).append(entry)
                if row["lane"]:
                    lanes.setdefault(row["deployment_id"], []).append(entry)
            table = {"routes": routes, "lanes": lanes, "deployments": deployments}
            changed = seq != self.seq
            self.seq = seq
            if table != self._table:
                self.version += 1
                self._table = table
                rotation = frozenset(row["port"] for row in rows)
                for port in self._rotation - rotation:
                    self.retired[port] = self.version
                for port in rotation:
                    self.retired.pop(port, None)
                self._rotation = rotation
                changed = True
            return changed

    def document(self, seq: int | None, version: int | None) -> dict[str, Any]:
        """What an edge that applies route sequence `seq` (None: it needs a snapshot) and table `version` learns next:
        `routes` (a snapshot, or the events after `seq`), then `allocations` (the table, when its version differs)."""
        routes = self._routes_after(seq)
        self.refresh()  # after the routes: the table is at least as new as every event sent
        with self._lock:
            table = None if version == self.version else {"version": self.version, **(self._table or {})}
        return {"routes": routes, "allocations": table}

    def _routes_after(self, seq: int | None) -> dict[str, Any]:
        if seq is not None:
            events = self.store.route_events_after(seq, limit=MAX_EVENTS)
            if events or seq <= self.store.last_route_seq():
                keys = ("seq", "route_key", "epoch", "deployment_id", "artifact_digest")
                return {"events": [{k: e[k] for k in keys} for e in events]}
            # The edge is ahead of the store (a database restored from a copy): only a snapshot is the truth.
        snapshot_seq, owners, checksum = self.store.route_snapshot()
        keys = ("deployment_id", "artifact_digest", "epoch")
        return {
            "snapshot": {
                "seq": snapshot_seq,
                "owners": {o["route_key"]: {k: o[k] for k in keys} for o in owners},
                "checksum": checksum,
            }
        }

    def changed_since(self, seq: int | None, version: int | None) -> bool:
        return seq is None or seq != self.seq or version != self.version or self._closing

    def close(self) -> None:
        """The API is shutting down: every long-poll answers now, so the shutdown does not wait on them."""
        self._closing = True
        self._wake()

    async def wait_for_change(self, seq: int | None, version: int | None, timeout: float) -> None:
        """Return when the route sequence or the table moved past what the edge has, or after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.changed_since(seq, version):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            entry = (loop, asyncio.Event())
            with self._waiters_lock:
                self._waiters.add(entry)
            try:
                if self.changed_since(seq, version):  # moved between the check and the registration
                    return
                await asyncio.wait_for(entry[1].wait(), remaining)
            except TimeoutError:
                return
            finally:
                with self._waiters_lock:
                    self._waiters.discard(entry)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Also call `listener` (from the watcher's thread; it must not block) whenever the edges are woken: the
        route-event publisher looks for new events then (docs/multi-node.md, "Route events")."""
        self._listeners.append(listener)

    def _wake(self) -> None:
        for listener in self._listeners:
            listener()
        with self._waiters_lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits there any more
                loop.call_soon_threadsafe(event.set)

    def poke(self) -> None:
        """Something the edges must learn was just committed: look now rather than at the next interval."""
        self._poke.set()

    # -- the watcher: one thread notices commits and wakes the long-polls --------------------------------------------
    def start(self) -> None:
        self.refresh()
        self._watcher = threading.Thread(target=self._watch, name="edge-feed", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._poke.set()
        if self._watcher is not None:
            self._watcher.join(5)

    def _watch(self) -> None:
        try:
            seen = self.store.data_version()
            while not self._stop.is_set():
                self._poke.wait(WATCH_INTERVAL_SECONDS)
                poked = self._poke.is_set()
                self._poke.clear()
                try:
                    current = self.store.data_version()
                    if (poked or current != seen) and self.refresh():
                        self._wake()
                    seen = current
                except Exception:
                    log.exception("edge feed: reading the control database failed; retrying")
                    time.sleep(0.1)
        finally:
            self.store.close()

    # -- edge identities -----------------------------------------------------------------------------------------------
    def register(self, edge_id: str) -> str:
        """A new edge identity; returns its token (the edge's only credential, accepted by /v1/edge/* only)."""
        token = new_secret(EDGE_TOKEN)
        self.store.register_edge(edge_id, self.node, _digest(token).hex())
        with self._reported:
            self._forgotten.discard(edge_id)
            self._edges[edge_id] = EdgeState(edge_id, _digest(token))
        return token

    def forget(self, edge_id: str) -> None:
        """The edge process is gone (its supervisor saw it exit): its connections died with it."""
        with self._reported:
            self._edges.pop(edge_id, None)
            self._forgotten.add(edge_id)
            self._reported.notify_all()
        try:
            self.store.forget_edge(edge_id)
        except STORAGE_ERRORS:  # its reports stop: other nodes stop waiting for it at its lease
            log.warning("edge feed: could not forget edge %s in the store", edge_id)

    def edge_for_token(self, token: str) -> EdgeState | None:
        """The edge whose token this is: one this node registered, or one another node registered in the store (an
        edge-only node's edge following this API)."""
        digest = _digest(token)
        with self._reported:
            edges = list(self._edges.values())
        known = next((e for e in edges if hmac.compare_digest(e.token_digest, digest)), None)
        if known is not None:
            return known
        row = self.store.edge_by_token_digest(digest.hex())
        if row is None:
            return None
        with self._reported:
            if row["edge_id"] in self._forgotten:  # read before forget() deleted its row: it is gone
                return None
            edge = self._edges.get(row["edge_id"])
            if edge is None or edge.token_digest != digest:
                edge = self._edges[row["edge_id"]] = EdgeState(row["edge_id"], digest)
            return edge

    def contact(self, edge: EdgeState) -> None:
        edge.last_contact = time.monotonic()

    def report(self, edge: EdgeState, seq: int | None, version: int | None, open_connections: dict[int, int]) -> None:
        with self._reported:
            edge.last_contact = edge.reported_at = time.monotonic()
            edge.seq, edge.version, edge.open = seq, version, open_connections
            self._reported.notify_all()
        if edge.stored[0] != seq or edge.reported_at - edge.stored[1] >= REPORT_STORE_SECONDS:
            try:
                self.store.record_edge_report(edge.edge_id, seq)
                edge.stored = (seq, edge.reported_at)
            except STORAGE_ERRORS:  # a busy store: the next report writes it
                log.warning("edge feed: could not record edge %s's report in the store", edge.edge_id)

    def edges(self) -> list[EdgeState]:
        with self._reported:
            return list(self._edges.values())

    # -- what the control plane reads back ---------------------------------------------------------------------------
    def wait_applied(self, seq: int, timeout: float) -> dict[str, Any] | None:
        """Wait until every live edge of every node applies route sequence `seq` (an edge that lapses stops serving by
        itself, so it is not waited for): those this API node hears, and those the store says other API nodes heard
        within the lease. Evidence {edge id: sequence}, or None when `timeout` passed first."""
        self.poke()
        deadline = time.monotonic() + timeout
        while True:
            others = self._other_nodes_edges()
            with self._reported:
                now = time.monotonic()
                live = {e.edge_id: e.seq for e in self._edges.values() if now - e.last_contact < EDGE_LEASE_SECONDS}
                applied = {**{k: v for k, v in others.items() if k not in self._edges}, **live}
                if all(s is not None and s >= seq for s in applied.values()):
                    return applied
                if now >= deadline:
                    return None
                self._reported.wait(min(deadline - now, APPLIED_POLL_SECONDS))

    def _other_nodes_edges(self) -> dict[str, int | None]:
        try:
            return self.store.reporting_edges(EDGE_LEASE_SECONDS)
        except STORAGE_ERRORS:  # a busy store: this round waits on what this node hears; the next reads again
            log.warning("edge feed: could not read the edges' reports from the store")
            return {}

    def open_connections(self, port: int) -> int:
        """Connections the edges hold open to `port` (the runner's drains read it). A port out of rotation counts only
        reports made after the edge applied the table that took it out, and fresh ones: anything else is not known,
        and unknown counts as open (at least 1) — a drain waits for it until its deadline, never ends early."""
        with self._lock:
            in_rotation = port in self._rotation
        unknown = False
        if in_rotation:
            try:
                self.refresh()  # the allocation may have left rotation a moment ago: the caller's commit is visible
            except STORAGE_ERRORS:  # the store is busy: what the edges hold is not known this time
                log.warning("edge feed: could not read the allocation table; counting port %d as open", port)
                unknown = True
        with self._lock:
            retired_at = self.retired.get(port)
        now = time.monotonic()
        total = 0
        for edge in self.edges():
            stale = now - edge.reported_at > REPORT_STALENESS_SECONDS
            unknown = unknown or stale or (retired_at is not None and (edge.version or 0) < retired_at)
            total += edge.open.get(port, 0)
        return max(total, 1) if unknown else total
