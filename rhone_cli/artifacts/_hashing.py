"""Hashing the files of a manifest: one file at a time through a reused buffer, and many files on worker threads.

Hashing a tree of small files is mostly system calls (open, fstat, read, close), each a few microseconds that
release the GIL and take it back: one worker thread does them while the walk goes on, and a second one would spend
its time waiting for the GIL (on a busy two-core machine, two workers used up to 1.7× the CPU time of one on 50,000
small files, for no shorter wall time; bench/manifest.py). Large files are mostly OpenSSL's sha256, which runs
without the GIL: once a batch holds LARGE_BATCH_BYTES, more workers start (up to `worker_count()`). Jobs go to the
workers in batches (one queue operation per batch, not per file), and each worker owns its buffer, so memory stays
bounded by the number of workers whatever the file sizes.

Standard library only, like `manifest.py`; `threading` and `queue` are imported when a tree has enough files to
hash for threads to pay off, so a warm run (nothing to hash) never imports them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from typing import Any

CHUNK_SIZE = 1 << 20  # bytes read (and hashed) at a time
BATCH_SIZE = 32  # files per job handed to a worker
LARGE_BATCH_BYTES = 8 << 20  # a batch this large (files of 256 KiB on average) is hashing, not system calls
_O_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_O_NOFOLLOW_FLAGS = _O_FLAGS | getattr(os, "O_NOFOLLOW", 0)
sha256, S_ISREG = hashlib.sha256, stat.S_ISREG  # bound once: called per file


def _read_into(fd: int, buffers: tuple[bytearray]) -> int:
    """os.readv for one buffer, where the platform has no readv (Windows)."""
    data = os.read(fd, len(buffers[0]))
    buffers[0][: len(data)] = data
    return len(data)


readv = getattr(os, "readv", _read_into)  # reads into the buffer: no new bytes object per read


class NotRegularFile(Exception):
    """The path opened is not a regular file (it was replaced by a fifo or a device after it was listed)."""

    def __init__(self, st_mode: int) -> None:
        super().__init__(st_mode)
        self.st_mode = st_mode


def hash_file(path: str, buffer: bytearray, *, nofollow: bool) -> tuple[str, int, os.stat_result]:
    """(hex sha256, bytes read, the stat taken right after opening) of the regular file at `path`, read through
    `buffer`. Raises OSError (ELOOP when `nofollow` and it is a symlink) or NotRegularFile."""
    fd = os.open(path, _O_NOFOLLOW_FLAGS if nofollow else _O_FLAGS)
    try:
        st = os.fstat(fd)
        if not S_ISREG(st.st_mode):
            raise NotRegularFile(st.st_mode)
        size = st.st_size
        n = readv(fd, (buffer,))
        if n == size and n < len(buffer):  # a small file, read whole by its first read: the common case
            return sha256(memoryview(buffer)[:n]).hexdigest(), n, st
        digest, view, total = sha256(), memoryview(buffer), 0
        while n:
            digest.update(view[:n])
            total += n
            if total == size and n < len(buffer):
                break  # a short read that reached the size fstat gave: the end
            n = readv(fd, (buffer,))
    finally:
        os.close(fd)
    return digest.hexdigest(), total, st


Job = tuple[str, str, bool]  # (root-relative path, path to open, open without following a symlink)
Outcome = Any  # (hex sha256, bytes read, stat) or the exception hashing raised


def _hash_jobs(jobs: list[Job], first: int, outcomes: list[Outcome], buffer: bytearray) -> int:
    """Hash the batch starting at `first`; the bytes read."""
    read = 0
    for index in range(first, min(first + BATCH_SIZE, len(jobs))):
        _rel, path, nofollow = jobs[index]
        try:
            outcomes[index] = outcome = hash_file(path, buffer, nofollow=nofollow)
            read += outcome[1]
        except (OSError, NotRegularFile) as error:
            outcomes[index] = error
    return read


class ParallelHasher:
    """Hashes jobs on worker threads as they are added (`add`), in batches of BATCH_SIZE: one thread, and up to
    `workers` once a batch shows the files are large; `finish()` waits and returns each job's outcome in the order
    the jobs were added, so the first failure reported never depends on which thread ran first. Fewer than
    BATCH_SIZE jobs are hashed on the calling thread, without threads at all."""

    def __init__(self, workers: int, jobs: list[Job]) -> None:
        self.workers = max(1, workers)
        self.jobs = jobs  # appended to by `add` only
        self.outcomes: list[Outcome] = []
        self._queued = 0  # jobs before this index are in the queue (or done)
        self._queue: Any = None
        self._threads: list[Any] = []
        self._stopping = False
        self._lock: Any = None  # guards `_threads` and `_closed`: a worker may start another while `finish` runs
        self._closed = False  # every batch is queued: a worker started now gets its end mark at once

    def add(self, rel: str, path: str, nofollow: bool) -> None:
        self.jobs.append((rel, path, nofollow))
        self.outcomes.append(None)
        if len(self.jobs) - self._queued >= BATCH_SIZE:
            self._enqueue_pending()

    def _enqueue_pending(self) -> None:
        if self._queue is None:
            self._start()
        while self._queued < len(self.jobs):
            self._queue.put(self._queued)
            self._queued += BATCH_SIZE

    def _start(self) -> None:
        import queue
        import threading

        self._queue, self._lock = queue.SimpleQueue(), threading.Lock()
        self._start_worker()

    def _start_worker(self) -> None:
        import threading

        with self._lock:
            if self._stopping or len(self._threads) >= self.workers:
                return
            # Daemon threads: an interrupted run exits without waiting for a slow read.
            thread = threading.Thread(target=self._work, name="rhone-manifest-hash", daemon=True)
            thread.start()
            self._threads.append(thread)
            if self._closed:  # after every batch in the queue
                self._queue.put(None)

    def _work(self) -> None:
        buffer = bytearray(CHUNK_SIZE)
        jobs, outcomes, get = self.jobs, self.outcomes, self._queue.get
        while (first := get()) is not None and not self._stopping:
            if _hash_jobs(jobs, first, outcomes, buffer) >= LARGE_BATCH_BYTES and len(self._threads) < self.workers:
                self._start_worker()

    def _close(self) -> None:
        """Queue one end mark per worker, after every batch (a worker started later queues its own)."""
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)

    def _join(self, timeout: float | None = None) -> None:
        """Wait for every worker, those started while waiting too (only a running worker starts one)."""
        index = 0
        while True:
            with self._lock:
                if index == len(self._threads):
                    self._threads.clear()
                    return
                thread = self._threads[index]
            thread.join(timeout)
            index += 1

    def finish(self, buffer: bytearray) -> list[Outcome]:
        """Every job's outcome, in order; the jobs not queued yet run here (on this thread when there are few)."""
        if self._queue is None:
            for first in range(0, len(self.jobs), BATCH_SIZE):
                _hash_jobs(self.jobs, first, self.outcomes, buffer)
            return self.outcomes
        self._enqueue_pending()
        self._close()
        self._join()
        return self.outcomes

    def cancel(self, timeout: float = 1.0) -> None:
        """Stop the workers after the batch each is hashing (waiting at most `timeout` seconds for them)."""
        self._stopping = True
        if self._queue is None:
            return
        self._close()
        self._join(timeout)


def worker_count(cpu_count: Callable[[], int | None] = os.cpu_count) -> int:
    """The most threads hashing large files: one per core (they spend most of their time in sha256, outside the
    GIL), at least two (reads overlap with hashing even on one core), at most four (more only contend for the GIL)."""
    return min(4, max(2, cpu_count() or 1))
