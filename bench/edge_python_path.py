"""The edge relay's own Python work per request, hot and in one process: no sockets, no event loop turn, no app.

    .venv/bin/python bench/edge_python_path.py [--requests N] [--profile]

What it drives: one `Client` and one pooled `Upstream` of `rhone_local/edge_relay.py` with transports that keep what
is written, fed the bytes of the common case — a keep-alive `GET` as wrk sends it, answered the way gunicorn does
(status line, five headers, Content-Length, a 13-byte body). Routing is a real `Edge` (rhone_local/edge.py) whose
tables hold one route with one allocation, loaded as an edge process loads them from its feed, with a lease as an
edge process has. Each request runs the relay's whole request path: parsing both ways (rhone_local/http1.py),
routing, the pooled connection taken and given back, the heads written, deadlines set.

What it prints: microseconds per request (wall time on this machine, so it moves with load: compare on a quiet
machine, or count instructions instead, e.g. `valgrind --tool=callgrind` at two values of --requests), and the
Python calls into the relay per request (deterministic). `--profile` adds cProfile's top functions.

What it leaves out: the kernel and the event loop (`bench/edge_wrk.py` measures the edge whole, against nginx and
the floor proxy).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from typing import Any

from rhone_local import edge_relay
from rhone_local.domain.routing import Owner, checksum
from rhone_local.edge import Edge

PORT = 40000
ROUTE = "wrkapp--production"
HOST = ROUTE + ".localhost:8080"
REQUEST = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST.encode()
ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Tue, 01 Dec 2026 01:50:00 GMT\r\nConnection: keep-alive\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n"
)


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if len(self.written) > 1000:
            del self.written[:-1]

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else None

    def set_write_buffer_limits(self, high: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def routing_edge() -> Edge:
    """An `Edge` routing REQUEST's host to PORT: one route, its owner's one ready allocation, a lease."""
    edge = Edge()
    owners = {ROUTE: Owner("dep_bench", "sha256:" + "0" * 64, 1)}
    snapshot = {"seq": 1, "checksum": checksum(1, owners), "owners": {k: vars(o) for k, o in owners.items()}}
    allocations = {"version": 1, "routes": {"dep_bench/production": [["alloc_bench", PORT]]}, "lanes": {}}
    edge.apply({"allocations": {**allocations, "deployments": ["dep_bench"]}, "routes": {"snapshot": snapshot}})
    edge.lease_until = time.monotonic() + 3600  # as an edge process's: checked on every request
    if edge.candidates(HOST) != (200, [edge_relay.Target(PORT)]):
        raise SystemExit(f"the edge does not route {HOST} to {PORT}: {edge.candidates(HOST)}")
    return edge


def connected() -> tuple[edge_relay.Relay, Any]:
    """A relay with one client connection and one idle upstream connection; returns it and one request's run."""
    relay = edge_relay.Relay(routing_edge().candidates)
    client, client_transport = edge_relay.Client(relay), Transport()
    client.connection_made(client_transport)
    upstream, upstream_transport = edge_relay.Upstream(relay.pool, PORT), Transport()
    upstream.connection_made(upstream_transport)
    relay.pool.idle[PORT] = [upstream]

    def one_request() -> None:
        client.data_received(REQUEST)
        upstream.data_received(ANSWER)

    one_request()
    if not client_transport.written[-1].endswith(b"hello, world\n") or relay.pool.idle[PORT] != [upstream]:
        raise SystemExit(f"the relay did not answer as expected: {client_transport.written[-1]!r}")
    return relay, one_request


def calls_per_request(one_request: Any, requests: int = 10) -> float:
    counted = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal counted
        if event == "call" and frame.f_code.co_filename == edge_relay.__file__:
            counted += 1

    sys.setprofile(count)
    try:
        for _ in range(requests):
            one_request()
    finally:
        sys.setprofile(None)
    return counted / requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    relay, one_request = connected()
    try:
        for _ in range(1000):  # warm: what a connection reuses is made by its first requests
            one_request()
        started = time.perf_counter()
        for _ in range(args.requests):
            one_request()
        elapsed = time.perf_counter() - started
        print(f"{elapsed / max(args.requests, 1) * 1e6:.2f} µs per request (the relay's Python work, hot)")
        print(f"{calls_per_request(one_request):.0f} Python calls into rhone_local/edge_relay.py per request")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(30_000):
                one_request()
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    finally:
        relay.loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
