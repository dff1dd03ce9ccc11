"""The edge's data path: a small HTTP/1.1 relay on asyncio protocols, with kept-alive upstream connections.

Why not an ASGI app behind uvicorn with an HTTP client: every request then crosses two full HTTP stacks in Python
(uvicorn's, then the client's pool), which cost the edge about five times the work of the app it fronts. Here a
request is parsed once (llhttp, one Python call per head: rhone_local/http1.py), its head is rewritten once, and the
answer's bytes go to the client as they arrive — the upstream connection is reused, the body is never re-buffered.

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
an app that fails mid-answer is 502 if nothing was sent yet (an answer held until whole, `POSTPONE_BYTES`, included),
or a cut connection otherwise; no head within `UPSTREAM_HEAD_TIMEOUT` is 504, and so is a held answer whose next bytes
do not come within it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import resource
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httptools

from rhone_local.http1 import MAX_FIELDS, RequestParser, ResponseParser

log = logging.getLogger("rhone_local.edge")

MAX_REQUEST_BODY = 32 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
# An answer whose Content-Length is at most this leaves for the client in one write, whole, even when the app wrote its
# head and body apart (gunicorn, for one, sends them in two calls, which often arrive in two reads): one send instead
# of two for the edge and one read for the client, as nginx's `postpone_output` does. The client cannot use such an
# answer before its body is whole; a larger one, or one framed otherwise (chunked, close-delimited: streams), is
# relayed read by read.
POSTPONE_BYTES = 16 * 1024
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
# Connection header values that name no header (the common ones): nothing beyond HOP_BY_HOP to drop.
PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade"})
# A Host header: a registered name, an IPv4 address or a bracketed IPv6 address (RFC 3986 §3.2.2), and a port.
VALID_HOST = re.compile(rb"^(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
# The edge's own affinity cookie (its values mean something only to `Edge`); the app never sees it.
AFFINITY_COOKIE = b"rhone_affinity"
AFFINITY_MARK = AFFINITY_COOKIE + b"="
# Headers the relay itself looks at, noted while parsing (first occurrence), so nothing scans a head twice.
NOTED = frozenset({b"host", b"cookie", b"connection", b"content-length", b"transfer-encoding", b"expect"})
# Request headers that announce a body, or ask to be told to send one (`Client._body_announced`).
ANNOUNCING_A_BODY = frozenset({b"content-length", b"transfer-encoding", b"expect"})
# Headers that would tell the app who the client is or how it came (with every `x-forwarded-*`): only the edge may.
UNTRUSTED = frozenset({b"forwarded", b"x-real-ip"})


def _claims_forwarding(name: bytes) -> bool:
    """A header name that says who the client is or how it came, in any spelling an app server may read as one: CGI
    and WSGI/ASGI adapters map `_` and `-` to the same variable (`X_Forwarded_Host` is `HTTP_X_FORWARDED_HOST`)."""
    name = name.replace(b"_", b"-")
    return name[:12] == b"x-forwarded-" or name in UNTRUSTED


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


def _note(noted: dict[bytes, bytes], name: bytes, value: bytes) -> None:
    """Keep a header's first value; a second Connection header makes the first no longer the whole story."""
    if name not in noted:
        noted[name] = value
    elif name == b"connection":
        noted[name] = b","  # not a plain value: the full scan of every Connection header runs


def _dropped_by_connection(headers: list[tuple[bytes, bytes]], noted: dict[bytes, bytes]) -> frozenset[bytes]:
    """Header names a `Connection` header declares hop-by-hop for this message."""
    connection = noted.get(b"connection")
    if connection is None or connection.lower() in PLAIN_CONNECTION:  # names nothing beyond the usual
        return HOP_BY_HOP
    names = set(HOP_BY_HOP)
    for name, value in headers:
        if name == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    return frozenset(names)


@dataclass(slots=True)
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

    def head_for(self, port: int, forwarding: bytes) -> bytes:
        """The head the app gets: hop-by-hop headers gone, and the edge's own `forwarding` headers with the head's end
        (`forwarding_headers`; the client's own never arrive: `Client.on_head` drops them)."""
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
        lines.append(forwarding)
        return b"\r\n".join(lines)


