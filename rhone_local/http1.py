"""The edge's HTTP/1.1 parsers: llhttp, with a message's whole head handed to Python in one call.

    parser = RequestParser(protocol, max_head)     # protocol.on_head(url, headers)
    parser = ResponseParser(protocol, max_head)    # protocol.on_head(reason, headers)
    parser.feed_data(data)

`headers` is a new list of `(name, value)` pairs of bytes, names lower-cased, per head. The protocol may also define
`on_message_begin()`, `on_body(bytes)`, `on_message_complete()` and `on_head_too_large()`, called (and expected to
raise) as soon as one head's URL or reason phrase, header names and values add up to more than `max_head` bytes, or
its fields number more than `MAX_FIELDS` — before more of it is kept. A chunked body's trailer fields count towards
both limits and are dropped.

A protocol that also defines `on_message(first, headers, body)` gets a message that begins and ends within one
`feed_data` call, with at most one piece of body, in that one call (`body` is `b""` when there is none) instead of
`on_message_begin`, `on_head`, `on_body` and `on_message_complete`: the parser holds those calls back until it knows,
and makes them in their order as soon as the message turns out otherwise (an upgrade, a second piece of body, the end
of the bytes fed, an error, a head past a limit). `on_message` must therefore do exactly what the four calls would;
on the edge's hot path it saves their cost and what they pass each other through the protocol's attributes.

Errors and upgrades are raised as httptools raises them: `httptools.HttpParserError` (an exception a callback raised
is its `__context__`) and `httptools.HttpParserUpgrade(offset of the bytes after the head)`.

Two implementations of this one contract (docs/architecture.md, "The edge's parsers"):
- `rhone_local._http1`, a C extension compiled from `native/http1.c` and the llhttp sources vendored beside it when
  rhone is installed (`hatch_build.py`). The relay's per-request cost is mostly Python calls: httptools makes one per
  URL piece and per header, this makes one per head.
- the classes below, on httptools (which bundles the same llhttp release), used when the extension was not built
  (no C compiler at install time). `tests/local/test_http1.py` feeds both the same bytes, whole and split at every
  offset, and requires the same calls and the same errors.
"""

from __future__ import annotations

from typing import Any

import httptools

# httptools hands a header over only once the next one starts: until then it keeps the value growing in memory,
# unseen by `max_head`. The wrappers below also count the bytes of every read that ends inside a head, and refuse
# the head past this many times `max_head` (the C parser counts each piece as it arrives and needs no such guard).
RAW_HEAD_FACTOR = 2
# Fields per head, trailers included (MAX_FIELDS in native/http1.c): within the byte limit, 64 KiB of empty headers
# would otherwise make some 60,000 pairs of Python objects. Real clients send a few dozen.
MAX_FIELDS = 256


class _Collector:
    """httptools callbacks gathering one head for the protocol's `on_head`."""

    def __init__(self, protocol: Any, max_head: int) -> None:
        self.protocol = protocol
        self.max_head = max_head
        self.first = b""
        self.headers: list[tuple[bytes, bytes]] | None = None  # None once handed over: later fields are trailers
        self.size = 0
        self.fields = 0
        self.in_head = False
        self.raw = 0  # bytes of reads that ended inside the current head
        self.on_begin = getattr(protocol, "on_message_begin", None)
        self.on_head = getattr(protocol, "on_head", None)
        self.on_message = getattr(protocol, "on_message", None) if self.on_head is not None else None
        self.parser: Any = None  # the httptools parser (it says whether a head is an upgrade's)
        # Held back for `on_message` (see the module's docstring): the begin call, then the head, then a body piece.
        self.begin_held = False
        self.held: tuple[bytes, list[tuple[bytes, bytes]]] | None = None
        self.held_body: bytes | None = None
        self.on_too_large = getattr(protocol, "on_head_too_large", None)
        # httptools calls a callback only when it finds one: these are instance attributes, set only when there is
        # something to call (the protocol's own, or with on_message the methods below, standing in between).
        self.protocol_body = getattr(protocol, "on_body", None)
        self.protocol_complete = getattr(protocol, "on_message_complete", None)
        if self.on_message is not None:
            self.on_body = self._body_or_hold
            self.on_message_complete = self._complete_or_message
        else:
            if self.protocol_body is not None:
                self.on_body = self.protocol_body
            if self.protocol_complete is not None:
                self.on_message_complete = self.protocol_complete

    def release_held(self) -> None:
        """The calls held back for `on_message`, made now, in their order: the message is not one such call."""
        begin, held, body = self.begin_held, self.held, self.held_body
        self.begin_held, self.held, self.held_body = False, None, None  # (made once, even if one of them raises)
        if begin and self.on_begin is not None:
            self.on_begin()
        if held is not None:
            self.on_head(*held)
            if body is not None and self.protocol_body is not None:
                self.protocol_body(body)

    def _body_or_hold(self, body: bytes) -> None:
        if self.held is not None:
            if self.held_body is None:  # the first piece: the message may still end within these bytes
                self.held_body = body
                return
            self.release_held()
        if self.protocol_body is not None:
            self.protocol_body(body)

    def _complete_or_message(self) -> None:
        if self.held is None:
            if self.protocol_complete is not None:
                self.protocol_complete()
            return
        (first, headers), body = self.held, self.held_body
        self.held = self.held_body = None
        self.begin_held = False
        self.on_message(first, headers, body if body is not None else b"")

    def _count(self, size: int) -> None:
        self.size += size
        if 0 <= self.max_head < self.size:
            self.refuse()

    def refuse(self) -> None:
        """A head past a limit: the protocol's `on_head_too_large` is called (to raise), and parsing stops."""
        self.release_held()
        if self.on_too_large is not None:
            self.on_too_large()
        raise ValueError("head too large")

    def on_message_begin(self) -> None:
        self.first = b""
        self.headers = []
        self.size = 0
        self.fields = 0
        self.in_head = True
        self.raw = 0
        if self.on_message is not None:
            self.begin_held = True
        elif self.on_begin is not None:
            self.on_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        self.first += url

    on_status = on_url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields += 1
        if self.fields > MAX_FIELDS:
            self.refuse()
        self._count(len(name) + len(value))
        if self.headers is not None:
            self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        headers, self.headers = self.headers, None
        if self.on_head is not None:
            if self.begin_held and not self.parser.should_upgrade():  # begun in this read, and may end in it
                self.held = (self.first, headers if headers is not None else [])
                return
            self.release_held()
            self.on_head(self.first, headers if headers is not None else [])


