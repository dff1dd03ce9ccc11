"""Stopping within a bound (docs/architecture.md, "Stopping"): one deadline shared by everything a stop waits for,
so that waiting for several threads takes at most the bound, not the bound once per thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable


class Deadline:
    """A moment `seconds` from now on `clock` (tests give a clock of their own)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self.clock())


def join_all(threads: Iterable[threading.Thread | None], deadline: Deadline) -> list[threading.Thread]:
    """Wait for every thread until `deadline`, together; the ones still running then."""
    left = []
    for thread in threads:
        if thread is None:
            continue
        thread.join(deadline.remaining())
        if thread.is_alive():
            left.append(thread)
    return left
