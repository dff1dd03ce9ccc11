"""The edge's two HTTP/1.1 parser implementations (rhone_local/http1.py) against each other.

The C one (`rhone_local._http1`, built from native/ at install) is what the edge runs; the one on httptools is what it
falls back to. Both must make the same calls and raise the same errors for the same bytes, however the bytes are
split across reads: each case is fed whole, split in two at every offset, and one byte at a time.
"""

from __future__ import annotations

import sysconfig
import tracemalloc
from pathlib import Path
from typing import Any

import httptools
import pytest

from rhone_local import edge_relay, http1
from tests.local.test_edge_relay import client_and_pooled_upstream

ROOT = Path(__file__).resolve().parents[2]
BUILT = http1.compiled()


# How `run` records a head refused by the protocol's `on_head_too_large` (it raises TooLarge).
TOO_LARGE = ("error", "HttpParserCallbackError", "TooLarge", "head")


class TooLarge(Exception):
    pass


class Recorder:
    """A protocol writing down every call, with what the parser's getters say at the end of each message."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls: list[tuple[Any, ...]] = []
        self.parser: Any = None

    def on_message_begin(self) -> None:
        self.calls.append(("begin",))

    def on_head(self, first: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        assert isinstance(headers, list) and all(type(pair) is tuple and len(pair) == 2 for pair in headers)
        self.calls.append(("head", first, list(headers)))

    def on_body(self, body: bytes) -> None:
        if self.calls and self.calls[-1][0] == "body":  # how a body is cut into calls follows the reads
            self.calls[-1] = ("body", self.calls[-1][1] + body)
        else:
            self.calls.append(("body", body))

    def on_message_complete(self) -> None:
        p = self.parser
        if self.kind == "request":
            seen = (p.get_method(), p.get_http_version(), p.should_keep_alive(), p.should_upgrade())
        else:
            seen = (p.get_status_code(), p.get_http_version(), p.should_keep_alive(), p.should_upgrade())
        self.calls.append(("complete", *seen))

    def on_head_too_large(self) -> None:
        raise TooLarge("head")


class MessageRecorder(Recorder):
    """A protocol with `on_message` too: a message begun and ended in one read may come in that one call."""

    def on_message(self, first: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.on_message_complete()
        seen = self.calls.pop()[1:]
        self.calls.append(("message", first, list(headers), body, *seen))


def expanded(calls: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """`calls` with each on_message call written as the four calls it stands for."""
    out: list[tuple[Any, ...]] = []
    for call in calls:
        if call[0] == "message":
            _, first, headers, body, *seen = call
            out += [("begin",), ("head", first, headers)] + ([("body", body)] if body else []) + [("complete", *seen)]
        else:
            out.append(call)
    return out


def run(
    parser_class: Any, kind: str, parts: list[bytes], max_head: int, recorder_class: type = Recorder
) -> list[tuple[Any, ...]]:
    recorder = recorder_class(kind)
    recorder.parser = parser = parser_class(recorder, max_head)
    for index, part in enumerate(parts):
        try:
            parser.feed_data(part)
        except httptools.HttpParserUpgrade as upgrade:
            return [*recorder.calls, ("upgrade", index, upgrade.args[0])]
        except httptools.HttpParserError as error:
            context = error.__context__
            outcome: tuple[Any, ...] = (type(error).__name__,)
            if context is not None:
                outcome += (type(context).__name__, str(context))
            elif not isinstance(error, httptools.HttpParserCallbackError):
                outcome += (str(error),)  # llhttp's own reason, the same words from either
            return [*recorder.calls, ("error", *outcome)]
    return recorder.calls


def splits(data: bytes) -> list[list[bytes]]:
    ways = [[data], [bytes([b]) for b in data]]
    ways += [[data[:i], data[i:]] for i in range(1, len(data))]
    return ways


REQUESTS = {
    "get": b"GET /a?b=c HTTP/1.1\r\nHost: app.localhost:8080\r\nAccept: */*\r\n\r\n",
    "pipelined": b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    b"HEAD /3 HTTP/1.1\r\nHost: a\r\n\r\n",
    "post": b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world",
    "chunked with trailers": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n",
    "mixed case and empty": b"GET / HTTP/1.1\r\nHOST: a\r\nX-Empty:\r\nx-SPACES:   padded value  \r\n"
    b"Cookie: a=1; b=2\r\n\r\n",
    "http/1.0": b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    "http/1.0 keep-alive": b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    "connection close": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "absolute form": b"GET http://a:8080/x HTTP/1.1\r\nHost: a:8080\r\n\r\n",
    "websocket": b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x85frame",
    "connect": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\ntunnel bytes",
    "bad method": b"GE\x01T / HTTP/1.1\r\nHost: a\r\n\r\n",
    "bad header name": b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
    "bare lf": b"GET / HTTP/1.1\nHost: a\n\n",
    "obs fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: one\r\n two\r\n\r\n",
    "content-length and chunked": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two content-lengths": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "bad content-length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\nab",
    "bad chunk size": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "garbage after": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\x00\x01\x02",
    "large head": b"GET /" + b"u" * 300 + b" HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 300 + b"\r\n\r\n",
    # MAX_FIELDS (256) fields in all, then one more: a few bytes each, far under the byte limit.
    "fields at the limit": b"GET / HTTP/1.1\r\nHost: a\r\n" + b"x:\r\n" * 255 + b"\r\n",
    "too many fields": b"GET / HTTP/1.1\r\nHost: a\r\n" + b"x:\r\n" * 256 + b"\r\n",
    "trailer fields past the limit": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    + b"x:\r\n" * 254
    + b"\r\n1\r\nz\r\n0\r\nX-T: 1\r\n\r\n",
}

RESPONSES = {
    "length": b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Tue, 01 Dec 2026 01:50:00 GMT\r\n"
    b"Connection: keep-alive\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n",
    "two answers": b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n",
    "no reason": b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok",
    "no reason or space": b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
    "long reason": b"HTTP/1.1 404 Not Found Here At All\r\nContent-Length: 0\r\n\r\n",
    "early hints": b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    "switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi",
    "http/1.0 to the close": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    "bad status": b"HTTP/1.1 2x0 OK\r\n\r\n",
    "bad version": b"HTTP/9.9 200 OK\r\nContent-Length: 0\r\n\r\n",
    "large head": b"HTTP/1.1 200 OK\r\nSet-Cookie: " + b"c" * 600 + b"\r\nContent-Length: 0\r\n\r\n",
    "fields at the limit": b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 255 + b"Content-Length: 0\r\n\r\n",
    "too many fields": b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 256 + b"Content-Length: 0\r\n\r\n",
}


def _cases() -> list[Any]:
    cases = [pytest.param("request", name, data, id=f"request: {name}") for name, data in REQUESTS.items()]
    cases += [pytest.param("response", name, data, id=f"response: {name}") for name, data in RESPONSES.items()]
    return cases


def both_parsers(kind: str, name: str) -> tuple[Any, Any, int]:
    """The C parser and the httptools one for `kind`, and the head limit a case is fed with."""
    assert BUILT is not None
    built = BUILT[0] if kind == "request" else BUILT[1]
    fallback = http1.HttptoolsRequestParser if kind == "request" else http1.HttptoolsResponseParser
    return built, fallback, 512 if name == "large head" else 64 * 1024


@pytest.mark.skipif(BUILT is None, reason="rhone_local._http1 is not built (see test_the_c_parser_is_built)")
@pytest.mark.parametrize(("kind", "name", "data"), _cases())
def test_the_c_parser_and_the_httptools_one_make_the_same_calls_and_errors(kind: str, name: str, data: bytes) -> None:
    built, fallback, max_head = both_parsers(kind, name)
    whole = run(built, kind, [data], max_head)
    assert whole, name  # every case makes at least one call
    for parts in splits(data):
        assert run(built, kind, parts, max_head) == run(fallback, kind, parts, max_head), (name, parts)
    if name == "large head":
        assert whole[-1] == TOO_LARGE
        assert run(built, kind, [data], -1)[-1][0] == "complete"  # no limit: the same head is fine
    if name in ("too many fields", "trailer fields past the limit"):
        assert whole[-1] == TOO_LARGE
        assert not any(call[0] == "complete" for call in whole)
        assert run(built, kind, [data], -1)[-1] == whole[-1]  # a field count, whatever the byte limit
    if name == "fields at the limit":
        assert whole[-1][0] == "complete" and len(next(c for c in whole if c[0] == "head")[2]) == http1.MAX_FIELDS


@pytest.mark.skipif(BUILT is None, reason="rhone_local._http1 is not built (see test_the_c_parser_is_built)")
@pytest.mark.parametrize(("kind", "name", "data"), _cases())
def test_on_message_stands_for_exactly_the_calls_it_replaces(kind: str, name: str, data: bytes) -> None:
    # A protocol with on_message gets the same story, whichever parser and however the bytes are split: with each
    # on_message call written out as begin, head, body and complete, the calls and errors are those of a protocol
    # without it, in the same order.
    built, fallback, max_head = both_parsers(kind, name)
    for parts in splits(data):
        plain = run(built, kind, parts, max_head)
        merged = run(built, kind, parts, max_head, MessageRecorder)
        assert merged == run(fallback, kind, parts, max_head, MessageRecorder), (name, parts)
        assert expanded(merged) == plain, (name, parts)
        if len(parts) > 2:  # one byte a read: no message begins and ends in one
            assert not any(call[0] == "message" for call in merged), (name, parts)


class ComposingRecorder(Recorder):
    """`on_message` written as the four calls it stands for: a callback raising mid-way raises at the same point."""

    def on_message(self, first: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.on_message_begin()
        self.on_head(first, headers)
        if body:
            self.on_body(body)
        self.on_message_complete()


class Boom(Exception):
    pass


def raising_in(recorder_class: type, callback: str) -> Any:
    """A recorder (factory) whose `callback` records its call, then raises."""

    def make(kind: str) -> Recorder:
        recorder = recorder_class(kind)
        recorded = getattr(recorder, callback)

        def raise_after(*args: Any) -> None:
            recorded(*args)
            raise Boom(callback)

        setattr(recorder, callback, raise_after)
        return recorder

    return make


@pytest.mark.skipif(BUILT is None, reason="rhone_local._http1 is not built (see test_the_c_parser_is_built)")
@pytest.mark.parametrize("callback", ["on_message_begin", "on_head", "on_body", "on_message_complete"])
@pytest.mark.parametrize(("kind", "name", "data"), _cases())
def test_a_callback_raising_while_calls_are_held_tells_the_same_story(
    kind: str, name: str, data: bytes, callback: str
) -> None:
    # A held call is made once, where it would have been made, and whatever it raises ends the parse there: with or
    # without on_message, on either parser, split anywhere.
    built, fallback, max_head = both_parsers(kind, name)
    plain, composing = raising_in(Recorder, callback), raising_in(ComposingRecorder, callback)
    for parts in splits(data):
        told = run(built, kind, parts, max_head, plain)
        assert told == run(fallback, kind, parts, max_head, plain), (name, parts)
        assert told == run(built, kind, parts, max_head, composing), (name, parts)
        assert told == run(fallback, kind, parts, max_head, composing), (name, parts)


class HeadOnly:
    """A protocol with on_head alone (and, as `Merged`, on_message): the parsers call nothing it does not have."""

    def __init__(self, kind: str) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.parser: Any = None

    def on_head(self, first: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.calls.append(("head", first))


class HeadAndMessage(HeadOnly):
    def on_message(self, first: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.calls.append(("message", first, body))


@pytest.mark.skipif(BUILT is None, reason="rhone_local._http1 is not built (see test_the_c_parser_is_built)")
def test_a_protocol_without_the_other_callbacks_gets_only_what_it_has() -> None:
    assert BUILT is not None
    for data in (REQUESTS["post"] + REQUESTS["chunked with trailers"], REQUESTS["pipelined"]):
        for parts in splits(data):
            for protocol in (HeadOnly, HeadAndMessage):
                told = run(BUILT[0], "request", parts, 1024, protocol)
                assert told == run(http1.HttptoolsRequestParser, "request", parts, 1024, protocol), parts
                assert told and all(call[0] in ("head", "message") for call in told), (parts, told)
    whole = run(BUILT[0], "request", [REQUESTS["post"]], 1024, HeadAndMessage)
    assert whole == [("message", b"/form", b"hello world")]


def test_on_message_is_one_call_for_messages_that_begin_and_end_in_one_read() -> None:
    assert BUILT is not None
    for parser_class in (BUILT[0], http1.HttptoolsRequestParser):
        pipelined = run(parser_class, "request", [REQUESTS["pipelined"]], 1024, MessageRecorder)
        assert [call[:2] for call in pipelined] == [("message", b"/1"), ("message", b"/2"), ("message", b"/3")]
        post = run(parser_class, "request", [REQUESTS["post"]], 1024, MessageRecorder)
        assert [call[:2] + call[3:4] for call in post] == [("message", b"/form", b"hello world")]
        # A chunked body comes in pieces: the held calls are made at the second, and the message ends as usual.
        chunked = run(parser_class, "request", [REQUESTS["chunked with trailers"]], 1024, MessageRecorder)
        assert [call[0] for call in chunked] == ["begin", "head", "body", "complete"]
        # An upgrade's head is never held: the tunnel starts from it.
        upgrade = run(parser_class, "request", [REQUESTS["websocket"]], 1024, MessageRecorder)
        assert [call[0] for call in upgrade] == ["begin", "head", "complete", "upgrade"]
        # A message begun in one read and ended in the next: its begin is made when the first read ends.
        data = REQUESTS["get"]
        split = run(parser_class, "request", [data[:-2], data[-2:]], 1024, MessageRecorder)
        assert [call[0] for call in split] == ["begin", "head", "complete"]
    for parser_class in (BUILT[1], http1.HttptoolsResponseParser):
        answer = run(parser_class, "response", [RESPONSES["length"]], 1024, MessageRecorder)
        assert [call[:2] + call[3:5] for call in answer] == [("message", b"OK", b"hello, world\n", 200)]
        answers = run(parser_class, "response", [RESPONSES["two answers"]], 1024, MessageRecorder)
        assert [call[:2] + call[3:5] for call in answers] == [
            ("message", b"No Content", b"", 204),
            ("message", b"Not Modified", b"", 304),
        ]


def test_what_the_c_parser_hands_over_for_a_common_request_and_answer() -> None:
    # The contract's particulars, checked on the implementation the edge runs (either one).
    request = run(http1.RequestParser, "request", [REQUESTS["mixed case and empty"]], 1024)
    assert request == [
        ("begin",),
        (
            "head",
            b"/",
            [(b"host", b"a"), (b"x-empty", b""), (b"x-spaces", b"padded value  "), (b"cookie", b"a=1; b=2")],
        ),
        ("complete", b"GET", "1.1", True, False),
    ]
    chunked = run(http1.RequestParser, "request", [REQUESTS["chunked with trailers"]], 1024)
    assert chunked == [  # trailer fields are counted towards the limit, and dropped
        ("begin",),
        ("head", b"/", [(b"host", b"a"), (b"transfer-encoding", b"chunked")]),
        ("body", b"hello world"),
        ("complete", b"POST", "1.1", True, False),
    ]
    upgrade = run(http1.RequestParser, "request", [REQUESTS["websocket"]], 1024)
    assert upgrade[-1] == ("upgrade", 0, REQUESTS["websocket"].index(b"\x81"))
    answer = run(http1.ResponseParser, "response", [RESPONSES["no reason or space"]], 1024)
    assert answer == [
        ("begin",),
        ("head", b"", [(b"content-length", b"2")]),
        ("body", b"ok"),
        ("complete", 200, "1.1", True, False),
    ]


def test_the_c_parser_is_built_and_current() -> None:
    # The edge runs on it; without it (no C compiler at install) the edge works, slower. CI must test the real thing.
    module = ROOT / "rhone_local" / ("_http1" + sysconfig.get_config_var("EXT_SUFFIX"))
    assert BUILT is not None and module.exists(), (
        "rhone_local._http1 is not built: run `uv pip install -e .` with a C compiler"
    )
    sources = [*ROOT.joinpath("native").rglob("*.c"), *ROOT.joinpath("native").rglob("*.h")]
    assert module.stat().st_mtime >= max(s.stat().st_mtime for s in sources), (
        "rhone_local._http1 is older than native/: reinstall (`uv pip install -e .`) to rebuild it"
    )
    assert http1.RequestParser is BUILT[0] and edge_relay.RequestParser is BUILT[0]


def test_the_relay_works_on_the_httptools_parsers_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # The relay's logic is one; only the parser class changes. One keep-alive exchange on the fallback, end to end of
    # the relay's callbacks (tests/local/test_edge_relay.py runs everything else on the parser the edge uses).
    monkeypatch.setattr(edge_relay, "RequestParser", http1.HttptoolsRequestParser)
    monkeypatch.setattr(edge_relay, "ResponseParser", http1.HttptoolsResponseParser)

    relay = edge_relay.Relay(lambda host, affinity=(): (200, [edge_relay.Target(40000)]))
    try:
        client, client_transport, upstream, upstream_transport = client_and_pooled_upstream(relay, 40000)
        assert isinstance(client.parser, http1.HttptoolsRequestParser)
        client.data_received(b"GET /x HTTP/1.1\r\nHost: a.localhost\r\nX-Forwarded-For: 6.6.6.6\r\nAccept: */*\r\n\r\n")
        assert upstream_transport.written[-1].startswith(b"GET /x HTTP/1.1\r\nhost: a.localhost\r\naccept: */*\r\n")
        assert b"6.6.6.6" not in upstream_transport.written[-1]
        upstream.data_received(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
        assert client_transport.written == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        assert relay.pool.idle[40000] == [upstream]
    finally:
        relay.loop.close()


def request_parser_class(implementation: str) -> Any:
    """The request parser of one implementation: "c" (skips the test when the extension is not built) or "httptools"."""
    if implementation == "httptools":
        return http1.HttptoolsRequestParser
    if BUILT is None:
        pytest.skip("rhone_local._http1 is not built")
    return BUILT[0]


@pytest.mark.parametrize("implementation", ["c", "httptools"])
def test_a_header_still_arriving_is_refused_before_it_grows_past_a_bound(implementation: str) -> None:
    # httptools hands a header over only when the next one starts: its wrapper bounds the bytes of reads that end
    # inside a head (RAW_HEAD_FACTOR × max_head); the C parser counts every piece as it arrives.
    parser_class = request_parser_class(implementation)
    recorder = Recorder("request")
    recorder.parser = parser = parser_class(recorder, 64 * 1024)
    fed = 0
    with pytest.raises(httptools.HttpParserError) as refused:
        parser.feed_data(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ")
        for _ in range(1024):  # 16 MiB, if nothing stopped it
            parser.feed_data(b"v" * 16384)
            fed += 16384
    assert isinstance(refused.value.__context__, TooLarge)
    assert fed <= http1.RAW_HEAD_FACTOR * 64 * 1024  # refused within the bound, not after the whole value
    assert recorder.calls == [("begin",)]
    with pytest.raises(httptools.HttpParserError):  # and it stays refused
        parser.feed_data(b"\r\n\r\n")


@pytest.mark.skipif(BUILT is None, reason="rhone_local._http1 is not built")
def test_the_c_parser_cannot_be_fed_from_its_own_callbacks() -> None:
    # llhttp keeps pointers into the bytes of the call in progress: a nested call would leave them dangling.
    assert BUILT is not None

    class Reentrant(Recorder):
        def on_head(self, first: bytes, headers: list[tuple[bytes, bytes]]) -> None:
            self.parser.feed_data(b"GET /again HTTP/1.1\r\n")

    class Reinitialising(Recorder):  # and a new protocol or limit mid-message would leave held calls to no one
        def on_message(self, first: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
            self.parser.__init__(Recorder("request"), 1024)

    for protocol in (Reentrant, Reinitialising):
        recorder = protocol("request")
        recorder.parser = parser = BUILT[0](recorder, 1024)
        with pytest.raises(httptools.HttpParserCallbackError) as refused:
            parser.feed_data(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        assert isinstance(refused.value.__context__, RuntimeError)
        assert "own callbacks" in str(refused.value.__context__)


@pytest.mark.parametrize(
    ("last", "c_outcome", "httptools_outcome"),
    [
        (b"y: a\x01b\r\n", TOO_LARGE, ("error", "HttpParserError", "Invalid header value char")),
        (b"y: a\r\n folded\r\n", TOO_LARGE, ("error", "HttpParserError", "Unexpected whitespace after header value")),
        # A malformed name stops both before the field counts.
        (b"y\x01: a\r\n", *[("error", "HttpParserError", "Invalid header token")] * 2),
    ],
)
def test_a_malformed_field_past_the_limit_is_refused_either_way(
    last: bytes, c_outcome: tuple, httptools_outcome: tuple
):
    # Where the field past the limit is itself malformed, the C parser (counting a field once its name ends) says
    # the head is too large and httptools (counting once a field is whole) that it is malformed: both refuse it.
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"x:\r\n" * (http1.MAX_FIELDS - 1) + last + b"\r\n"
    for implementation, outcome in (("httptools", httptools_outcome), ("c", c_outcome)):
        for parts in ([data], [data[:-5], data[-5:]]):
            calls = run(request_parser_class(implementation), "request", parts, 64 * 1024)
            assert calls == [("begin",), outcome], (implementation, parts, calls)


@pytest.mark.skipif(BUILT is None, reason="rhone_local._http1 is not built")
def test_one_large_header_does_not_pin_the_c_parsers_memory() -> None:
    # The C parser gathers each piece (URL, name, value) in a buffer that grows to fit; one 60 KiB value must not
    # keep 64 KiB per connection for the connection's life. (tracemalloc sees PyMem allocations.)
    assert BUILT is not None
    parser = BUILT[0](object(), 64 * 1024)  # no callbacks: nothing the head makes outlives it
    big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 60_000 + b"\r\n\r\n"
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        parser.feed_data(big)
        parser.feed_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # the next head, small
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 8 * 1024, kept
