"""The edge's data path: a small HTTP/1.1 relay on asyncio protocols, with kept-alive upstream connections.

Why not an ASGI app behind uvicorn with an HTTP client: every request then crosses two full HTTP stacks in Python
(uvicorn's, then the client's pool), which cost the edge about five times the work of the app it fronts. Here a
request is parsed once (httptools), its head is rewritten once, and the answer's bytes go to the client as they
arrive — the upstream connection is reused, the body is never re-buffered.

What the relay does, per client connection:
- parses requests (pipelined ones queue, in order), reads each body whole (bounded) so the upstream always gets a
  Content-Length — simple app servers do not read chunked request bodies;
- asks `Edge.candidates(host, cookie)` where it goes; anything but ports is answered here in plain text (404, 503 …);
  a candidate that refuses the connection gives way to the next (the same owner's other allocations);
- sends the request on an idle connection to that port, or a new one; a reused connection that closes before any
  answer byte is retried once on a fresh one (the app closed it while idle — the request was never seen);
- relays the answer: head filtered of hop-by-hop headers, body as it comes (a body the app delimits by closing is
  re-framed as chunked for HTTP/1.1 clients); the client's write buffer pauses reading from the app;
- a WebSocket (any `Upgrade`) becomes a byte tunnel once the app answers 101.
Refused connections are 503 (the allocation recorded as ready is not answering: still never another deployment);
an app that fails mid-answer is 502 if nothing was sent yet, or a cut connection otherwise; no head within
`UPSTREAM_HEAD_TIMEOUT` is 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

# Hop-by-hop headers (RFC 9110 §7.6.1) never cross the edge; Host and Content-Length are rewritten by it.
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

# (Host header, Cookie header) -> (200, candidate ports in order) or (status, reason)
RouteFn = Callable[[str, "str | None"], "tuple[int, str | int | list[int]]"]


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
    upgrade: bytes | None = None  # bytes already received after the head of an Upgrade request
    noted: dict[bytes, bytes] = field(default_factory=dict)

    def head_for(self, port: int, client_ip: str) -> bytes:
        drop = _dropped_by_connection(self.headers, self.noted)
        lines = [b"%s %s HTTP/1.1" % (self.method, self.target), b"host: 127.0.0.1:%d" % port]
        lines += [name + b": " + value for name, value in self.headers if name not in drop]
        if self.upgrade is not None:
            lines += [b"connection: upgrade"] + [b"upgrade: " + v for n, v in self.headers if n == b"upgrade"]
        if self.body or self.method in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"content-length: %d" % len(self.body))
        lines.append(b"x-forwarded-host: " + self.host.encode("latin-1"))
        lines.append(b"x-forwarded-proto: http")
        if client_ip:
            lines.append(b"x-forwarded-for: " + client_ip.encode())
        return b"\r\n".join(lines) + b"\r\n\r\n"


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
        self.parser = httptools.HttpResponseParser(self)

    # asyncio callbacks
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.pool.live.setdefault(self.port, set()).add(self)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
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
        self.pool.live.get(self.port, set()).discard(self)
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
    """Idle upstream connections per port, reused most-recent first."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: dict[int, list[Upstream]] = {}
        self.live: dict[int, set[Upstream]] = {}  # every open connection per port, idle or carrying a request

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
        idle = self.idle.setdefault(upstream.port, [])
        if upstream.closed or len(idle) >= MAX_IDLE_PER_PORT:
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
        self.client.write(b"\r\n".join(head) + b"\r\n\r\n" + rest)
        self.head_sent = True
        self.client.tunnel_to(self.upstream)
        self.done.set_result("tunnel")

    def finish(self, *, reuse: bool) -> None:
        if self.done.done():
            return
        # A connection that carried an Upgrade request is never reused: what follows its head is the client's to
        # define, and must not reach another client's request.
        if reuse and not self.upstream.closed and self.request.upgrade is None:
            self.client.relay.pool.give_back(self.upstream)
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
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0
        self.closing = False
        self.tunnel: Upstream | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.peer = ""
        self.exchange: Exchange | None = None
        self.refusal: bytes | None = None
        self.corked: list[bytes] | None = None  # writes held back until uncork(): one send for one upstream read

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.relay.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
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
        exchange = self.exchange
        if exchange is not None and exchange.upstream.transport is not None:
            exchange.upstream.transport.pause_reading()
        if self.tunnel is not None and self.tunnel.transport is not None:
            self.tunnel.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writable.set()
        exchange = self.exchange
        if exchange is not None and exchange.upstream.transport is not None and not exchange.upstream.closed:
            exchange.upstream.transport.resume_reading()
        if self.tunnel is not None and self.tunnel.transport is not None and not self.tunnel.closed:
            self.tunnel.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
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
        self.headers.append((name, value))
        if name in NOTED:
            self.noted.setdefault(name, value)

    def on_headers_complete(self) -> None:
        declared = self.noted.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > MAX_REQUEST_BODY:
            raise _Refused(413, "413 request body too large for the local edge\n")  # before reading any of it
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
        if self.parser.should_upgrade():
            return  # feed_data raises HttpParserUpgrade next, with the bytes that follow the head
        self._enqueue(self._request())
        if len(self.queue) >= MAX_PIPELINED:
            self.transport.pause_reading()

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
        )

    def _enqueue(self, request: Request) -> None:
        self.queue.append(request)
        if self.worker is None or self.worker.done():
            self.worker = self.relay.loop.create_task(self._serve_queue())

    def _refuse(self, status: int, text: str) -> None:
        # After a parse error the connection's framing is lost: answer once, after anything already queued, and close.
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
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must cost one connection, not the edge
            log.exception("edge: relaying a request failed")
            self.abort()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def _forward(self, request: Request) -> str:
        cookie = request.noted.get(b"cookie")
        cookie = cookie.decode("latin-1") if cookie is not None else None
        status, target = self.relay.route(request.host, cookie)
        if status != 200:
            self.write(plain_response(status, f"{status} {target}\n", close=not request.keep_alive))
            return "ok"
        for port in target if isinstance(target, list) else [int(target)]:
            outcome = await self._forward_to(request, port)
            if outcome != "refused":
                return outcome
        # Every candidate is recorded ready and none accepts a connection (their processes died): that is "no ready
        # allocation", so 503 — the candidates are the owner's only, so this never reaches another deployment.
        self.write(plain_response(503, "503 the allocation is not answering\n", close=not request.keep_alive))
        return "ok"

    async def _forward_to(self, request: Request, port: int) -> str:
        """Send `request` to `port`; "refused" when no connection could be made (the next candidate may take it)."""
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
                    if attempt == 1:
                        return "refused"
                    break
            exchange = Exchange(self, request, upstream, self.relay.loop.create_future())
            upstream.exchange = exchange
            self.exchange = exchange
            upstream.transport.write(head + request.body if request.upgrade is None else head + request.upgrade)
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

    def __init__(self, route: RouteFn, host: str, port: int) -> None:
        self.route = route
        self.host, self.port = host, port
        self.loop: asyncio.AbstractEventLoop = _new_loop()
        self.pool = Pool(self.loop)
        self.clients: set[Client] = set()
        self.server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self.started = threading.Event()
        self.error: OSError | None = None

    def open_connections(self, port: int) -> int:
        """Requests, streams and tunnels the relay is carrying to `port` now (idle pooled connections excluded).
        Read from other threads: the sizes are read atomically, a momentary count is all a drain needs."""
        return max(len(self.pool.live.get(port, ())) - len(self.pool.idle.get(port, ())), 0)

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
