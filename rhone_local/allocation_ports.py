"""Loopback ports for allocations, chosen so that a collision is never silent (docs/architecture.md, "Ports").

An app is told its port (`PORT`) before it binds it, so the runner must choose one. It binds a probe socket to
127.0.0.1:0 — the kernel picks a port nobody holds — and keeps it bound, so that no other socket can take the port,
until just before the app is spawned. A port handed out stays reserved in this server until the runner settles it
(the app was probed ready, or it failed): two allocations starting at once never get the same one.

Between the probe's close and the app's own bind another process may still take the port. The app then fails to bind
and exits, its log saying so ("Address already in use"); and a taker that answers the readiness probe itself is seen
too: the socket listening on the port must belong to one of the allocation's processes (`listener_owned`). Either
way the runner starts the app again on another port, at most `PORT_ATTEMPTS` times in all, and records each port it
gave up in the allocation's health (`port_retries`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import threading
from pathlib import Path

PORT_ATTEMPTS = 3
# How an app that could not bind its port says so: the OS's message (Python, Node, Go, Ruby, gunicorn…) or the errno.
ADDRESS_IN_USE = re.compile(rb"address already in use|EADDRINUSE|\[Errno 98\]", re.IGNORECASE)
_DRAWS = 64  # probes a reservation may draw before giving up: the kernel hands out free ports, so one nearly always


class PortTaken(Exception):
    """The app's port was taken by another process between its choice and the app's bind."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PortReservations:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reserved: set[int] = set()

    def hold(self) -> socket.socket:
        """A probe socket bound to a free loopback port that no allocation of this server is starting on. Close it
        just before the app starts; `settle` its port once the app was seen ready, or failed."""
        drawn: list[socket.socket] = []  # kept bound while drawing, so the kernel does not hand the same port again
        try:
            for _ in range(_DRAWS):
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                drawn.append(probe)
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
                with self._lock:
                    if port not in self._reserved:
                        self._reserved.add(port)
                        return drawn.pop()
            raise OSError(errno.EADDRINUSE, "no free loopback port could be reserved")
        finally:
            for probe in drawn:
                probe.close()

    def settle(self, port: int) -> None:
        with self._lock:
            self._reserved.discard(port)


def listener_owned(port: int, pids: list[int]) -> bool | None:
    """Whether a socket listening on `port` (any local address) is held by one of `pids`; None when that cannot be
    known (no /proc/net, nothing seen listening, or a process whose descriptors cannot be read)."""
    listening = _listening_inodes(port)
    if not listening:
        return None
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return None
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in listening:
                    return True
    return False


def _listening_inodes(port: int) -> set[str]:
    """`socket:[inode]` of every TCP socket in LISTEN state (0A) on `port`, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            next(handle, None)  # the header
            for line in handle:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(f"socket:[{fields[9]}]")
    return found


def address_in_use(log_file: Path, offset: int) -> bool:
    """Whether what the app wrote to `log_file` from `offset` on says its port was taken."""
    with contextlib.suppress(OSError), log_file.open("rb") as handle:
        handle.seek(offset)
        return ADDRESS_IN_USE.search(handle.read(65536)) is not None
    return False
