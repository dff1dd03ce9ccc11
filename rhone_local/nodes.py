"""This process as a node of a cluster sharing one store (docs/multi-node.md, "Nodes"): its name, its roles, and the
heartbeat that keeps its name and its allocations its own.

A server runs only the parts of its roles: `api` (the HTTP API and its long-polls), `worker` (operation workers, and
the cluster's healing: instance counts, strays, replacing a lapsed node's allocations), `runner` (app processes, the
reconciler's rounds over them, runtime-service engines, allocation ports), `edge` (edge processes). The default is one
node named `local` with every role: exactly the single-machine Rhone Local.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rhone_local.domain.nodes import HEARTBEAT_SECONDS, LAPSE_SECONDS
from rhone_local.store.core import STORAGE_ERRORS

if TYPE_CHECKING:
    from rhone_local.store import Store

log = logging.getLogger("rhone_local.nodes")

ROLES = ("api", "worker", "runner", "edge")
DEFAULT_NODE = "local"
NODE_NAME = re.compile(r"[a-z0-9-]{1,63}")


def node_name_problem(name: str) -> str | None:
    """Why `name` is not a node name, or None."""
    if NODE_NAME.fullmatch(name):
        return None
    return f"node name {name!r}: use 1 to 63 characters among lowercase letters, digits and '-'"


def api_url_problem(url: str) -> str | None:
    """Why `url` is not the http:// URL of another node's API (what an edge-only node's edges follow), or None."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if parts is None or parts.scheme != "http" or not parts.hostname or port is None or parts.path not in ("", "/"):
        return f"--api {url!r}: give the http://HOST:PORT of a node with the api role"
    if parts.username or parts.password or parts.query or parts.fragment:
        return f"--api {url!r}: give only http://HOST:PORT (no credentials, path or query)"
    return None


def parse_roles(text: str) -> tuple[frozenset[str] | None, str | None]:
    """(the roles of a comma-separated list, None) or (None, why it is not one): a non-empty subset of ROLES."""
    names = [part.strip() for part in text.split(",")]
    unknown = [n for n in names if n not in ROLES]
    if not text.strip() or unknown:
        what = f"{', '.join(repr(n) for n in unknown)} is not a role" if any(unknown) else "no role given"
        return None, f"--role {text!r}: {what}; give a comma-separated subset of {','.join(ROLES)}"
    return frozenset(names), None


@dataclass(frozen=True)
class NodeIdentity:
    """Who this process is in the cluster. `instance_id` is new for every process start: the name is held by it."""

    name: str = DEFAULT_NODE
    roles: frozenset[str] = frozenset(ROLES)
    address: str = "127.0.0.1"  # where this node's allocations are reachable (loopback: one machine)
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def has(self, role: str) -> bool:
        return role in self.roles

    def ordered_roles(self) -> list[str]:
        return [r for r in ROLES if r in self.roles]


class Membership:
    """The node's registration in the store and its heartbeat thread. `on_lost` runs once when the heartbeat finds the
    name taken by another instance (this process lapsed and was replaced): its runner must stop serving."""

    def __init__(
        self,
        store: Store,
        identity: NodeIdentity,
        *,
        heartbeat: float = HEARTBEAT_SECONDS,
        lapse: float = LAPSE_SECONDS,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.store, self.identity = store, identity
        self.heartbeat, self.lapse = heartbeat, lapse
        self.on_lost = on_lost
        self.name_lock: Any = None  # held for the process's life when the store is shared (server._join)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._left = False

    def register(self, *, takeover: bool = False) -> None:
        """Take the node's name (NodeNameTaken when another live instance holds it; nothing changed then).
        `takeover`: every other instance is known dead (`NodeStore.register_node`)."""
        i = self.identity
        roles = i.ordered_roles()
        self.store.register_node(i.name, roles, i.address, i.instance_id, self.lapse, takeover=takeover)

    def beat(self) -> bool:
        """One heartbeat; False once the name is not this instance's any more."""
        if self.store.heartbeat_node(self.identity.name, self.identity.instance_id):
            return True
        if not self.lost.is_set():
            self.lost.set()
            log.error("node %s: its name was taken by another process after a lapse; stopping", self.identity.name)
            if self.on_lost is not None:
                self.on_lost()
        return False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="node-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.heartbeat):
                try:
                    if not self.beat():
                        return
                except STORAGE_ERRORS as error:
                    # A full disk, a database busy past its timeout, a PostgreSQL restart: the store's condition, not
                    # a fault of this code. The next beat tries again (the lapse window allows several).
                    log.warning("node %s: heartbeat not recorded (%s); retrying", self.identity.name, error)
                except Exception:  # anything else is a bug: its traceback, but the node keeps beating
                    log.exception("node %s: heartbeat failed; retrying", self.identity.name)
        finally:
            self.store.close()

    def leave(self) -> None:
        """Leave the cluster: nothing more is placed here. The heartbeat goes on until `stop`, so that the leader does
        not take this node's instances for a lapsed node's while it hands them over and drains them; the name stays
        held (its lock) until then too, so no other process takes it meanwhile."""
        if not self.lost.is_set() and not self._left:
            self.store.leave_node(self.identity.name, self.identity.instance_id)
        self._left = True

    def stop(self) -> None:
        """Leave the cluster, stop the heartbeat, and free the name."""
        self.leave()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.name_lock is not None:
            self.name_lock.release()
            self.name_lock = None
