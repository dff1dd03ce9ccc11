"""In-process change notification for long-polling.

Workers and API handlers call `changed(op_id)` after committing a new operation version; `GET /v1/operations/{id}`
with `wait` awaits `wait_for_change`. Notification is only a wake-up: the waiter always re-reads the durable row,
so a missed or spurious wake-up can delay an answer (bounded by `RECHECK_SECONDS`) but never make it wrong.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

RECHECK_SECONDS = 1.0


class ChangeNotifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)
        self.worker_wakeup = threading.Event()

    def changed(self, op_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(op_id, ()))
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    def work_available(self) -> None:
        self.worker_wakeup.set()

    async def wait_for_change(self, op_id: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        entry = (loop, asyncio.Event())
        with self._lock:
            self._waiters[op_id].add(entry)
        try:
            await asyncio.wait_for(entry[1].wait(), timeout=min(timeout, RECHECK_SECONDS))
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters[op_id].discard(entry)
                if not self._waiters[op_id]:
                    del self._waiters[op_id]