def forwarding_headers(peername: Any) -> bytes:
    """The forwarding headers for a client connected from `peername`, and the head's end: X-Forwarded-For and -Proto
    only. The Host header reaches the app unchanged, so an X-Forwarded-Host would repeat it, and an RFC 7239
    `Forwarded` would repeat both of these; an app parses each header on every request (docs/security.md, "Headers
    an app can rely on")."""
    address = str(peername[0]).encode() if peername else b"unknown"
    return b"x-forwarded-for: %s\r\nx-forwarded-proto: http\r\n\r\n" % address


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
        self.paused = False  # reading paused while the client catches up
        self.returning = False  # its answer ended in the read being parsed: back to the pool after that read
        self.unsolicited = False  # the app sent the start of another answer nobody asked for
        self.reason = b""  # the answer being parsed: its reason phrase and headers (names lower-cased)
        self.answer_headers: list[tuple[bytes, bytes]] = []
        # The last answer's head as the client got it, and what it was made from (Exchange.response_head).
        self.last_answer: tuple | None = None
        self.parser = ResponseParser(self, MAX_HEAD_BYTES)

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
        # (cork) the head and body parsed from one read leave in one write, after what an earlier read postponed
        client.corked, exchange.postponed = exchange.postponed or [], None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            exchange.start_tunnel(data[upgrade.args[0] :])
        except httptools.HttpParserError as error:
            refused = error.__context__
            if isinstance(refused, _Refused):
                exchange.fail(refused.status, refused.text)
            else:
                exchange.fail(502, f"the app's answer is not valid HTTP/1.1 ({error})")
        finally:
            pending, client.corked = client.corked, None  # (uncork)
            if pending:
                if exchange.postpone and not exchange.ended:  # a small answer not yet whole: it leaves whole
                    exchange.postponed = pending
                    # The client has seen nothing of it: the app owes its next bytes within the head's timeout of
                    # these (as nginx's proxy_read_timeout, per read), else the client gets a 504 (Exchange.fail).
                    client.answer_due = client.loop.time() + UPSTREAM_HEAD_TIMEOUT
                else:
                    client.write(pending[0] if len(pending) == 1 else b"".join(pending))
            if self.returning:  # pooled only now: whatever followed the answer in this read was seen
                self.returning = False
                if self.unsolicited:
                    self.close()
                else:
                    self.pool.give_back(self)

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

    # parser callbacks (rhone_local/http1.py), forwarded to the exchange in progress
    def on_message_begin(self) -> None:
        exchange = self.exchange
        if exchange is None or exchange.ended:
            self.unsolicited = True  # this connection can no longer be trusted with anyone's request

    def on_head(self, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        # A new list per head: the last answer's is kept to compare (Exchange.response_head). An answer nobody asked
        # for is parsed too, and never read: the connection closes after this read (`unsolicited`).
        self.reason = reason
        self.answer_headers = headers
        if self.exchange is not None:
            self.exchange.response_head(self.parser.get_status_code())

    def on_head_too_large(self) -> None:
        limits = f"larger than {MAX_HEAD_BYTES // 1024} KiB or has more than {MAX_FIELDS} fields"
        raise _Refused(502, f"the app's answer head is {limits}")

    def on_message(self, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole answer in one read: what on_message_begin, on_head, on_body and on_message_complete would do
        (rhone_local/http1.py), in one call for the common answer."""
        exchange = self.exchange
        status = self.parser.get_status_code()
        if exchange is None or exchange.ended or status < 200 or exchange.request.method == b"HEAD":
            self.on_message_begin()
            self.on_head(reason, headers)
            if body:
                self.on_body(body)
            self.on_message_complete()
            return
        self.reason = reason
        self.answer_headers = headers
        exchange.response_head(status)
        client = exchange.client
        if exchange.rechunk:  # (the body in one chunk, and the last chunk)
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        corked = client.corked
        if body:
            if corked is not None:  # (Client.write)
                corked.append(body)
            else:
                client.write(body)
        if corked:  # the answer is whole: the client gets it now, before the bookkeeping that follows (uncork)
            client.corked = None
            client.write(corked[0] if len(corked) == 1 else b"".join(corked))
        exchange.finish(self.parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None or exchange.ended or not body:
            return
        if exchange.rechunk:
            body = b"%x\r\n%s\r\n" % (len(body), body)
        corked = exchange.client.corked
        if corked is not None:  # (Client.write)
            corked.append(body)
        else:
            exchange.client.write(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is None or exchange.ended:
            return
        if exchange.informational:  # the real answer follows
            exchange.informational = False
            return
        if exchange.switching:  # the tunnel starts from the parser's upgrade signal
            return
        client = exchange.client
        if exchange.rechunk:
            client.write(b"0\r\n\r\n")
        if client.corked:  # the answer is whole: the client gets it now, before the bookkeeping that follows
            client.uncork()
        exchange.finish(self.parser.should_keep_alive())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Upstream connections per port: the idle ones, reused most-recent first, and how many are in use."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: dict[int, list[Upstream]] = {}
        # port -> connections carrying a request, an answer or a tunnel, and connections being opened for one
        self.open: dict[int, int] = {}
        self.serving: frozenset[int] | None = None  # ports of allocations in rotation (None: not known yet)
        # Called when a connection to a port out of rotation is released: a drain may be waiting for that.
        self.on_retired_release: Callable[[], None] | None = None

    def hold_port(self, port: int) -> None:
        self.open[port] = self.open.get(port, 0) + 1

    def release_port(self, port: int) -> None:
        left = self.open[port] - 1
        if left:
            self.open[port] = left
        else:
            del self.open[port]
        if self.on_retired_release is not None and self.serving is not None and port not in self.serving:
            self.on_retired_release()

    def hold(self, upstream: Upstream) -> None:
        if not upstream.held:
            upstream.held = True
            port = upstream.port
            self.open[port] = self.open.get(port, 0) + 1  # (hold_port, on the request path)

    def release(self, upstream: Upstream) -> None:
        if upstream.held:
            upstream.held = False
            self.release_port(upstream.port)

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
        idle = self.idle.get(upstream.port)
        if idle is None:
            idle = self.idle[upstream.port] = []
        elif len(idle) >= MAX_IDLE_PER_PORT:
            upstream.close()
            return
        upstream.exchange = None
        if upstream.paused:  # paused for a slow client; idle, nothing arrives
            upstream.paused = False
            upstream.transport.resume_reading()
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
class Exchange:
    """One request sent on one upstream connection, and its answer relayed. It ends exactly once, by telling its
    client (`Client.exchange_ended`) how: "ok", "close" (the client connection must close after the answer),
    "lost" (the app closed before any answer byte), "tunnel" or "client gone"."""

    # Defaults on the class: an exchange per request sets only what differs (the common answer changes few).
    received_any = False
    head_sent = False
    framing = ""  # how the app ends its body: "length", "chunked", "close" or "none"
    rechunk = False  # the client gets chunks the edge frames (the app's are decoded by the parser)
    close_after = False
    informational = False
    switching = False
    ended = False
    reused = False
    postpone = False  # a Content-Length answer of at most POSTPONE_BYTES: held until whole (Upstream.data_received)
    postponed: list[bytes] | None = None  # what is held of it

    def __init__(self, client: Client, request: Request, upstream: Upstream, set_cookie: bytes | None) -> None:
        self.client, self.request, self.upstream, self.set_cookie = client, request, upstream, set_cookie

    @property
    def client_has_part(self) -> bool:
        """Bytes of this answer reached the client (a held answer's do not until it is whole): from then on a failure
        can only cut the client's connection; before, the client gets an error answer instead."""
        return self.head_sent and not self.postpone

    def response_head(self, status: int) -> None:
        if status == 101:
            self.switching = True  # the tunnel starts from the parser's upgrade signal
            return
        if 100 <= status < 200:  # 103 Early Hints and the like: not relayed; the real answer follows (its own
            self.informational = True  # status line and headers: Upstream.on_message_begin starts them afresh)
            return
        request = self.request
        upstream = self.upstream
        headers = upstream.answer_headers
        # An app answers alike, request after request (its Date header changes once a second): the head written for
        # the last answer on this connection is reused when everything `_new_head` reads to make it is the same
        # (the app's status line and headers as it wrote them; the request's method, version and keep-alive; the
        # affinity cookie), so the bytes the client gets are exactly the ones it would make.
        key = (status, upstream.reason, request.method == b"HEAD", request.version, request.keep_alive, self.set_cookie)
        last = upstream.last_answer
        if last is not None and last[0] == key and last[1] == headers:
            head, self.framing, self.rechunk, self.close_after, self.postpone = last[2]
        else:
            head = self._new_head(status, upstream.reason, headers, request)
            made = (head, self.framing, self.rechunk, self.close_after, self.postpone)
            upstream.last_answer = (key, headers, made)
        client = self.client
        if client.corked is not None:  # (Client.write)
            client.corked.append(head)
        else:
            client.write(head)
        self.head_sent = True
        if not self.postpone:
            # The answer is under way: no deadline while its body streams. A held answer keeps one until it is whole
            # (Upstream.data_received): the client has seen nothing of it, and gets a 504 if the app stalls (`fail`).
            client.answer_due = INFINITY
        if request.method == b"HEAD":
            # httptools cannot be told that a HEAD answer has no body: it would wait for Content-Length bytes. The
            # answer is complete; this connection's parser is not, so the connection is not reused.
            self.finish(False)

    def _new_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], request: Request) -> bytes:
        """The answer's head for the client, from the app's (names lower-cased by the parser); sets how its body is
        framed."""
        noted: dict[bytes, bytes] = {}
        for name, value in headers:
            if name in NOTED:
                _note(noted, name, value)
        drop = _dropped_by_connection(headers, noted)
        lines = [b"HTTP/1.1 %d %s" % (status, reason)]
        lines += [name + b": " + value for name, value in headers if name not in drop]
        if self.set_cookie is not None:
            lines.append(b"set-cookie: " + self.set_cookie)
        length = noted.get(b"content-length")
        if request.method == b"HEAD" or status in (204, 304):
            self.framing = "none"
            if length is not None:
                lines.append(b"content-length: " + length)
        elif b"transfer-encoding" in noted:
            self.framing = "chunked"
        elif length is not None:
            self.framing = "length"
            # (a length of many digits, zeros in front, is valid HTTP; it is not converted, nor held)
            self.postpone = len(length) <= 6 and length.isdigit() and int(length) <= POSTPONE_BYTES
            lines.append(b"content-length: " + length)
        else:
            self.framing = "close"
        if self.framing in ("chunked", "close"):
            # An HTTP/1.1 client gets the body in chunks; an HTTP/1.0 client learns its end when the edge closes.
            if request.version == "1.1":
                self.rechunk = True
                lines.append(b"transfer-encoding: chunked")
            else:
                self.close_after = True
        self.close_after = self.close_after or not request.keep_alive
        if self.close_after:
            lines.append(b"connection: close")
        elif request.version == "1.0":
            lines.append(b"connection: keep-alive")  # an HTTP/1.0 client keeps the connection only if told so
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def upstream_lost(self) -> None:
        if self.ended:
            return
        if self.postpone:  # a held answer cut short: the client has seen nothing of it, and gets an error instead
            self.fail(502, "the app closed the connection before its answer was whole")
            return
        if not self.head_sent:
            self._end("lost")
            return
        if self.framing == "close":  # the app's close is the body's end
            if self.rechunk:
                self.client.write(b"0\r\n\r\n")
            self.finish(False)
            return
        self.client.abort()  # an answer cut short: the client must not take it as whole
        self.close_after = True
        self.finish(False)

    def fail(self, status: int, text: str) -> None:
        if self.ended:
            return
        client = self.client
        if self.client_has_part:  # it must not take the part for the whole
            client.abort()
        else:
            if self.postpone:  # nothing of a held answer reached the client: it is dropped, the error goes instead
                self.postponed = None
                if client.corked is not None:  # (failing inside Upstream.data_received: what this read parsed of it)
                    client.corked.clear()
            client.write(plain_response(status, f"{status} {text}\n", close=True))
            self.close_after = True
        self.finish(False)

    def start_tunnel(self, rest: bytes) -> None:
        upstream = self.upstream
        status = upstream.parser.get_status_code()
        head = [b"HTTP/1.1 %d %s" % (status, upstream.reason or b"Switching Protocols")]
        head += [name + b": " + value for name, value in upstream.answer_headers]
        if self.set_cookie is not None:  # a WebSocket keeps its allocation too: browsers store a 101's cookies
            head.append(b"set-cookie: " + self.set_cookie)
        self.client.write(b"\r\n".join(head) + b"\r\n\r\n" + rest)
        self.head_sent = True
        if self.request.upgrade:  # what the client sent after its head belongs to the new protocol, only now
            upstream.transport.write(self.request.upgrade)
        self.client.tunnel_to(upstream)
        self._end("tunnel")

    def finish(self, reuse: bool) -> None:
        if self.ended:
            return
        # A connection that carried an Upgrade request is never reused: what follows its head is the client's to
        # define, and must not reach another client's request.
        upstream = self.upstream
        if upstream.held:  # (Pool.release)
            upstream.held = False
            upstream.pool.release_port(upstream.port)
        upstream.exchange = None
        if reuse and not upstream.closed and self.request.upgrade is None:
            upstream.returning = True  # (reuse comes from a completed answer: inside the upstream's read)
        else:
            upstream.close()
        self.ended = True
        self.client.exchange_ended(self, "close" if self.close_after else "ok")

    def abandon(self) -> None:
        """The client went away: the app may still be writing an answer nobody will read."""
        if not self.ended:
            self.ended = True
            self.upstream.close()

    def _end(self, outcome: str) -> None:
        self.ended = True
        self.client.exchange_ended(self, outcome)


# -- downstream: one client connection ------------------------------------------------------------------------------
INFINITY = float("inf")


class Client(asyncio.Protocol):
    """One client connection. Everything here runs from the loop's callbacks: a request is routed and sent when it
    is complete and the previous answer is done; its answer ends in `exchange_ended`, which starts the next one —
    no task or future per request. Only opening a new upstream connection awaits (`_connect`)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.loop = relay.loop
        self.limits = relay.limits
        self.route = relay.route
        self.transport: asyncio.Transport | None = None
        self.parser = RequestParser(self, MAX_HEAD_BYTES)
        self.queue: deque[Request] = deque()
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.noted: dict[bytes, bytes] = {}
        self.affinity: list[str] | None = None
        self.body: list[bytes] | None = None
        self.body_size = 0
        self.closing = False
        self.tunnel: Upstream | None = None
        self.writable = True
        self.read_paused = False
        self.forwarding = forwarding_headers(None)
        self.exchange: Exchange | None = None
        self.connecting: asyncio.Task | None = None  # opening an upstream connection for the current request
        self.refusal: bytes | None = None
        self.corked: list[bytes] | None = None  # writes held back until uncork(): one send for one upstream read
        # One client deadline at a time: for the head being read ("head"), its body ("body"), the next request
        # ("idle"), or an upgraded connection's silence ("tunnel"); none while an answer is owed. The app's answer
        # head has its own (`answer_due`), and so has each read of an answer held until whole (`Exchange.postpone`).
        # One timer per connection checks both (`_check_deadline`): the request path only writes numbers.
        self.phase = ""
        self.deadline_at = INFINITY
        self.answer_due = INFINITY  # the app's answer head, or a held answer's next bytes, are owed by then (504 after)
        self.routed: tuple[list[Target], int] = ([], 0)  # the current request's targets and which one it went to
        # The upstream head of the last request sent, what it was made from, and that Request.
        self.last_head: tuple | None = None
        # The last bodiless request's line and headers as parsed, and the Request made of them (`on_message`).
        self.same_as_last: tuple[bytes, list[tuple[bytes, bytes]], Request] | None = None
        self.gone = False  # the client connection is lost
        self.valid_host: bytes | None = None  # the last Host header that passed the check
        self.valid_host_text = ""  # and as text
        self.timer: asyncio.TimerHandle | None = None
        self.timer_due = INFINITY
        self.in_message = False  # bytes of a request have arrived and its head or body is not complete yet
        self.stalled: asyncio.TimerHandle | None = None  # the client stopped reading an answer: cut it after a while
        self.tunnel_activity = 0  # reads in either direction of a tunnel, compared between idle checks
        self.tunnel_checked = -1
        self.lingering: asyncio.TimerHandle | None = None  # a refused connection, read out before it is closed

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        relay = self.relay
        if len(relay.clients) >= relay.max_clients:
            self.closing = True
            self.lingering = relay.refuse_connection(transport)
            return
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.forwarding = forwarding_headers(transport.get_extra_info("peername"))
        relay.clients.add(self)
        self._expect("head", relay.limits.head_timeout)  # a connection that says nothing is not kept either

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = self.gone = True
        for timer in (self.timer, self.stalled, self.lingering):
            if timer is not None:
                timer.cancel()
        if self.lingering is not None:
            self.relay.lingering -= 1
        self.relay.clients.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
        if self.exchange is not None:
            self.exchange.abandon()
        if self.connecting is not None:
            self.connecting.cancel()

    def pause_writing(self) -> None:
        self.writable = False
        if self.stalled is None:
            self.stalled = self.loop.call_later(self.relay.limits.send_timeout, self.abort)
        exchange = self.exchange
        if exchange is not None and exchange.upstream.transport is not None:
            exchange.upstream.paused = True
            exchange.upstream.transport.pause_reading()
        if self.tunnel is not None and self.tunnel.transport is not None:
            self.tunnel.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writable = True
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
        exchange = self.exchange
        if exchange is not None and exchange.upstream.transport is not None and not exchange.upstream.closed:
            exchange.upstream.paused = False
            exchange.upstream.transport.resume_reading()
        if self.tunnel is not None and self.tunnel.transport is not None and not self.tunnel.closed:
            self.tunnel.transport.resume_reading()
        if self.exchange is None and self.connecting is None and not self.closing:
            self._next()  # an answer ended while the client was not reading: the next request waited for this

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
            self._pause_reading()  # everything after the head belongs to the tunnel
            self._enqueue(request)
        except httptools.HttpParserError as error:
            # httptools wraps an exception raised in a callback; a limit the edge enforces comes back as its cause.
            refused = error.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.status, refused.text)
            else:
                self._refuse(400, f"400 bad request: {error}\n")

    # parser callbacks (rhone_local/http1.py)
    def on_message_begin(self) -> None:
        self.affinity = None
        self.in_message = True
        if self.phase != "head":  # a new connection's head deadline runs from accept
            self.phase = "head"
            self.deadline_at = due = self.loop.time() + self.limits.head_timeout
            if due < self.timer_due:
                self._arm(due)
        self.body = None
        self.body_size = 0

    def on_message(self, url: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A request begun and ended in one read: what on_message_begin, on_head, on_body and on_message_complete
        would do (rhone_local/http1.py). A client asks alike, request after request: a request whose line, headers,
        method and version are those of the last bodiless one (without Content-Length, Transfer-Encoding or Expect)
        is the same `Request` (a pure function of them), sent again without looking at its headers anew. What the
        four calls pass each other (`url`, `headers`, `noted`, `affinity`, `body`) is then left as it was: only a
        message's own later callbacks read it, after its own on_message_begin and on_head."""
        parser = self.parser
        same = self.same_as_last
        if (
            same is not None
            and url == same[0]
            and headers == same[1]
            and not body
            and parser.get_method() == same[2].method
            and parser.get_http_version() == same[2].version
        ):
            request = same[2]
        else:
            self.on_message_begin()
            self.on_head(url, headers)
            if body:
                self.on_body(body)
            request = self._request()
            noted = self.noted
            if not body and noted.keys().isdisjoint(ANNOUNCING_A_BODY):
                self.same_as_last = (url, headers, request)
        self.in_message = False  # (on_message_complete: the request is whole)
        self.phase = ""
        self.deadline_at = INFINITY
        self._complete(request)

    def on_head_too_large(self) -> None:
        raise _Refused(431, f"431 request head too large (over {MAX_HEAD_BYTES // 1024} KiB or {MAX_FIELDS} fields)\n")

    def on_head(self, url: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        kept = []
        noted: dict[bytes, bytes] = {}
        for header in headers:  # names lower-cased by the parser
            name, value = header
            # Only the edge says who the client is (the common spellings are checked without a call).
            if name[:12] == b"x-forwarded-" or name in UNTRUSTED or (b"_" in name and _claims_forwarding(name)):
                continue
            if name == b"cookie" and AFFINITY_MARK in value:  # the edge's own cookie: the app never sees it
                value = self._take_affinity(value)
                if not value:
                    continue
                header = (name, value)
            kept.append(header)
            if name in NOTED:
                if name not in noted:
                    noted[name] = value
                elif name == b"host":
                    raise _Refused(400, "400 a request has one Host header\n")
                else:
                    _note(noted, name, value)
        self.url = url
        self.headers = kept
        self.noted = noted
        host = noted.get(b"host")
        if host is None or host != self.valid_host:  # a client sends one Host, request after request
            self._checked_host()
        if self.url[:1] != b"/":
            self.url = _checked_target(self.parser.get_method(), self.url, host)
        if not noted.keys().isdisjoint(ANNOUNCING_A_BODY):
            self._body_announced()
        else:
            self.phase = ""  # (_settle) the head is whole and no body follows
            self.deadline_at = INFINITY

    def _body_announced(self) -> None:
        """A head that announces a body (or asks to be told to send it): its size is checked, its deadline set."""
        noted = self.noted
        declared = noted.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_REQUEST_BODY:
            raise _Refused(413, "413 request body too large for the local edge\n")  # before reading any of it
        if b"transfer-encoding" in noted or (declared is not None and declared.strip() not in (b"", b"0")):
            self._expect("body", self.relay.limits.body_timeout)
        else:
            self._settle()
        if b"expect" in noted:
            expects = noted[b"expect"].lower() == b"100-continue"
            idle = not self.queue and self.exchange is None and self.connecting is None
            if expects and idle and self.parser.get_http_version() == "1.1":
                # The body is read here, before the app sees it. (With answers still owed to earlier pipelined
                # requests an interim answer would jump the queue; the client then sends its body after its own
                # timeout.)
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > MAX_REQUEST_BODY:
            raise _Refused(413, "413 request body too large for the local edge\n")
        if self.body is None:
            self.body = [body]
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.phase = ""  # (_settle)
        self.deadline_at = INFINITY
        if self.parser.should_upgrade():
            return  # feed_data raises HttpParserUpgrade next, with the bytes that follow the head
        self._complete(self._request())

    def _complete(self, request: Request) -> None:
        """A request is whole: sent now if nothing is before it, else queued."""
        queue = self.queue
        if self.exchange is None and self.connecting is None:
            if not queue and self.writable and not self.read_paused:  # (what `_next` would do, without the queue)
                if self._route(request) and self.exchange is None and self.connecting is None:
                    self._next()
                return
            queue.append(request)
            self._next()
        else:
            queue.append(request)
        if len(queue) >= MAX_PIPELINED:
            self._pause_reading()

    def _take_affinity(self, cookie: bytes) -> bytes:
        """The Cookie header without the edge's affinity cookie (every other byte as sent); its values are noted."""
        kept = []
        if self.affinity is None:
            self.affinity = []
        for part in cookie.split(b";"):
            name, equals, value = part.strip().partition(b"=")
            if equals and name == AFFINITY_COOKIE:
                self.affinity.append(value.decode("latin-1"))
            else:
                kept.append(part)
        return b";".join(kept).lstrip()

    def _checked_host(self) -> None:
        host = self.noted.get(b"host")
        if host is None:
            if self.parser.get_http_version() == "1.1":
                raise _Refused(400, "400 an HTTP/1.1 request needs a Host header\n")
        elif host != self.valid_host:
            if not VALID_HOST.match(host):
                raise _Refused(400, "400 the Host header is not a host name or address with an optional port\n")
            self.valid_host = host
            self.valid_host_text = host.decode("latin-1")

    # the work
    def _request(self, upgrade: bytes | None = None) -> Request:
        parser = self.parser
        body = self.body
        self.body = None  # the Request holds it now (a repeated request skips on_message_begin, which clears it)
        noted = self.noted
        return Request(
            parser.get_method(),
            self.url,
            self.headers,
            self.valid_host_text if b"host" in noted else "",  # (the Host header, checked: `_checked_host`)
            parser.get_http_version(),
            parser.should_keep_alive(),
            b"".join(body) if body else b"",
            upgrade,
            noted,
            tuple(self.affinity) if self.affinity else (),
        )

    def _pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def _enqueue(self, request: Request) -> None:
        self.queue.append(request)
        if self.exchange is None and self.connecting is None:
            self._next()

    def _refuse(self, status: int, text: str) -> None:
        # After a parse error the connection's framing is lost: answer once, after anything already queued, and close.
        self._settle()
        self.closing = True
        self.refusal = plain_response(status, text, close=True)
        self._pause_reading()
        if self.exchange is None and self.connecting is None:
            self._next()

    def _next(self) -> None:
        """Start the next queued request (the previous answer is done), or wait: for the client to read what it was
        sent, for more requests, or — after a refusal — answer it and close."""
        while self.exchange is None and self.connecting is None:
            if not self.writable:
                return  # resume_writing() comes back here
            if not self.queue:
                if self.refusal is not None:
                    self.write(self.refusal)
                    self._close()
                elif not self.in_message and not self.closing:
                    self.phase = "idle"  # (_expect)
                    self.deadline_at = due = self.loop.time() + self.limits.keepalive_timeout
                    if due < self.timer_due:
                        self._arm(due)
                return
            # After an Upgrade head the bytes are the tunnel's: reading resumes only once it is one.
            upgrading = self.queue[-1].upgrade is not None
            if self.read_paused and len(self.queue) <= MAX_PIPELINED and self.refusal is None and not upgrading:
                self._resume_reading()
            if not self._route(self.queue.popleft()):
                return

    def _route(self, request: Request) -> bool:
        """Send `request` where the edge routes it, or answer it here; False when the connection is done for."""
        try:
            status, targets = self.route(request.host, request.affinity)
        except Exception:  # a bug in routing must cost one connection, not the edge
            log.exception("edge: routing a request failed")
            self.abort()
            return False
        if status != 200:
            self.write(plain_response(status, f"{status} {targets}\n", close=not request.keep_alive))
            if not request.keep_alive or request.upgrade is not None:
                self._close()
                return False
            return True
        self._forward(request, targets, 0, False)
        return True

    def _forward(self, request: Request, targets: list[Target], index: int, fresh: bool) -> None:
        """Send `request` to `targets[index]`: on an idle pooled connection when one suits it, else on a new one.
        Safe to send twice: a bodiless GET/HEAD/OPTIONS. Anything else goes only on a connection just used (or a new
        one) and is never retried — an app that saw a POST and died must not see it again."""
        if index == len(targets):
            # Every candidate is recorded ready and none accepts a connection (their processes died): that is "no
            # ready allocation", so 503 — the candidates are the owner's only, so this never reaches another one.
            self.write(plain_response(503, "503 the allocation is not answering\n", close=not request.keep_alive))
            self._after(request, "ok")
            return
        target = targets[index]
        upstream = None
        if request.upgrade is None and not fresh:
            safe = request.method in SAFE_METHODS and not request.body
            upstream = self.relay.pool.take(target.port, max_idle=None if safe else FRESH_ENOUGH_SECONDS)
        if upstream is not None:
            self._send(request, targets, index, upstream, True)
            return
        # Counted open from now: a drain must not end while a request is on its way to the allocation.
        self.relay.pool.hold_port(target.port)
        self.connecting = self.loop.create_task(self._connect(request, targets, index))

    async def _connect(self, request: Request, targets: list[Target], index: int) -> None:
        port = targets[index].port
        pool = self.relay.pool
        upstream = None
        try:
            upstream = await pool.connect(port)
        except (TimeoutError, OSError):
            pass  # nothing reached the app: the next target may take the request
        finally:
            self.connecting = None
            if upstream is not None:
                pool.hold(upstream)  # before the pending count goes: never a moment at zero
            pool.release_port(port)
        if self.gone:
            if upstream is not None:
                pool.release(upstream)
                upstream.close()
            return
        if upstream is None:
            self._forward(request, targets, index + 1, False)
        else:
            self._send(request, targets, index, upstream, False)

    def _send(self, request: Request, targets: list[Target], index: int, upstream: Upstream, reused: bool) -> None:
        target = targets[index]
        exchange = Exchange(self, request, upstream, target.set_cookie)
        if reused:
            exchange.reused = True
        upstream.exchange = exchange
        self.exchange = exchange
        if not upstream.held:  # (Pool.hold)
            upstream.held = True
            opened = upstream.pool.open
            opened[target.port] = opened.get(target.port, 0) + 1
        self.routed = (targets, index)
        body = request.body
        # A client asks alike, request after request: the head made for its last request is reused when everything
        # `Request.head_for` reads is the same (method, target, headers, port, Upgrade or not, body length; the
        # forwarding headers are this connection's).
        last = self.last_head
        if last is not None and last[3] is request and last[0][2] == target.port:  # the same Request (on_message)
            head = last[2]
        else:
            key = (request.method, request.target, target.port, request.upgrade is None, len(body))
            if last is not None and last[0] == key and last[1] == request.headers:
                head = last[2]
            else:
                head = request.head_for(target.port, self.forwarding)
            # (a Request with a body is not kept past its exchange: its body may be 32 MiB)
            self.last_head = (key, request.headers, head, None if body else request)
        upstream.transport.write(head + body if body else head)  # bytes after an Upgrade head wait for its 101
        self.answer_due = due = self.loop.time() + UPSTREAM_HEAD_TIMEOUT
        if due < self.timer_due:
            self._arm(due)

    def exchange_ended(self, exchange: Exchange, outcome: str) -> None:
        """The answer to the current request is done (see `Exchange`): retry, answer for the app, or go on."""
        self.exchange = None
        self.answer_due = INFINITY
        request = exchange.request
        if outcome == "tunnel":
            return
        if outcome == "lost":
            targets, index = self.routed
            safe = request.method in SAFE_METHODS and not request.body and request.upgrade is None
            if safe and not exchange.received_any and not self.gone:
                if exchange.reused:
                    # The app closed this idle connection as we sent: once more on a new one (it never saw it).
                    self._forward(request, targets, index, True)
                    return
                if index + 1 < len(targets):
                    # A new connection closed unanswered: the allocation is dying. A request safe to repeat goes to
                    # the owner's next allocation, as one it refused would.
                    self._forward(request, targets, index + 1, False)
                    return
            self.write(plain_response(502, "502 the app closed the connection without answering\n"))
            outcome = "ok"
        if outcome != "ok" or not request.keep_alive or request.upgrade is not None:
            self._after(request, outcome)
        elif not self.closing or self.refusal is not None:  # (_after, for an answer that keeps the connection)
            self._next()

    def _after(self, request: Request, outcome: str) -> None:
        if outcome in ("close", "client gone") or not request.keep_alive or request.upgrade is not None:
            self._close()
            return
        if not self.closing or self.refusal is not None:
            self._next()

    def _close(self) -> None:
        self.closing = True
        if self.corked:  # an answer parsed in this read goes out before the close
            self.uncork()
        if self.transport is not None:
            self.transport.close()

    # deadlines
    def _expect(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self.deadline_at = self.loop.time() + seconds
        self._arm(self.deadline_at)

    def _arm(self, at: float) -> None:
        """Make the connection's one timer fire by `at` (it may fire earlier: it checks and sleeps again)."""
        if at < self.timer_due:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(at, self._check_deadline)
            self.timer_due = at

    def _settle(self) -> None:
        self.phase = ""
        self.deadline_at = INFINITY

    def _check_deadline(self) -> None:
        self.timer, self.timer_due = None, INFINITY
        if self.gone:
            return
        now = self.loop.time()
        if now >= self.answer_due:
            self.answer_due = INFINITY
            exchange = self.exchange
            if exchange is not None and not exchange.client_has_part:
                exchange.fail(504, "the app did not answer in time")
        if now >= self.deadline_at:
            self._deadline_passed()
        due = min(self.deadline_at, self.answer_due)
        if due != INFINITY and not self.gone:
            # Never later than the shortest client timeout from now, so a deadline set later never needs re-arming.
            self._arm(min(due, now + self.relay.tick))

    def _deadline_passed(self) -> None:
        phase = self.phase
        self._settle()
        if self.closing:
            return
        if phase == "tunnel":
            if self.tunnel_activity == self.tunnel_checked:
                self._close()  # the upstream side closes with it (connection_lost)
            else:
                self.tunnel_checked = self.tunnel_activity
                self._expect("tunnel", self.relay.limits.tunnel_idle_timeout)
        elif self.in_message:  # a head or a body did not arrive whole in time: the client is told, then cut
            self._refuse(408, "408 the request did not arrive in time\n")
        else:  # nothing asked since the last answer (or since accept): no answer is owed
            self._close()

    def tunnel_to(self, upstream: Upstream) -> None:
        self.tunnel = upstream
        upstream.tunnel = self.transport
        upstream.tunnel_client = self
        upstream.exchange = None
        self.tunnel_checked = self.tunnel_activity
        self._expect("tunnel", self.relay.limits.tunnel_idle_timeout)
        self._resume_reading()

    def uncork(self) -> None:
        pending, self.corked = self.corked, None
        if pending:
            self.write(pending[0] if len(pending) == 1 else b"".join(pending))

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

    def __init__(
        self,
        route: RouteFn,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Limits | None = None,
        *,
        sock: socket.socket | None = None,
    ) -> None:
        self.route = route
        self.host, self.port = host, port
        self.sock = sock  # a listening socket bound by someone else (an edge process inherits its supervisor's)
        self.limits = limits or Limits()
        self.max_clients = self.limits.max_clients or client_cap(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        # How often, at most, a client connection's timer looks at its deadlines (its shortest client timeout).
        self.tick = min(self.limits.head_timeout, self.limits.body_timeout, self.limits.keepalive_timeout)
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
            if self.sock is not None:
                serving = self.loop.create_server(lambda: Client(self), sock=self.sock, backlog=1024)
            else:
                serving = self.loop.create_server(
                    lambda: Client(self), self.host, self.port, reuse_address=True, backlog=1024
                )
            self.server = self.loop.run_until_complete(serving)
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

    def run(self) -> None:
        """Serve on the calling thread until `stop_soon()` (an edge process's main thread)."""
        self._run()
        if self.error is not None:
            raise self.error

    def stop_soon(self) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self.loop.stop)

    def stop(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        self.stop_soon()
        self._thread.join(5)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows); the standard loop works, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
