"""An edge process: the relay on a listening socket it inherited, fed by the control plane over HTTP.

    python -m rhone_local edge --listen-fd FD --api-url URL --edge-id ID --data-dir DIR   (its token on stdin)

Started and supervised by Rhone Local (`edge_supervisor.py`); it shares neither the interpreter's lock nor file
descriptors with the API and workers. Three threads besides the relay's event loop (the main thread):
- the feed: long-polls `GET /v1/edge/feed` and hands each document to the loop, which applies it between two
  requests (`Edge.apply`); every answered poll extends the edge's lease on its tables (`Edge.lease_until`), so an
  edge that loses the control plane fails closed instead of serving an owner that may have moved;
- the reporter: `POST /v1/edge/reports` with the route sequence and table version applied and the connections open
  per allocation port, at once when they matter to someone waiting (an applied document, a connection to an
  allocation out of rotation closing) and at least every `REPORT_INTERVAL_SECONDS`;
- stdin: the supervisor keeps it open; its end (the server stopped, or died) stops the edge.

With route events on NATS JetStream (`RHONE_LOCAL_EVENTS=nats://…` in the environment the server passes on;
docs/multi-node.md, "Route events"), route ownership comes from the stream instead (`RouteStreamFollower`, a
fourth thread): the feed then carries only the allocation table (its route part is dropped), snapshots are read
from the feed, and the edge serves routes only while both the feed and the stream are confirmed — the earlier of the
two leases.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rhone_local import http1
from rhone_local.domain.routing import FEED_WAIT_SECONDS, SnapshotRejected
from rhone_local.edge import Edge, affinity_key
from rhone_local.edge_feed import EDGE_LEASE_SECONDS, REPORT_INTERVAL_SECONDS
from rhone_local.edge_relay import Limits, Relay, client_cap, raise_open_file_limit

log = logging.getLogger("rhone_local.edge")
RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)


class ControlPlane:
    """One kept-alive HTTP connection to the API, as this edge (every call bounded by a timeout)."""

    def __init__(self, api_url: str, token: str, timeout: float) -> None:
        parts = urlsplit(api_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=None if body is None else json.dumps(body), headers=self.headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.status >= 300:
            raise OSError(f"{method} {path}: HTTP {response.status} {data[:200]!r}")
        return json.loads(data) if data else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class EdgeProcess:
    def __init__(
        self,
        edge: Edge,
        relay: Relay,
        api_url: str,
        token: str,
        lease: float = EDGE_LEASE_SECONDS,
        *,
        events_url: str | None = None,
    ) -> None:
        self.edge, self.relay = edge, relay
        self.lease = lease
        # An idle feed answers every `wait` seconds; two answers fit in a lease, so a healthy feed never lapses.
        self.wait = min(FEED_WAIT_SECONDS, lease / 3)
        self.feed = ControlPlane(api_url, token, FEED_WAIT_SECONDS + 10)
        self.reports = ControlPlane(api_url, token, 10)
        self.stopping = threading.Event()
        self.report_due = threading.Event()
        relay.pool.on_retired_release = self._retired_release  # a drain waits on it: report soon
        self.feed_lease_until = float("-inf")
        self.stream_lease_until = float("-inf")
        self.api_seq: int | None = None  # with a stream: the feed's route sequence, only to long-poll past it
        self.stream = self._stream_follower(events_url, api_url, token) if events_url else None

    # -- leases: routes are served only while every source of them is confirmed ------------------------------------
    def _renew_feed(self, sent: float) -> None:
        self.feed_lease_until = sent + self.lease
        self._set_lease()

    def _renew_stream(self, sent: float) -> None:
        self.stream_lease_until = sent + self.lease
        self._set_lease()

    def _set_lease(self) -> None:
        stream = self.stream_lease_until if self.stream is not None else float("inf")
        self.edge.lease_until = min(self.feed_lease_until, stream)

    # -- route events from NATS JetStream --------------------------------------------------------------------------
    def _stream_follower(self, events_url: str, api_url: str, token: str) -> Any:
        from rhone_local.route_stream import RouteStreamFollower

        snapshots = ControlPlane(api_url, token, 10)

        def load_snapshot() -> dict[str, Any]:
            return snapshots.call("GET", "/v1/edge/feed")["routes"]["snapshot"]

        return RouteStreamFollower(
            events_url,
            load_snapshot=load_snapshot,
            apply=lambda document: self._on_loop(self.edge.apply, document),
            wanted_seq=lambda: self.edge.wanted_seq,
            fail_closed=lambda reason: self._on_loop(self._close_routes, reason),
            renew=self._renew_stream,
        )

    def _close_routes(self, _reason: str) -> None:
        self.edge.table.gap = True
        self.report_due.set()

    def _on_loop(self, function: Any, argument: Any) -> None:
        """Run `function(argument)` on the relay's loop, between two requests, and wait for it (its exception is
        raised here)."""
        done = threading.Event()
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                function(argument)
            except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
                outcome.append(error)
            finally:
                self.report_due.set()
                done.set()

        self.relay.loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise TimeoutError("the relay's loop did not apply a route document within 10s")
        if outcome:
            raise outcome[0]

    def _routes_from_feed(self, document: dict[str, Any]) -> dict[str, Any]:
        """With a stream, the feed's route part is not applied: only remember how far it went, to long-poll past it."""
        if self.stream is None:
            return document
        routes = document.get("routes") or {}
        if "snapshot" in routes:
            self.api_seq = routes["snapshot"]["seq"]
        elif routes.get("events"):
            self.api_seq = routes["events"][-1]["seq"]
        return {"allocations": document.get("allocations")}

    def first_sync(self) -> bool:
        """Load the tables before accepting a connection (clients wait in the listening socket's backlog meanwhile):
        up to a lease's time, after which the edge serves anyway — failing closed until its feed answers."""
        deadline = time.monotonic() + self.lease
        while time.monotonic() < deadline and not self.stopping.is_set():
            sent = time.monotonic()
            try:
                self.edge.apply(self._routes_from_feed(self.feed.call("GET", "/v1/edge/feed")))
            except (OSError, ValueError, SnapshotRejected):
                time.sleep(RETRY_SECONDS[1])
                continue
            self._renew_feed(sent)
            return True
        return False

    def start(self) -> None:
        for target, name in ((self._follow, "edge-feed"), (self._report, "edge-report"), (self._stdin, "edge-stdin")):
            threading.Thread(target=target, name=name, daemon=True).start()
        if self.stream is not None:
            self.stream.start()

    # -- the feed ------------------------------------------------------------------------------------------------------
    def _follow(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            seq = self.edge.wanted_seq if self.stream is None else self.api_seq
            version = self.edge.version
            asked = (("seq", seq), ("version", version), ("wait", self.wait))
            query = "&".join(f"{k}={v}" for k, v in asked if v is not None)
            sent = time.monotonic()
            try:
                document = self.feed.call("GET", f"/v1/edge/feed?{query}")
            except (OSError, ValueError) as error:
                if failures == 3:
                    log.warning("edge: the control plane's feed is unreachable (%s); retrying", error)
                time.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1
                continue
            failures = 0
            applied = threading.Event()
            document = self._routes_from_feed(document)
            self.relay.loop.call_soon_threadsafe(self._apply, document, sent, applied)
            applied.wait(10)

    def _apply(self, document: dict[str, Any], sent: float, applied: threading.Event) -> None:
        """On the loop's thread, between two requests: no request sees half a document."""
        try:
            self.edge.apply(document)
        except SnapshotRejected:
            log.error("edge: a route snapshot did not verify; failing closed until the next one")
        except Exception:
            log.exception("edge: a feed document could not be applied")
        else:
            self._renew_feed(sent)
        finally:
            self.report_due.set()
            applied.set()

    # -- the back-channel ----------------------------------------------------------------------------------------------
    def _retired_release(self) -> None:
        self.report_due.set()

    def _report(self) -> None:
        while not self.stopping.is_set():
            self.report_due.wait(REPORT_INTERVAL_SECONDS)
            self.report_due.clear()
            # The version first, then the counts: the counts are at least as new as the table they are reported with.
            version, seq = self.edge.version, self.edge.wanted_seq
            opened = dict(self.relay.pool.open)
            body = {"seq": seq, "version": version, "open": {str(port): n for port, n in opened.items()}}
            try:
                self.reports.call("POST", "/v1/edge/reports", body)
            except (OSError, ValueError):
                time.sleep(0.1)  # the next report carries the same news; the server counts a silent edge as "open"

    def _stdin(self) -> None:
        try:
            while sys.stdin.buffer.read(65536):
                pass
        except OSError:
            pass
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.report_due.set()
        if self.stream is not None:
            self.stream.stopping.set()
            self.stream.poke()
        self.relay.stop_soon()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m rhone_local edge", description="Run one edge process.")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--edge-id", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--lease", type=float, default=EDGE_LEASE_SECONDS, help="seconds the tables are trusted")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    token = sys.stdin.buffer.readline().decode().strip()
    if not token:
        log.error("edge %s: no token on stdin", args.edge_id)
        return 2
    listener = socket.socket(fileno=args.listen_fd)
    edge = Edge(key=affinity_key(args.data_dir))
    relay = Relay(edge.candidates, sock=listener, limits=Limits(max_clients=client_cap(raise_open_file_limit())))
    edge.on_rotation = relay.pool.retire  # applied on the loop's thread: the pool is the loop's
    events_url = os.environ.get("RHONE_LOCAL_EVENTS") or None  # checked by the server before it started this edge
    process = EdgeProcess(edge, relay, args.api_url, token, min(args.lease, EDGE_LEASE_SECONDS), events_url=events_url)
    relay.loop.add_signal_handler(signal.SIGTERM, process.stop)
    relay.loop.add_signal_handler(signal.SIGINT, process.stop)
    if not process.first_sync():
        log.warning("edge %s: no feed yet; serving, and failing closed until it answers", args.edge_id)
    process.start()
    log.info(
        "edge %s (pid %d) serving on %s (HTTP parsers: %s)",
        args.edge_id,
        os.getpid(),
        listener.getsockname(),
        http1.IMPLEMENTATION,
    )
    relay.run()
    process.stopping.set()
    return 0
