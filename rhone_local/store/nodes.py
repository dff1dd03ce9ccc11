"""Nodes: the processes of one cluster sharing this store, their roles and heartbeats (docs/multi-node.md, "Nodes").

Guarantees:
- a node name is held by one process instance at a time: `register_node` takes it in one conditional upsert, only
  when it is free, left, lapsed, or already this instance's — two processes racing for a live name cannot both win;
- every liveness comparison (register, heartbeat, live, lapsed) reads the time from `node_clock`, the one place the
  nodes' clock is read: the store's lease clock, this process's on SQLite (one machine), the database server's on
  PostgreSQL. Tests replace it to move time without waiting;
- a heartbeat from an instance that lost its name changes nothing and says so (False).
"""

from __future__ import annotations

from typing import Any

from rhone_local.store.core import LIVE, NOT_DRAINING, StoreCore, now_iso


class NodeNameTaken(Exception):
    """Another live process instance holds the node name."""

    def __init__(self, holder: dict[str, Any]) -> None:
        super().__init__(f"node {holder['name']!r} is held by another live process (started {holder['started_at']})")
        self.holder = holder


class NodeStore(StoreCore):
    def node_clock(self) -> float:
        """Now, in seconds, on the clock every node's heartbeat is compared with (see the module's docstring): the
        store's lease clock `rhone_now()` — this process's clock on SQLite, the database server's on PostgreSQL."""
        return float(self.conn.execute("SELECT rhone_now()").fetchone()[0])

    def register_node(
        self, name: str, roles: list[str], address: str, instance_id: str, lapse: float, *, takeover: bool = False
    ) -> dict:
        """Take the name `name` for this process instance (or renew it); NodeNameTaken, with nothing changed, when
        another instance holds it and its heartbeat has not lapsed. `takeover`: the caller proved every other
        instance dead (on SQLite, by holding the data directory's lock), so a fresh heartbeat is a crashed process's."""
        now = self.node_clock()
        lapsed_before = now + 1 if takeover else now - lapse
        row = self.conn.execute(
            "INSERT INTO nodes (name, roles, address, instance_id, started_at, heartbeat_at, left_at) "
            "VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (name) DO UPDATE SET roles = excluded.roles, "
            "address = excluded.address, instance_id = excluded.instance_id, started_at = excluded.started_at, "
            "heartbeat_at = excluded.heartbeat_at, left_at = NULL "
            "WHERE nodes.instance_id = excluded.instance_id OR nodes.left_at IS NOT NULL OR nodes.heartbeat_at < ? "
            "RETURNING *",
            (name, ",".join(sorted(roles)), address, instance_id, now_iso(), now, lapsed_before),
        ).fetchone()
        if row is None:
            holder = self.one("SELECT * FROM nodes WHERE name = ?", name)
            raise NodeNameTaken(holder or {"name": name, "started_at": ""})
        return dict(row)

    def heartbeat_node(self, name: str, instance_id: str) -> bool:
        """Renew this instance's heartbeat; False when the name is no longer this instance's (taken over after a
        lapse). A node that left still beats while it hands its instances over and drains them: it is not live (nothing
        is placed on it) and not lapsed (its allocations are its own to end)."""
        cursor = self.conn.execute(
            "UPDATE nodes SET heartbeat_at = ? WHERE name = ? AND instance_id = ?",
            (self.node_clock(), name, instance_id),
        )
        return cursor.rowcount == 1

    def leave_node(self, name: str, instance_id: str) -> None:
        """This instance stops cleanly: the node is no longer live (nothing is placed on it from now on)."""
        self.conn.execute(
            "UPDATE nodes SET left_at = ? WHERE name = ? AND instance_id = ?", (now_iso(), name, instance_id)
        )

    def node(self, name: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM nodes WHERE name = ?", name)

    def nodes(self, lapse: float) -> list[dict[str, Any]]:
        """Every node, by name, with `live` (heartbeat within `lapse` on the store's clock, not left) and its roles
        as a list."""
        since = self.node_clock() - lapse
        rows = self.all("SELECT * FROM nodes ORDER BY name")
        return [
            {**r, "roles": r["roles"].split(","), "live": r["left_at"] is None and r["heartbeat_at"] >= since}
            for r in rows
        ]

    def live_nodes(self, role: str, lapse: float) -> list[dict[str, Any]]:
        """Live nodes with `role`, by name."""
        return [n for n in self.nodes(lapse) if n["live"] and role in n["roles"]]

    def node_loads(self) -> dict[str, int]:
        """Live allocations per node (what placement balances)."""
        rows = self.all(f"SELECT node, COUNT(*) AS n FROM allocations WHERE state IN {LIVE} GROUP BY node")
        return {r["node"]: r["n"] for r in rows if r["node"] is not None}

    def lapsed_node_allocations(self, lapse: float) -> list[dict[str, Any]]:
        """Allocations not yet draining on nodes whose heartbeat lapsed: what a live node replaces. A node that left
        but still beats is stopping cleanly: it hands its instances over and drains them itself (`heartbeat_node`)."""
        since = self.node_clock() - lapse
        lapsed = [n["name"] for n in self.nodes(lapse) if n["heartbeat_at"] < since]
        if not lapsed:
            return []
        return self.all(
            f"SELECT * FROM allocations WHERE state IN {NOT_DRAINING} "
            f"AND node IN ({', '.join('?' * len(lapsed))}) ORDER BY id",
            *lapsed,
        )

    def node_allocations_in(self, node: str, *states: str, unplaced: bool = False) -> list[dict[str, Any]]:
        """A node's allocations in one of `states`, in creation order (its runner's own processes); `unplaced`: also
        those with no node (from before nodes existed: the single server's, which the default node is)."""
        either = " OR node IS NULL" if unplaced else ""
        return self.all(
            f"SELECT * FROM allocations WHERE (node = ?{either}) AND state IN ({', '.join('?' * len(states))}) "
            "ORDER BY id",
            node,
            *states,
        )

    def adopt_unplaced_allocations(self, node: str, address: str) -> int:
        """Allocations from before nodes existed (no node) become `node`'s: the first runner after the upgrade is the
        server that started them."""
        return self.conn.execute(
            "UPDATE allocations SET node = ?, address = ? WHERE node IS NULL", (node, address)
        ).rowcount

    # -- edges of every node ---------------------------------------------------------------------------------------
    def register_edge(self, edge_id: str, node: str, token_digest: str) -> None:
        """An edge process's identity (a restarted node reuses its edge ids: the row is replaced, unreported)."""
        self.conn.execute(
            "INSERT INTO edges (edge_id, node, token_digest, registered_at, seq, reported_at) "
            "VALUES (?, ?, ?, ?, NULL, NULL) ON CONFLICT (edge_id) DO UPDATE SET node = excluded.node, "
            "token_digest = excluded.token_digest, registered_at = excluded.registered_at, seq = NULL, "
            "reported_at = NULL",
            (edge_id, node, token_digest, now_iso()),
        )

    def edge_by_token_digest(self, token_digest: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM edges WHERE token_digest = ?", token_digest)

    def record_edge_report(self, edge_id: str, seq: int | None) -> None:
        """The route sequence an edge applies, heard now (on the store's clock)."""
        self.conn.execute(
            "UPDATE edges SET seq = ?, reported_at = ? WHERE edge_id = ?", (seq, self.node_clock(), edge_id)
        )

    def forget_edge(self, edge_id: str) -> None:
        """The edge process is gone."""
        self.conn.execute("DELETE FROM edges WHERE edge_id = ?", (edge_id,))

    def reporting_edges(self, lease: float) -> dict[str, int | None]:
        """{edge id: the route sequence it applies} of every edge of every node heard within `lease` seconds."""
        rows = self.all(
            "SELECT edge_id, seq FROM edges WHERE reported_at >= ? ORDER BY edge_id", self.node_clock() - lease
        )
        return {r["edge_id"]: r["seq"] for r in rows}
