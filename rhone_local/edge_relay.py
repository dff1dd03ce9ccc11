"""The edge's data path: a small HTTP/1.1 relay on asyncio protocols, with kept-alive upstream connections.

Why not an ASGI app behind uvicorn with an HTTP client: every request then crosses two full HTTP stacks in Python
(uvicorn's, then the client's pool), which cost the edge about five times the work of the app it fronts. Here a
request is parsed once (httptools), its head is rewritten once, and the answer's bytes go to the client as they
arrive — the upstream connection is reused, the body is never re-buffered.

What the relay does, per client connection:
- parses requests (pipelined ones queue, in order), reads each body whole (bounded) so the upstream always gets a
  Content-Length — simple app servers do not read chunked request bodies;
- asks `Edge.candidates(host, affinity)` where it goes (`affinity`: the values of the edge's own affinity cookie,
  which is taken out of the Cookie header the app gets); anything but targets is answered here in plain text (404,
  503 …); a target that refuses the connection gives way to the next (the same owner's other allocations), and the
  one that answers may add the edge's Set-Cookie to its answer;
- sends the request on an idle connection to that port, or a new one; a reused connection that closes before any
  answer byte is retried once on a fresh one (the app closed it while idle — the request was never seen);
- relays the answer: head filtered of hop-by-hop headers, body as it comes (a body the app delimits by closing is
  re-framed as chunked for HTTP/1.1 clients); the client's write buffer pauses reading from the app;
- a WebSocket (any `Upgrade`) becomes a byte tunnel once the app answers 101.
What a client may hold is bounded (`Limits`, docs/security.md "Network clients of the edge"): a request head must
arrive whole within `head_timeout` (a trickled head is cut at the same deadline), a body within `body_timeout`, an
idle keep-alive connection lasts `keepalive_timeout`, and past `max_clients` connections a new one is refused with a
503 — so the file descriptors the API, the store and the runner need in this process are never the edge's to spend.
Refused connections are 503 (the allocation recorded as ready is not answering: still never another deployment);
an app that fails mid-answer is 502 if nothing was sent yet, or a cut connection otherwise; no head within
`UPSTREAM_HEAD_TIMEOUT` is 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import resource
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httptools

log = logging.getLogger("rhone_local.edge")

MAX_REQUEST_BODY = 32 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_PIPELINED = 8
MAX_IDLE_PER_PORT = 64
UPSTREAM_CONNECT_TIMEOUT = 5.0
UPSTREAM_HEAD_TIMEOUT = 60.0
# A request that is not safe to send twice goes only on a connection idle for less than this (apps close idle
# keep-alive connections after seconds, not milliseconds), and is never retried.
FRESH_ENOUGH_SECONDS = 1.0
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
WRITE_HIGH_WATER = 256 * 1024
# File descriptors kept for the rest of the process (the API's connections, the store's databases, the runner's logs
# and probes) before the edge's share is counted; small limits keep half.
RESERVED_FDS = 512
MAX_OPEN_FILES = 1 << 20  # an "unlimited" limit counts as this many
# Refused connections are half-closed and read out briefly (closing on unread bytes would reset the connection and
# lose the 503); past this many at once the rest are closed at once.
LINGERING_REFUSALS = 32
REFUSAL_LINGER_SECONDS = 2.0
REFUSAL_LOG_INTERVAL = 10.0


@dataclass(frozen=True)
class Limits:
    """What one network client may hold of the edge; every value is documented in docs/security.md."""

    head_timeout: float = 10.0  # a whole request head, from its first byte (on a new connection: from accept)
    body_timeout: float = 60.0  # a whole request body, from the end of its head
    keepalive_timeout: float = 30.0  # an idle connection between requests
    send_timeout: float = 60.0  # an answer the client stops reading: no progress for this long cuts it
    tunnel_idle_timeout: float = 3600.0  # an upgraded connection with no bytes either way (checked this often)
    max_clients: int | None = None  # concurrent client connections; None: derived from the open-file limit


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # an unlimited hard limit may not be a soft one (macOS)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def client_cap(open_file_limit: int) -> int:
    """Client connections the edge accepts at once: each may hold a second descriptor upstream, and a reserve stays
    with the rest of the process."""
    if open_file_limit == resource.RLIM_INFINITY or open_file_limit > MAX_OPEN_FILES:
        open_file_limit = MAX_OPEN_FILES
    reserve = min(RESERVED_FDS, open_file_limit // 2)
    return max(1, (open_file_limit - reserve - LINGERING_REFUSALS) // 2)


# Hop-by-hop headers (RFC 9110 §7.6.1) never cross the edge; Host and Content-Length are written by it.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)
# A Host header: a registered name, an IPv4 address or a bracketed IPv6 address (RFC 3986 §3.2.2), and a port.
VALID_HOST = re.compile(rb"^(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
# The edge's own affinity cookie (its values mean something only to `Edge`); the app never sees it.
AFFINITY_COOKIE = b"rhone_affinity"
AFFINITY_MARK = AFFINITY_COOKIE + b"="
# Headers the relay itself looks at, noted while parsing (first occurrence), so nothing scans a head twice.
NOTED = frozenset({b"host", b"cookie", b"connection", b"content-length", b"transfer-encoding", b"expect"})
REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

# (Host header, affinity cookie values) -> (200, targets in order of preference) or (status, reason)
RouteFn = Callable[[str, "tuple[str, ...]"], "tuple[int, str | list[Target]]"]


class Target(NamedTuple):
    """Where a request may go: an allocation's port, and the Set-Cookie value its answer carries when it serves it
    (the edge's affinity cookie naming it, for a client that did not have a valid one)."""

    port: int
    set_cookie: bytes | None = None


def plain_response(status: int, text: str, *, close: bool = False) -> bytes:
    body = text.encode()
    head = [
        b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error")),
        b"content-type: text/plain; charset=utf-8",
        b"content-length: %d" % len(body),
    ]
    if close:
        head.append(b"connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


CAPACITY_REFUSAL = plain_response(503, "503 the edge is at its connection limit; retry later\n", close=True)


def _dropped_by_connection(headers: list[tuple[bytes, bytes]], noted: dict[bytes, bytes]) -> frozenset[bytes]:
    """Header names a `Connection` header declares hop-by-hop for this message."""
    if b"connection" not in noted:
        return HOP_BY_HOP
    names = set(HOP_BY_HOP)
    for name, value in headers:
        if name == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    return frozenset(names)


@dataclass
class Request:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    host: str
    version: str
    keep_alive: bool
    body: bytes = b""
    upgrade: bytes | None = None  # bytes after the head of an Upgrade request: the app gets them once it answers 101
    noted: dict[bytes, bytes] = field(default_factory=dict)
    affinity: tuple[str, ...] = ()  # values of the edge's affinity cookie (taken out of the headers above)

    def head_for(self, port: int, client: Peer) -> bytes:
        """The head the app gets: hop-by-hop headers gone, and the edge's own forwarding headers (the client's own
        never arrive: `Client.on_header` drops them)."""
        drop = _dropped_by_connection(self.headers, self.noted)
        host = self.noted.get(b"host")
        # The client's Host, unchanged: frameworks compare it with Origin (CSRF, WebSocket origin checks) and build
        # absolute URLs and redirects from it, as behind any reverse proxy.
        lines = [b"%s %s HTTP/1.1" % (self.method, self.target), b"host: " + (host or b"127.0.0.1:%d" % port)]
        lines += [name + b": " + value for name, value in self.headers if name not in drop]
        if self.upgrade is not None:
            lines += [b"connection: upgrade"] + [b"upgrade: " + v for n, v in self.headers if n == b"upgrade"]
        if self.body or self.method in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"content-length: %d" % len(self.body))
        lines.append(b"x-forwarded-for: " + client.address)
        lines.append(b"x-forwarded-proto: http")
        if host is None:
            lines.append(b"forwarded: for=%s;proto=http" % client.node)
        else:
            lines.append(b"x-forwarded-host: " + host)
            lines.append(b"forwarded: for=%s;host=%s;proto=http" % (client.node, _quoted(host)))
        return b"\r\n".join(lines) + b"\r\n\r\n"


@dataclass(frozen=True)
class Peer:
    """A client's address as the forwarding headers carry it: bare, and as a `Forwarded` node (RFC 7239 §6)."""

    address: bytes
    node: bytes

    @classmethod
    def of(cls, peername: Any) -> Peer:
        if not peername:
            return cls(b"unknown", b"unknown")
        address = str(peername[0]).encode()
        return cls(address, b'"[%s]"' % address if b":" in address else address)


def _quoted(value: bytes) -> bytes:
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _checked_target(method: bytes, target: bytes, host: bytes | None) -> bytes:
    """The origin-form target the app gets. An absolute-form target (`http://host/path`) is accepted only when it
    names the Host header's host: the app must never be asked about another site than the one the edge routed."""
    if target[:1] == b"/":
        return target
    if target == b"*" and method == b"OPTIONS":
        return target
    scheme, separator, rest = target.partition(b"://")
    if not separator or scheme.lower() != b"http":
        raise _Refused(400, "400 the request target must be a path (the edge is not a forward proxy)\n")
    cut = [i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0]
    authority, path = (rest[: min(cut)], rest[min(cut) :]) if cut else (rest, b"")
    if host is None or authority.lower() != host.lower():
        raise _Refused(400, "400 the request target names another host than the Host header\n")
    return path if path[:1] == b"/" else b"/" + path


def _untrusted(name: bytes) -> bool:
    """Headers that would tell the app who the client is or how it came: only the edge may say that."""
    return name.startswith(b"x-forwarded-") or name in (b"forwarded", b"x-real-ip")


# -- upstream: one connection to an allocation ----------------------------------------------------------------------
class Upstream(asyncio.Protocol):
    """A connection to an app. Between answers it idles in the pool; during one it writes into an `Exchange`."""

    def __init__(self, pool: Pool, port: int) -> None:
        self.pool = pool
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.exchange: Exchange | None = None
        self.tunnel: asyncio.Transport | None = None
        self.tunnel_client: Client | None = None
        self.idle_since = 0.0
        self.held = False  # counted in the pool's open connections: a request, an answer or a tunnel is under way
        self.parser = httptools.HttpResponseParser(self)

    # asyncio callbacks
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel_client.tunnel_activity += 1
            self.tunnel.write(data)
            return
        exchange = self.exchange
        if exchange is None:  # bytes nobody asked for: this connection can no longer be trusted
            self.close()
            return
        exchange.received_any = True
        client = exchange.client
        client.cork()  # the head and body parsed from one read leave in one write
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            exchange.start_tunnel(data[upgrade.args[0] :])
        except httptools.HttpParserError as error:
            exchange.fail(502, f"the app's answer is not valid HTTP/1.1 ({error})")
        finally:
            client.uncork()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.release(self)
        self.pool.forget(self)
        if self.tunnel is not None:
            self.tunnel.close()
        if self.exchange is not None:
            self.exchange.upstream_lost()

    def pause_writing(self) -> None:
        # The app reads slower than a tunnelled client writes: stop reading from the client until it catches up.
        # (A request body is already whole in memory, bounded by MAX_REQUEST_BODY.)
        if self.tunnel_client is not None and self.tunnel_client.transport is not None:
            self.tunnel_client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.tunnel_client is not None and self.tunnel_client.transport is not None:
            self.tunnel_client.transport.resume_reading()

    # httptools callbacks, forwarded to the exchange in progress
    def on_status(self, reason: bytes) -> None:
        if self.exchange is not None:
            self.exchange.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.exchange is not None:
            name = name.lower()
            self.exchange.response_headers.append((name, value))
            if name in NOTED:
                self.exchange.noted.setdefault(name, value)

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_head(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.response_complete(self.parser.should_keep_alive())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Upstream connections per port: the idle ones, reused most-recent first, and how many are in use."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: dict[int, list[Upstream]] = {}
        self.open: dict[int, int] = {}  # port -> connections carrying a request, an answer or a tunnel
        self.serving: frozenset[int] | None = None  # ports of allocations in rotation (None: not known yet)

    def hold(self, upstream: Upstream) -> None:
        if not upstream.held:
            upstream.held = True
            self.open[upstream.port] = self.open.get(upstream.port, 0) + 1

    def release(self, upstream: Upstream) -> None:
        if upstream.held:
            upstream.held = False
            left = self.open[upstream.port] - 1
            if left:
                self.open[upstream.port] = left
            else:
                del self.open[upstream.port]

    def retire(self, serving: frozenset[int]) -> None:
        """Only ports in `serving` keep idle connections: an allocation out of rotation must not be held open by the
        edge (its drain ends when its last real connection closes)."""
        self.serving = serving
        for port in [p for p in self.idle if p not in serving]:
            for upstream in self.idle.pop(port):
                upstream.close()

    def take(self, port: int, *, max_idle: float | None = None) -> Upstream | None:
        """The most recently used idle connection to `port` (idle for at most `max_idle` seconds, when given)."""
        idle = self.idle.get(port)
        while idle:
            upstream = idle.pop()
            if upstream.closed:
                continue
            if max_idle is not None and self.loop.time() - upstream.idle_since > max_idle:
                upstream.close()  # older ones are older still: the list is in order of return
                continue
            return upstream
        return None

    def give_back(self, upstream: Upstream) -> None:
        if upstream.closed or (self.serving is not None and upstream.port not in self.serving):
            upstream.close()
            return
        idle = self.idle.setdefault(upstream.port, [])
        if len(idle) >= MAX_IDLE_PER_PORT:
            upstream.close()
            return
        upstream.exchange = None
        upstream.transport.resume_reading()  # it may have been paused for a slow client; idle, nothing arrives
        upstream.idle_since = self.loop.time()
        idle.append(upstream)

    def forget(self, upstream: Upstream) -> None:
        idle = self.idle.get(upstream.port)
        if idle and upstream in idle:
            idle.remove(upstream)

    async def connect(self, port: int) -> Upstream:
        _, upstream = await asyncio.wait_for(
            self.loop.create_connection(lambda: Upstream(self, port), "127.0.0.1", port),
            UPSTREAM_CONNECT_TIMEOUT,
        )
        return upstream

    def close(self) -> None:
        for idle in self.idle.values():
            for upstream in idle:
                upstream.close()
        self.idle.clear()


# -- one request's trip: client → app → client ----------------------------------------------------------------------
@dataclass
class Exchange:
    client: Client
    request: Request
    upstream: Upstream
    done: asyncio.Future
    set_cookie: bytes | None = None
    reason: bytes = b""
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    noted: dict[bytes, bytes] = field(default_factory=dict)
    received_any: bool = False
    head_sent: bool = False
    framing: str = ""  # how the app ends its body: "length", "chunked", "close" or "none"
    rechunk: bool = False  # the client gets chunks the edge frames (the app's are decoded by the parser)
    close_after: bool = False
    informational: bool = False
    switching: bool = False

    def response_head(self, status: int) -> None:
        headers = self.response_headers
        if status == 101:
            self.switching = True  # the tunnel starts from the parser's upgrade signal
            return
        if 100 <= status < 200:  # 103 Early Hints and the like: not relayed; the real answer follows
            self.informational = True
            self.response_headers, self.reason, self.noted = [], b"", {}
            return
        noted = self.noted
        drop = _dropped_by_connection(headers, noted)
        lines = [b"HTTP/1.1 %d %s" % (status, self.reason)]
        lines += [name + b": " + value for name, value in headers if name not in drop]
        if self.set_cookie is not None:
            lines.append(b"set-cookie: " + self.set_cookie)
        length = noted.get(b"content-length")
        if self.request.method == b"HEAD" or status in (204, 304):
            self.framing = "none"
            if length is not None:
                lines.append(b"content-length: " + length)
        elif b"transfer-encoding" in noted:
            self.framing = "chunked"
        elif length is not None:
            self.framing = "length"
            lines.append(b"content-length: " + length)
        else:
            self.framing = "close"
        if self.framing in ("chunked", "close"):
            # An HTTP/1.1 client gets the body in chunks; an HTTP/1.0 client learns its end when the edge closes.
            if self.request.version == "1.1":
                self.rechunk = True
                lines.append(b"transfer-encoding: chunked")
            else:
                self.close_after = True
        self.close_after = self.close_after or not self.request.keep_alive
        if self.close_after:
            lines.append(b"connection: close")
        elif self.request.version == "1.0":
            lines.append(b"connection: keep-alive")  # an HTTP/1.0 client keeps the connection only if told so
        self.client.write(b"\r\n".join(lines) + b"\r\n\r\n")
        self.head_sent = True
        if self.request.method == b"HEAD":
            # httptools cannot be told that a HEAD answer has no body: it would wait for Content-Length bytes. The
            # answer is complete; this connection's parser is not, so the connection is not reused.
            self.finish(reuse=False)

    def response_body(self, body: bytes) -> None:
        if self.done.done() or not body:
            return
        if self.rechunk:
            self.client.write(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self.client.write(body)

    def response_complete(self, upstream_keep_alive: bool) -> None:
        if self.done.done():
            return
        if self.informational:
            self.informational = False
            return
        if self.switching:
            return
        if self.rechunk:
            self.client.write(b"0\r\n\r\n")
        self.finish(reuse=upstream_keep_alive)

    def upstream_lost(self) -> None:
        if self.done.done():
            return
        if not self.head_sent:
            self.done.set_result("lost")
            return
        if self.framing == "close":  # the app's close is the body's end
            if self.rechunk:
                self.client.write(b"0\r\n\r\n")
            self.finish(reuse=False)
            return
        self.client.abort()  # an answer cut short: the client must not take it as whole
        self.close_after = True
        self.finish(reuse=False)

    def fail(self, status: int, text: str) -> None:
        if self.done.done():
            return
        if self.head_sent:
            self.client.abort()
        else:
            self.client.write(plain_response(status, f"{status} {text}\n", close=True))
            self.close_after = True
        self.finish(reuse=False)

    def start_tunnel(self, rest: bytes) -> None:
        status = self.upstream.parser.get_status_code()
        head = [b"HTTP/1.1 %d %s" % (status, self.reason or b"Switching Protocols")]
        head += [name + b": " + value for name, value in self.response_headers]
        if self.set_cookie is not None:  # a WebSocket keeps its allocation too: browsers store a 101's cookies
            head.append(b"set-cookie: " + self.set_cookie)
        self.client.write(b"\r\n".join(head) + b"\r\n\r\n" + rest)
        self.head_sent = True
        if self.request.upgrade:  # what the client sent after its head belongs to the new protocol, only now
            self.upstream.transport.write(self.request.upgrade)
        self.client.tunnel_to(self.upstream)
        self.done.set_result("tunnel")

    def finish(self, *, reuse: bool) -> None:
        if self.done.done():
            return
        # A connection that carried an Upgrade request is never reused: what follows its head is the client's to
        # define, and must not reach another client's request.
        pool = self.client.relay.pool
        pool.release(self.upstream)
        if reuse and not self.upstream.closed and self.request.upgrade is None:
            pool.give_back(self.upstream)
        else:
            self.upstream.exchange = None
            self.upstream.close()
        self.done.set_result("close" if self.close_after else "ok")


# -- downstream: one client connection ------------------------------------------------------------------------------
class Client(asyncio.Protocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.worker: asyncio.Task | None = None
        self.current: Request | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.noted: dict[bytes, bytes] = {}
        self.affinity: list[str] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0
        self.closing = False
        self.tunnel: Upstream | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.peer = Peer(b"unknown", b"unknown")
        self.exchange: Exchange | None = None
        self.refusal: bytes | None = None
        self.corked: list[bytes] | None = None  # writes held back until uncork(): one send for one upstream read
        # One deadline at a time: for the head being read ("head"), its body ("body"), or the next request ("idle");
        # none while the edge owes an answer. An established tunnel has its own idle check instead.
        self.phase = ""
        self.deadline: asyncio.TimerHandle | None = None
        self.in_message = False  # bytes of a request have arrived and its head or body is not complete yet
        self.stalled: asyncio.TimerHandle | None = None  # the client stopped reading an answer: cut it after a while
        self.tunnel_activity = 0  # reads in either direction of a tunnel, compared between idle checks
        self.lingering: asyncio.TimerHandle | None = None  # a refused connection, read out before it is closed

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        relay = self.relay
        if len(relay.clients) >= relay.max_clients:
            self.closing = True
            self.lingering = relay.refuse_connection(transport)
            return
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.peer = Peer.of(transport.get_extra_info("peername"))
        relay.clients.add(self)
        self._expect("head", relay.limits.head_timeout)  # a connection that says nothing is not kept either

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        for timer in (self.deadline, self.stalled, self.lingering):
            if timer is not None:
                timer.cancel()
        if self.lingering is not None:
            self.relay.lingering -= 1
        self.relay.clients.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
        exchange = self.exchange
        if exchange is not None and not exchange.done.done():
            exchange.upstream.close()  # the app may still be writing an answer nobody will read
            exchange.done.set_result("client gone")
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()

    def pause_writing(self) -> None:
        self.writable.clear()
        if self.stalled is None:
            self.stalled = self.relay.loop.call_later(self.relay.limits.send_timeout, self.abort)
        exchange = self.exchange
        if exchange is not None and exchange.upstream.transport is not None:
            exchange.upstream.transport.pause_reading()
        if self.tunnel is not None and self.tunnel.transport is not None:
            self.tunnel.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writable.set()
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
        exchange = self.exchange
        if exchange is not None and exchange.upstream.transport is not None and not exchange.upstream.closed:
            exchange.upstream.transport.resume_reading()
        if self.tunnel is not None and self.tunnel.transport is not None and not self.tunnel.closed:
            self.tunnel.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel_activity += 1
            if self.tunnel.transport is not None:
                self.tunnel.transport.write(data)
            return
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.noted.get(b"content-length", b"0").strip() not in (b"", b"0") or b"transfer-encoding" in self.noted:
                # The parser does not read the body of an Upgrade request; framing it as tunnel bytes would let a
                # client hide a second request in it. A WebSocket handshake has no body.
                self._refuse(400, "400 an Upgrade request cannot carry a body\n")
                return
            request = self._request(upgrade=data[upgrade.args[0] :])
            self._enqueue(request)
            self.transport.pause_reading()  # everything after the head belongs to the tunnel
        except httptools.HttpParserError as error:
            # httptools wraps an exception raised in a callback; a limit the edge enforces comes back as its cause.
            refused = error.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.status, refused.text)
            else:
                self._refuse(400, f"400 bad request: {error}\n")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.affinity = []
        self.in_message = True
        if self.phase != "head":  # a new connection's head deadline runs from accept
            self._expect("head", self.relay.limits.head_timeout)
        self.url = b""
        self.headers = []
        self.noted = {}
        self.body = []
        self.body_size = 0
        self.head_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_HEAD_BYTES:
            raise _Refused(431, "431 request head too large\n")
        name = name.lower()
        if _untrusted(name):
            return
        if name == b"cookie" and AFFINITY_MARK in value:  # the edge's own cookie is the edge's: the app never sees it
            value = self._take_affinity(value)
            if not value:
                return
        self.headers.append((name, value))
        if name in NOTED:
            if name == b"host" and name in self.noted:
                raise _Refused(400, "400 a request has one Host header\n")
            self.noted.setdefault(name, value)

    def on_headers_complete(self) -> None:
        self.url = _checked_target(self.parser.get_method(), self.url, self._checked_host())
        declared = self.noted.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > MAX_REQUEST_BODY:
            raise _Refused(413, "413 request body too large for the local edge\n")  # before reading any of it
        if b"transfer-encoding" in self.noted or declared.strip() not in (b"", b"0"):
            self._expect("body", self.relay.limits.body_timeout)
        else:
            self._settle()
        expects = self.noted.get(b"expect", b"").lower() == b"100-continue"
        if expects and self.parser.get_http_version() == "1.1" and not self.queue and self.exchange is None:
            # The body is read here, before the app sees it. (With answers still owed to earlier pipelined requests
            # an interim answer would jump the queue; the client then sends its body after its own timeout.)
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > MAX_REQUEST_BODY:
            raise _Refused(413, "413 request body too large for the local edge\n")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self._settle()
        if self.parser.should_upgrade():
            return  # feed_data raises HttpParserUpgrade next, with the bytes that follow the head
        self._enqueue(self._request())
        if len(self.queue) >= MAX_PIPELINED:
            self.transport.pause_reading()

    def _take_affinity(self, cookie: bytes) -> bytes:
        """The Cookie header without the edge's affinity cookie (every other byte as sent); its values are noted."""
        kept = []
        for part in cookie.split(b";"):
            name, equals, value = part.strip().partition(b"=")
            if equals and name == AFFINITY_COOKIE:
                self.affinity.append(value.decode("latin-1"))
            else:
                kept.append(part)
        return b";".join(kept).lstrip()

    def _checked_host(self) -> bytes | None:
        host = self.noted.get(b"host")
        if host is None:
            if self.parser.get_http_version() == "1.1":
                raise _Refused(400, "400 an HTTP/1.1 request needs a Host header\n")
        elif not VALID_HOST.match(host):
            raise _Refused(400, "400 the Host header is not a host name or address with an optional port\n")
        return host

    # the work
    def _request(self, upgrade: bytes | None = None) -> Request:
        host = self.noted.get(b"host", b"").decode("latin-1")
        return Request(
            method=self.parser.get_method(),
            target=self.url,
            headers=self.headers,
            host=host,
            version=self.parser.get_http_version(),
            keep_alive=self.parser.should_keep_alive(),
            body=b"".join(self.body),
            upgrade=upgrade,
            noted=self.noted,
            affinity=tuple(self.affinity),
        )

    def _enqueue(self, request: Request) -> None:
        self.queue.append(request)
        if self.worker is None or self.worker.done():
            self.worker = self.relay.loop.create_task(self._serve_queue())

    def _refuse(self, status: int, text: str) -> None:
        # After a parse error the connection's framing is lost: answer once, after anything already queued, and close.
        self._settle()
        self.closing = True
        self.refusal = plain_response(status, text, close=True)
        self.transport.pause_reading()
        if self.worker is None or self.worker.done():
            self.worker = self.relay.loop.create_task(self._serve_queue())

    async def _serve_queue(self) -> None:
        try:
            while self.queue:
                request = self.queue.popleft()
                outcome = await self._forward(request)
                if outcome == "tunnel":
                    return
                if outcome in ("close", "client gone") or not request.keep_alive or request.upgrade is not None:
                    self._close()
                    return
                if not self.writable.is_set():
                    await self.writable.wait()
                if len(self.queue) < MAX_PIPELINED and not self.closing:
                    self.transport.resume_reading()
            if self.refusal is not None:
                self.write(self.refusal)
                self._close()
            elif not self.in_message and not self.closing:
                self._expect("idle", self.relay.limits.keepalive_timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must cost one connection, not the edge
            log.exception("edge: relaying a request failed")
            self.abort()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # deadlines
    def _expect(self, phase: str, seconds: float) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.phase = phase
        self.deadline = self.relay.loop.call_later(seconds, self._deadline_passed)

    def _settle(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.phase = ""

    def _deadline_passed(self) -> None:
        self.deadline = None
        if self.closing:
            return
        if self.in_message:  # a head or a body did not arrive whole in time: the client is told, then cut
            self.phase = ""
            self._refuse(408, "408 the request did not arrive in time\n")
        else:  # nothing asked since the last answer (or since accept): no answer is owed
            self._close()

    def _tunnel_idle_check(self, activity_then: int) -> None:
        if self.tunnel_activity == activity_then:
            self._close()  # the upstream side closes with it (connection_lost)
            return
        self.deadline = self.relay.loop.call_later(
            self.relay.limits.tunnel_idle_timeout, self._tunnel_idle_check, self.tunnel_activity
        )

    async def _forward(self, request: Request) -> str:
        status, targets = self.relay.route(request.host, request.affinity)
        if status != 200:
            self.write(plain_response(status, f"{status} {targets}\n", close=not request.keep_alive))
            return "ok"
        for target in targets:
            outcome = await self._forward_to(request, target)
            if outcome != "refused":
                return outcome
        # Every candidate is recorded ready and none accepts a connection (their processes died): that is "no ready
        # allocation", so 503 — the candidates are the owner's only, so this never reaches another deployment.
        self.write(plain_response(503, "503 the allocation is not answering\n", close=not request.keep_alive))
        return "ok"

    async def _forward_to(self, request: Request, target: Target) -> str:
        """Send `request` to `target`; "refused" when no connection could be made (the next one may take it)."""
        port = target.port
        head = request.head_for(port, self.peer)
        # Safe to send twice: a bodiless GET/HEAD/OPTIONS. Anything else goes only on a connection just used (or a
        # new one) and is never retried — an app that saw a POST and died must not see it again.
        safe = request.method in SAFE_METHODS and not request.body and request.upgrade is None
        pool = self.relay.pool
        upstream = None
        if request.upgrade is None:
            upstream = pool.take(port, max_idle=None if safe else FRESH_ENOUGH_SECONDS)
        reused = upstream is not None
        for attempt in (1, 2):
            if upstream is None:
                try:
                    upstream = await pool.connect(port)
                except (TimeoutError, OSError):
                    # Nothing reached the app (a second attempt follows only an idle connection that closed
                    # unanswered): the allocation is not answering, and the next target may take the request.
                    return "refused"
            exchange = Exchange(self, request, upstream, self.relay.loop.create_future(), target.set_cookie)
            upstream.exchange = exchange
            self.exchange = exchange
            pool.hold(upstream)
            upstream.transport.write(head + request.body)  # bytes after an Upgrade head wait for its 101
            timer = self.relay.loop.call_later(UPSTREAM_HEAD_TIMEOUT, self._head_timeout, exchange)
            try:
                outcome = await exchange.done
            finally:
                timer.cancel()
                self.exchange = None
            if outcome != "lost":
                return outcome
            if not (attempt == 1 and reused and safe and not exchange.received_any):
                break
            upstream = None  # the app closed this idle connection as we sent: retry once on a new one
        self.write(plain_response(502, "502 the app closed the connection without answering\n"))
        return "ok"

    def _head_timeout(self, exchange: Exchange) -> None:
        if not exchange.head_sent:
            exchange.fail(504, "the app did not answer in time")

    def tunnel_to(self, upstream: Upstream) -> None:
        self.tunnel = upstream
        upstream.tunnel = self.transport
        upstream.tunnel_client = self
        upstream.exchange = None
        self._settle()
        self.deadline = self.relay.loop.call_later(
            self.relay.limits.tunnel_idle_timeout, self._tunnel_idle_check, self.tunnel_activity
        )
        self.transport.resume_reading()

    def cork(self) -> None:
        self.corked = []

    def uncork(self) -> None:
        pending, self.corked = self.corked, None
        if pending:
            self.write(b"".join(pending))

    def write(self, data: bytes) -> None:
        if self.corked is not None:
            self.corked.append(data)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        self.status, self.text = status, text


# -- the listener ---------------------------------------------------------------------------------------------------
class Relay:
    """The edge listener: `start()` serves on its own thread and event loop; `stop()` closes everything."""

    def __init__(self, route: RouteFn, host: str, port: int, limits: Limits | None = None) -> None:
        self.route = route
        self.host, self.port = host, port
        self.limits = limits or Limits()
        self.max_clients = self.limits.max_clients or client_cap(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self.loop: asyncio.AbstractEventLoop = _new_loop()
        self.pool = Pool(self.loop)
        self.clients: set[Client] = set()
        self.lingering = 0
        self.refused = 0  # connections refused since the last log line
        self.refusals_logged_at = float("-inf")
        self.refusal_log: asyncio.TimerHandle | None = None
        self.server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self.started = threading.Event()
        self.error: OSError | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edge", daemon=True)
        self._thread.start()
        self.started.wait(10)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server = self.loop.run_until_complete(
                self.loop.create_server(lambda: Client(self), self.host, self.port, reuse_address=True, backlog=1024)
            )
        except OSError as error:  # the port is taken, most often
            self.error = error
            self.started.set()
            return
        self.started.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self._shutdown())
            self.loop.close()

    async def _shutdown(self) -> None:
        if self.server is not None:
            self.server.close()
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.close()
        self.pool.close()
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- for the rest of Rhone Local (any thread) ------------------------------------------------------------------
    def open_connections(self, port: int) -> int:
        """Requests in flight, answers streaming and tunnels open to `port` (idle pooled connections do not count).
        Read from other threads: the count is one int in a dict only the loop's thread writes, read in one step."""
        return self.pool.open.get(port, 0)

    def update_rotation(self, serving: frozenset[int]) -> None:
        """The ports of every allocation in rotation now: idle connections to any other port are closed."""
        with contextlib.suppress(RuntimeError):  # the loop closed: nothing is pooled any more
            self.loop.call_soon_threadsafe(self.pool.retire, frozenset(serving))

    # -- over the cap -------------------------------------------------------------------------------------------
    def refuse_connection(self, transport: asyncio.Transport) -> asyncio.TimerHandle | None:
        """Answer a connection past the cap with a 503 and close it; the handle of its linger timer, if it lingers."""
        self.refused += 1
        if self.refusal_log is None:
            due = max(self.loop.time(), self.refusals_logged_at + REFUSAL_LOG_INTERVAL)
            self.refusal_log = self.loop.call_at(due, self._log_refusals)
        transport.write(CAPACITY_REFUSAL)
        if self.lingering >= LINGERING_REFUSALS or not transport.can_write_eof():
            transport.close()
            return None
        self.lingering += 1  # counted down when the connection is lost
        transport.write_eof()  # the client reads the 503, then its end of file; its own close ends the connection
        return self.loop.call_later(REFUSAL_LINGER_SECONDS, transport.abort)

    def _log_refusals(self) -> None:
        self.refusal_log = None
        self.refusals_logged_at = self.loop.time()
        log.warning(
            "edge: refused %d client connection(s): already serving its cap of %d concurrent connections",
            self.refused,
            self.max_clients,
        )
        self.refused = 0

    def stop(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows); the standard loop works, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