class _Guarded:
    """`feed_data` with the raw-bytes guard (RAW_HEAD_FACTOR); the parser's other methods are its own."""

    _parser: Any
    _collector: _Collector
    _failed: httptools.HttpParserError | None = None

    def feed_data(self, data: bytes) -> None:
        if self._failed is not None:  # as llhttp: after an error, every call fails alike
            raise type(self._failed)(*self._failed.args)
        collector = self._collector
        try:
            self._parser.feed_data(data)
        finally:
            if collector.begin_held or collector.held is not None:
                self._release_held()
        if collector.in_head and collector.max_head >= 0:
            collector.raw += len(data)
            if collector.raw > RAW_HEAD_FACTOR * collector.max_head:
                try:
                    collector.refuse()
                except Exception as refused:
                    self._failed = httptools.HttpParserCallbackError("head too large")
                    raise self._failed from refused

    def _release_held(self) -> None:
        """The bytes ended (or an error came) inside a message: the calls held back for `on_message` are made. One
        failing fails the parse as it would have where it was held, and the parser stays failed (as llhttp does)."""
        try:
            self._collector.release_held()  # (it takes the held calls before making them: none is left to make)
        except Exception as error:
            self._failed = httptools.HttpParserCallbackError("callback error")
            raise self._failed from error


class HttptoolsRequestParser(_Guarded):
    """A request parser: `protocol.on_head(url, headers)` once per head (see the module's docstring)."""

    def __init__(self, protocol: Any, max_head: int = -1) -> None:
        self._collector = _Collector(protocol, max_head)
        self._parser = self._collector.parser = httptools.HttpRequestParser(self._collector)
        self.get_method = self._parser.get_method
        self.get_http_version = self._parser.get_http_version
        self.should_keep_alive = self._parser.should_keep_alive
        self.should_upgrade = self._parser.should_upgrade


class HttptoolsResponseParser(_Guarded):
    """A response parser: `protocol.on_head(reason, headers)` once per head (see the module's docstring)."""

    def __init__(self, protocol: Any, max_head: int = -1) -> None:
        self._collector = _Collector(protocol, max_head)
        self._parser = self._collector.parser = httptools.HttpResponseParser(self._collector)
        self.get_status_code = self._parser.get_status_code
        self.get_http_version = self._parser.get_http_version
        self.should_keep_alive = self._parser.should_keep_alive
        self.should_upgrade = self._parser.should_upgrade


def compiled() -> tuple[Any, Any] | None:
    """The C parsers `(RequestParser, ResponseParser)`, or None when `rhone_local._http1` was not built."""
    try:
        from rhone_local import _http1
    except ImportError:
        return None
    return _http1.RequestParser, _http1.ResponseParser


# What the edge uses: the C parsers when built, else the ones on httptools.
_built = compiled()
RequestParser: Any = _built[0] if _built is not None else HttptoolsRequestParser
ResponseParser: Any = _built[1] if _built is not None else HttptoolsResponseParser
IMPLEMENTATION = "llhttp in C (rhone_local._http1)" if _built is not None else "httptools"
