"""Rhone Local's edge processes: started with the server, restarted when they die, stopped with it.

The supervisor binds the edge's listening socket itself, at construction — so a taken port fails the server's start
before anything else runs, and the port the user asked for is the one served — and hands it to each edge process
(`pass_fds`). It keeps it open while an edge restarts: connections wait in its backlog instead of being refused.
Several edge processes share the one socket (the kernel hands each connection to one of them).

Each process gets a fresh edge identity (`EdgeFeed.register`) on its stdin, which stays open: when the server stops
— or dies, even by kill -9 — the edge sees its end and stops too.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from rhone_local.edge_feed import EDGE_LEASE_SECONDS, EdgeFeed
from rhone_local.nodes import DEFAULT_NODE

log = logging.getLogger("rhone_local.edge")
RESTART_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # consecutive quick deaths back off; a process that ran a while resets
STEADY_SECONDS = 10.0
STOP_GRACE_SECONDS = 5.0


class EdgeSupervisor:
    def __init__(
        self,
        feed: EdgeFeed,
        *,
        host: str,
        port: int,
        api_url: str,
        data_dir: Path,
        processes: int = 1,
        lease: float = EDGE_LEASE_SECONDS,
    ) -> None:
        self.feed = feed
        self.lease = lease  # an edge's lease on its tables (never longer than the control plane's view of it)
        self.api_url, self.data_dir = api_url, data_dir
        self.listener = socket.create_server((host, port), backlog=1024)  # SO_REUSEADDR: a restart finds it free
        self.port = self.listener.getsockname()[1]
        self.slots = max(1, processes)
        self.processes: dict[int, subprocess.Popen] = {}
        self.edge_ids: dict[int, str] = {}
        self.restarts = 0
        self._generation = itertools.count(1)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for slot in range(self.slots):
            self._spawn(slot)
            thread = threading.Thread(target=self._watch, args=(slot,), name=f"edge-supervisor-{slot}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self.processes.values() if p.poll() is None]

    def _spawn(self, slot: int) -> None:
        edge_id = f"edge-{slot}.{next(self._generation)}"
        if self.feed.node != DEFAULT_NODE:  # edge ids are unique across the nodes sharing the store
            edge_id += f"@{self.feed.node}"
        token = self.feed.register(edge_id)
        fd = self.listener.fileno()
        # -P and the data directory as the working directory: a `rhone_local` package wherever the server was started
        # from (another checkout, an untrusted project) must never be what runs as the edge.
        command = [sys.executable, "-P", "-m", "rhone_local", "edge", "--listen-fd", str(fd), "--api-url", self.api_url]
        command += ["--edge-id", edge_id, "--data-dir", str(self.data_dir), "--lease", str(self.lease)]
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            cwd=self.data_dir,
            pass_fds=(fd,),
            start_new_session=True,  # a terminal's Ctrl-C is the server's to handle; the edge follows its stdin
            restore_signals=True,
        )
        assert process.stdin is not None
        process.stdin.write(token.encode() + b"\n")
        process.stdin.flush()
        with self._lock:
            self.processes[slot], self.edge_ids[slot] = process, edge_id

    def _watch(self, slot: int) -> None:
        failures = 0
        while not self._stopping.is_set():
            process = self.processes[slot]
            started = time.monotonic()
            status = process.wait()
            self.feed.forget(self.edge_ids[slot])  # its connections died with it
            if self._stopping.is_set():
                return
            failures = 0 if time.monotonic() - started > STEADY_SECONDS else failures + 1
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            log.warning("edge process %d exited with status %s; restarting it in %g s", process.pid, status, delay)
            with contextlib.suppress(OSError):
                process.stdin.close()
            while not self._stopping.wait(delay):
                try:
                    self._spawn(slot)
                except OSError:  # no process could be started (out of memory or pids): try again later
                    log.exception("starting an edge process failed; retrying in %g s", delay)
                    continue
                self.restarts += 1
                break

    def stop(self) -> None:
        """Close every edge's stdin (it stops by itself), then SIGTERM, then SIGKILL past the grace."""
        self._stopping.set()
        with self._lock:
            processes = list(self.processes.values())
        for process in processes:
            with contextlib.suppress(OSError):
                process.stdin.close()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(1)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        for thread in self._threads:
            thread.join(2)
        for edge_id in self.edge_ids.values():
            self.feed.forget(edge_id)
        self.listener.close()
