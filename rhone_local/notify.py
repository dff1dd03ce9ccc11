"""In-process change notification for long-polling.

Workers and API handlers call `changed(op_id)` after committing a new operation version (on a store several nodes
share, the store's listener calls it for other nodes' commits too); `GET /v1/operations/{id}` with `wait` watches the
operation (`watch`) and awaits `wait_for_change`. Notification is only a wake-up: the waiter always re-reads the
durable row, so a missed or spurious wake-up can delay an answer (bounded by `RECHECK_SECONDS`) but never make it
wrong. A waiter watches before it reads the row: a change committed between its read and its wait is not missed.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress

RECHECK_SECONDS = 1.0


class ChangeWatch:
    """One waiter's interest in one operation: set by every change announced while it is registered."""

    def __init__(self, op_id: str) -> None:
        self.op_id = op_id
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


class ChangeNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[ChangeWatch]] = defaultdict(set)
        self.worker_wakeup = threading.Event()

    def changed(self, op_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(op_id, ()))
        for watch in waiters:
            watch.wake()

    def everything_changed(self) -> None:
        """Wake every waiter to read again: changes may have been missed (the store's listener reconnected)."""
        with self._lock:
            waiters = [watch for watches in self._waiters.values() for watch in watches]
        for watch in waiters:
            watch.wake()

    def work_available(self) -> None:
        self.worker_wakeup.set()

    @contextmanager
    def watch(self, op_id: str) -> Iterator[ChangeWatch]:
        """Register for `op_id`'s changes; read the row inside, after registering, then `wait_for_change`."""
        watch = ChangeWatch(op_id)
        with self._lock:
            self._waiters[op_id].add(watch)
        try:
            yield watch
        finally:
            with self._lock:
                self._waiters[op_id].discard(watch)
                if not self._waiters[op_id]:
                    del self._waiters[op_id]

    async def wait_for_change(self, watch: ChangeWatch, timeout: float) -> None:
        """Return once a change was announced since the last wait (at once if one was already), or after `timeout`
        (at most RECHECK_SECONDS: the caller reads again either way)."""
        with suppress(TimeoutError):
            await asyncio.wait_for(watch.event.wait(), timeout=min(timeout, RECHECK_SECONDS))
        watch.event.clear()  # before the caller's read: a change committed during that read sets it again
