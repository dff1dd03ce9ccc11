"""Loopback ports for allocations, chosen so that a collision is never silent (docs/architecture.md, "Ports").

An app is told its port (`PORT`) before it binds it, so the runner must choose one. It binds a probe socket to
127.0.0.1:0 — the kernel picks a port nobody holds — and keeps it bound, so that no other socket can take the port,
until just before the app is spawned. A port handed out stays reserved in this server until the runner settles it
(the app was probed ready, or it failed): two allocations starting at once never get the same one.

Between the probe's close and the app's own bind another process may still take the port. The app then fails to bind
and exits, its log saying so ("Address already in use"); the runner starts it again on another port, at most
`PORT_ATTEMPTS` times in all, and records each port it gave up in the allocation's health (`port_retries`).
"""

from __future__ import annotations

import contextlib
import errno
import re
import socket
import threading
from pathlib import Path

PORT_ATTEMPTS = 3
# How an app that could not bind its port says so: the OS's message (Python, Node, Go, Ruby, gunicorn…) or the errno.
ADDRESS_IN_USE = re.compile(rb"address already in use|EADDRINUSE|\[Errno 98\]", re.IGNORECASE)
_DRAWS = 64  # probes a reservation may draw before giving up: the kernel hands out free ports, so one nearly always


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


def address_in_use(log_file: Path, offset: int) -> bool:
    """Whether what the app wrote to `log_file` from `offset` on says its port was taken."""
    with contextlib.suppress(OSError), log_file.open("rb") as handle:
        handle.seek(offset)
        return ADDRESS_IN_USE.search(handle.read(65536)) is not None
    return False
