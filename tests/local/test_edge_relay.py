"""The edge relay's HTTP handling against a scripted app server on loopback: framing, reuse, failures, tunnels.

The app here is a raw-socket server whose answers are written byte for byte (lengths, chunks, closes, cut answers,
101 tunnels), so each test pins one way a real app can answer and what the client then gets through the relay.
Routing is a plain function: `test_edge_routes.py` and the end-to-end tests cover the real route table.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httptools
import pytest

from rhone_local import edge_relay
from rhone_local.edge_relay import POSTPONE_BYTES, Limits, Relay, Target, plain_response
from rhone_local.http1 import MAX_FIELDS
from tests.e2e.helpers import wait_until

BIG = 3 * 1024 * 1024 + 17


def _read_head(conn: socket.socket, buffer: bytearray) -> bytes | None:
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    return head


def _same_origin(headers: list[tuple[str, str]]) -> bool:
    values = {k.lower(): v for k, v in headers}
    return values.get("origin", "").split("://", 1)[-1] == values.get("host")


@dataclass
class ScriptedApp:
    """An app server on a free port; each path answers in one particular way. Counts connections and requests."""

    sock: socket.socket
    connections: int = 0
    requests: list[dict] = field(default_factory=list)
    close_idle_after_first: bool = False
    dripped_closed: bool = False
    stalled_closed: bool = False
    closed_connections: int = 0
    hang_up_everything: bool = False

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        try:
            self._serve_connection(conn)
        finally:
            self.closed_connections += 1

    def _serve_connection(self, conn: socket.socket) -> None:
        buffer = bytearray()
        with conn:
            while True:
                try:
                    head = _read_head(conn, buffer)
                except OSError:
                    return
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
                length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                body, buffer[:] = bytes(buffer[:length]), buffer[length:]
                self.requests.append(
                    {"method": method, "target": target, "headers": headers, "body": body, "head": head}
                )
                if not self._answer(conn, method, target, headers, body, buffer):
                    return
                if self.close_idle_after_first:
                    return

    def _answer(self, conn, method, target, headers, body, buffer) -> bool:
        path = target.split("?")[0]
        if self.hang_up_everything:
            return False
        if path == "/echo":
            payload = json.dumps(
                {
                    "method": method,
                    "target": target,
                    "headers": [[k.lower(), v] for k, v in headers],
                    "body": body.decode(),
                }
            ).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-App: yes\r\n\r\n%s" % (len(payload), payload))
        elif path == "/head":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n" + (b"" if method == "HEAD" else b"x" * 1234)
            )
        elif path == "/chunked":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
            )
        elif path == "/close-delimited":
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            return False
        elif path == "/no-content":
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        elif path == "/big":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
            conn.sendall(b"b" * BIG)
        elif path == "/cut":  # small: the edge holds it until whole
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
            return False
        elif path == "/cut-large":  # larger than the edge holds: relayed as it comes
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nonly ten.." % (POSTPONE_BYTES + 1))
            return False
        elif path == "/drip":  # promises a long answer, sends a little, then waits for the edge to hang up
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nfirst bytes")
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                self.dripped_closed = conn.recv(1) == b""
            return False
        elif path == "/stall-small":  # a small answer's head and part of its body, then nothing until the edge goes
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                self.stalled_closed = conn.recv(1) == b""
            return False
        elif path == "/trickle-small":  # a small answer in pieces, each well within the edge's deadline, all beyond it
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n")
            for _ in range(15):
                time.sleep(0.1)
                conn.sendall(b"t")
        elif path == "/hang-up":
            return False
        elif path == "/huge-head":  # an answer head over the edge's 64 KiB, then a normal body
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 70_000 + b"\r\nContent-Length: 2\r\n\r\nok")
        elif path.startswith("/fields/"):  # an answer head of N fields in all (a few bytes each), then a body
            count = int(path.rsplit("/", 1)[1])
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + b"a: b\r\n" * (count - 1) + b"Content-Length: 2\r\n\r\nok")
        elif path == "/slow":
            time.sleep(1.5)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        elif path == "/hop-by-hop":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Private\r\n"
                b"Keep-Alive: timeout=5\r\nX-Private: secret\r\nX-Public: yes\r\n\r\nok"
            )
        elif path == "/origin-ws" and not _same_origin(headers):  # a framework's WebSocket origin check
            refusal = b"origin does not match host"
            conn.sendall(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\nX-App: yes\r\n\r\n%s" % (len(refusal), refusal)
            )
        elif path in ("/ws", "/origin-ws"):
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            data = bytes(buffer)
            while True:  # echo, upper-cased, until the peer goes
                if data:
                    conn.sendall(data.upper())
                data = conn.recv(65536)
                if not data:
                    return False
        else:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return True


@pytest.fixture
def app() -> Iterator[ScriptedApp]:
    sock = socket.create_server(("127.0.0.1", 0))
    scripted = ScriptedApp(sock)
    threading.Thread(target=scripted.serve, daemon=True).start()
    yield scripted
    sock.close()


@dataclass
class Edge:
    relay: Relay
    routes: dict[str, tuple[int, str | int]]

    @property
    def port(self) -> int:
        return self.relay.server.sockets[0].getsockname()[1]

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def raw(self, data: bytes, *, until_close: bool = True) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(data)
            chunks = []
            while until_close:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)


@pytest.fixture
def edge_with(app: ScriptedApp) -> Iterator[Callable[..., Edge]]:
    """Starts relays routing `web.localhost` to the scripted app, with the given `Limits`; stops them afterwards."""
    started: list[Relay] = []

    def start(**limits: float) -> Edge:
        routes: dict[str, tuple[int, str | int]] = {"web.localhost": (200, app.port)}

        def route(host: str, affinity: tuple[str, ...] = ()) -> tuple[int, str | list[Target]]:
            status, target = routes.get(host.split(":")[0], (404, f"no route for {host}"))
            return (200, [Target(int(target))]) if status == 200 else (status, str(target))

        relay = Relay(route, "127.0.0.1", 0, Limits(**limits))
        relay.start()
        started.append(relay)
        return Edge(relay, routes)

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture
def edge(edge_with: Callable[..., Edge]) -> Edge:
    return edge_with()


def get(conn: http.client.HTTPConnection, path: str, method: str = "GET", **kwargs) -> tuple[int, dict, bytes]:
    conn.request(method, path, headers={"Host": "web.localhost", **kwargs.pop("headers", {})}, **kwargs)
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


# -- routing outcomes -----------------------------------------------------------------------------------------------
def test_a_request_reaches_the_routed_app_with_forwarding_headers_and_its_body(edge: Edge, app: ScriptedApp) -> None:
    status, headers, body = get(edge.connection(), "/echo?x=1", "POST", body=b'{"a": 1}')
    seen = json.loads(body)
    assert status == 200 and headers["x-app"] == "yes"
    assert seen["method"] == "POST" and seen["target"] == "/echo?x=1" and seen["body"] == '{"a": 1}'
    sent = dict(seen["headers"])
    assert sent["host"] == "web.localhost"  # the client's Host, unchanged: no X-Forwarded-Host repeats it
    assert sent["x-forwarded-proto"] == "http" and sent["x-forwarded-for"] == "127.0.0.1"
    assert "x-forwarded-host" not in sent and "forwarded" not in sent
    assert sent["content-length"] == "8"


def test_the_app_gets_the_edges_forwarding_headers_never_the_clients(edge: Edge, app: ScriptedApp) -> None:
    forged = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("x-forwarded-for", "7.7.7.7, 8.8.8.8"),
        ("X-Forwarded-Host", "bank.example"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Prefix", "/admin"),
        ("Forwarded", "for=6.6.6.6;host=bank.example;proto=https"),
        ("X-Real-IP", "6.6.6.6"),
        # Spellings an app server reads as the same: WSGI/ASGI adapters map `_` and `-` to one variable.
        ("X_Forwarded_Host", "bank.example"),
        ("x_forwarded_for", "6.6.6.6"),
        ("X-Forwarded_Proto", "https"),
        ("X_Real_IP", "6.6.6.6"),
        ("forwarded_", "for=6.6.6.6"),  # not a forwarding name, even read with `-`: it arrives
    ]
    head = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in forged)
    answer = edge.raw(
        b"GET /echo HTTP/1.1\r\nHost: web.localhost\r\n" + head + b"X-Kept: yes\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200")
    sent = [(k.lower(), v) for k, v in app.requests[-1]["headers"]]
    spelled = [(k.replace("_", "-"), v) for k, v in sent]
    forwarding = [(k, v) for k, v in spelled if k.startswith("x-forwarded-") or k in ("forwarded", "x-real-ip")]
    assert sorted(forwarding) == [("x-forwarded-for", "127.0.0.1"), ("x-forwarded-proto", "http")]
    assert ("forwarded_", "for=6.6.6.6") in sent
    assert ("host", "web.localhost") in sent  # the Host the edge routed by, not the forged X-Forwarded-Host
    assert ("x-kept", "yes") in sent  # every other header still arrives


def test_forwarding_headers_carry_the_clients_bare_address() -> None:
    forwarding = edge_relay.forwarding_headers
    assert forwarding(("::1", 5000, 0, 0)) == b"x-forwarded-for: ::1\r\nx-forwarded-proto: http\r\n\r\n"
    assert forwarding(("10.0.0.2", 5000)) == b"x-forwarded-for: 10.0.0.2\r\nx-forwarded-proto: http\r\n\r\n"
    assert forwarding(None) == b"x-forwarded-for: unknown\r\nx-forwarded-proto: http\r\n\r\n"


def test_a_route_refusal_is_answered_by_the_edge_and_the_app_sees_nothing(edge: Edge, app: ScriptedApp) -> None:
    edge.routes["down.localhost"] = (503, "route down--production has no ready allocation")
    conn = edge.connection()
    assert get(conn, "/echo", headers={"Host": "nowhere.localhost"})[0] == 404
    status, _, body = get(conn, "/echo", headers={"Host": "down.localhost"})
    assert status == 503 and b"has no ready allocation" in body
    assert get(conn, "/echo")[0] == 200  # the same client connection is still usable
    assert len(app.requests) == 1


def test_a_refused_connection_is_503_never_another_app(edge: Edge, app: ScriptedApp) -> None:
    dead = socket.create_server(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    edge.routes["web.localhost"] = (200, dead_port)
    status, _, body = get(edge.connection(), "/echo")
    assert status == 503 and body == b"503 the allocation is not answering\n"
    assert app.requests == []


# -- connection reuse -----------------------------------------------------------------------------------------------
def test_upstream_connections_are_reused_across_requests_and_clients(edge: Edge, app: ScriptedApp) -> None:
    for _ in range(3):
        conn = edge.connection()
        for _ in range(10):
            assert get(conn, "/echo")[0] == 200
        conn.close()
    assert len(app.requests) == 30 and app.connections == 1


def test_an_idle_connection_the_app_closed_is_retried_once_on_a_fresh_one(edge: Edge, app: ScriptedApp) -> None:
    app.close_idle_after_first = True  # the app closes every connection after one answer
    conn = edge.connection()
    for _ in range(5):
        assert get(conn, "/echo")[0] == 200
    assert len(app.requests) == 5 and app.connections == 5


def test_an_app_that_hangs_up_without_answering_is_502(edge: Edge, app: ScriptedApp) -> None:
    status, _, body = get(edge.connection(), "/hang-up")
    assert status == 502 and b"without answering" in body
    assert len(app.requests) == 1  # a fresh connection is not retried: the app saw the request


# -- framing --------------------------------------------------------------------------------------------------------
def test_chunked_and_close_delimited_answers_reach_the_client_whole(edge: Edge) -> None:
    conn = edge.connection()
    status, headers, body = get(conn, "/chunked")
    assert (status, body, headers["transfer-encoding"]) == (200, b"hello, world", "chunked")
    status, headers, body = get(conn, "/close-delimited")
    assert (status, body, headers["transfer-encoding"]) == (200, b"until the end", "chunked")
    assert get(conn, "/echo")[0] == 200  # re-framed as chunks, so the client connection stays open


def test_an_http10_client_gets_a_close_delimited_answer(edge: Edge) -> None:
    answer = edge.raw(b"GET /chunked HTTP/1.0\r\nHost: web.localhost\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
    assert b"transfer-encoding" not in head.lower() and body == b"hello, world"


def test_a_repeated_answer_head_is_reused_only_for_a_request_framed_alike(edge: Edge, app: ScriptedApp) -> None:
    # The edge reuses the head it wrote for the previous answer on an upstream connection when the app's answer and
    # the request's framing inputs are the same (rhone_local/edge_relay.py, Exchange.response_head). Interleave an
    # HTTP/1.0 client and HTTP/1.1 ones on the one pooled upstream connection: each still gets its own framing.
    eleven = b"GET /chunked HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n"
    ten = b"GET /chunked HTTP/1.0\r\nHost: web.localhost\r\n\r\n"
    first, second = edge.raw(eleven), edge.raw(eleven)
    assert first == second  # the same answer, byte for byte, whichever way its head was made
    assert b"transfer-encoding: chunked" in first.lower() and first.endswith(b"0\r\n\r\n")
    answer = edge.raw(ten)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower() and body == b"hello, world"
    assert edge.raw(eleven) == first
    conn = edge.connection()  # kept alive: no `connection: close` in its heads
    status, headers, body = get(conn, "/chunked")
    assert (status, headers.get("connection"), body) == (200, None, b"hello, world")
    status, headers, body = get(conn, "/head", "HEAD")
    assert (status, headers["content-length"], body) == (200, "1234", b"")
    assert get(conn, "/head")[2] == b"x" * 1234  # the same app head as the HEAD's, framed with its body this time
    assert app.connections == 2  # one pooled connection, and a new one after the HEAD (never reused)


def test_head_and_204_answers_have_no_body(edge: Edge) -> None:
    conn = edge.connection()
    status, headers, body = get(conn, "/head", "HEAD")
    assert (status, headers["content-length"], body) == (200, "1234", b"")
    status, _, body = get(conn, "/no-content")
    assert (status, body) == (204, b"")
    assert get(conn, "/head")[2] == b"x" * 1234


def test_a_large_answer_streams_through_whole(edge: Edge) -> None:
    status, headers, body = get(edge.connection(), "/big")
    assert status == 200 and int(headers["content-length"]) == BIG and body == b"b" * BIG


def test_an_answer_cut_short_is_cut_for_the_client_too(edge: Edge) -> None:
    conn = edge.connection()
    conn.request("GET", "/cut-large", headers={"Host": "web.localhost"})
    response = conn.getresponse()
    assert response.status == 200  # relayed as it came
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert cut.value.partial == b"only ten.."
    # A small answer is held until whole, so the client has seen nothing of it when the app cuts it: a clean 502.
    status, headers, body = get(edge.connection(), "/cut")
    assert status == 502 and headers["connection"] == "close"
    assert body == b"502 the app closed the connection before its answer was whole\n"


def test_hop_by_hop_headers_do_not_cross(edge: Edge) -> None:
    _, headers, _ = get(edge.connection(), "/hop-by-hop", headers={"Connection": "X-Mine", "X-Mine": "1"})
    assert "x-private" not in headers and "keep-alive" not in headers and headers["x-public"] == "yes"


def test_request_hop_by_hop_headers_do_not_reach_the_app(edge: Edge, app: ScriptedApp) -> None:
    get(edge.connection(), "/echo", headers={"Connection": "keep-alive, X-Mine", "X-Mine": "1", "TE": "trailers"})
    sent = dict(app.requests[-1]["headers"])
    assert not {"X-Mine", "TE", "Connection"} & set(sent)


def test_pipelined_requests_are_answered_in_order(edge: Edge) -> None:
    requests = b"".join(
        b"GET /echo?n=%d HTTP/1.1\r\nHost: web.localhost\r\n%s\r\n" % (n, b"Connection: close\r\n" if n == 4 else b"")
        for n in range(5)
    )
    answer = edge.raw(requests)
    order = [int(chunk.split(b'"target": "/echo?n=', 1)[1][:1]) for chunk in answer.split(b"HTTP/1.1 200 OK")[1:]]
    assert order == [0, 1, 2, 3, 4]


def test_expect_100_continue_is_answered_by_the_edge(edge: Edge, app: ScriptedApp) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        answer = b""
        while b"}" not in answer:
            answer += sock.recv(65536)
    assert b"HTTP/1.1 200 OK" in answer and app.requests[-1]["body"] == b"hello"
    assert "Expect" not in dict(app.requests[-1]["headers"])


# -- bad input ------------------------------------------------------------------------------------------------------
def test_a_malformed_request_is_400_and_the_app_sees_nothing(edge: Edge, app: ScriptedApp) -> None:
    answer = edge.raw(b"GET / HTTP/1.1\r\nHost web.localhost\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"connection: close" in answer
    assert app.requests == []


def test_a_body_over_the_limit_is_413_and_the_app_sees_nothing(
    edge: Edge, app: ScriptedApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_relay, "MAX_REQUEST_BODY", 1000)
    answer = edge.raw(b"POST /echo HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000)
    assert answer.startswith(b"HTTP/1.1 413") and app.requests == []


def test_an_oversized_head_is_431(edge: Edge, app: ScriptedApp) -> None:
    answer = edge.raw(b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Big: " + b"y" * 70_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431") and app.requests == []


def test_a_head_of_too_many_fields_is_431_however_small(edge: Edge, app: ScriptedApp) -> None:
    # 257 fields, 255 of them empty: 1.3 KiB on the wire, far under the byte limit. The field count refuses them.
    head = b"GET /echo HTTP/1.1\r\nHost: web.localhost\r\n"
    answer = edge.raw(head + b"a:\r\n" * (MAX_FIELDS - 1) + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431") and b"256 fields" in answer and app.requests == []
    answer = edge.raw(head + b"a:\r\n" * (MAX_FIELDS - 2) + b"Connection: close\r\n\r\n")  # 256 in all
    assert answer.startswith(b"HTTP/1.1 200") and len(app.requests) == 1


def test_an_app_answer_head_over_64_kib_is_502_and_its_connection_is_not_reused(edge: Edge, app: ScriptedApp) -> None:
    conn = edge.connection()
    status, _, body = get(conn, "/huge-head")
    assert status == 502 and body == b"502 the app's answer head is larger than 64 KiB or has more than 256 fields\n"
    assert get(edge.connection(), "/echo")[0] == 200
    assert app.connections == 2  # the connection that carried the huge head was closed, never pooled


def test_an_app_answer_of_too_many_fields_is_502_and_its_connection_is_not_reused(edge: Edge, app: ScriptedApp) -> None:
    whole = edge.raw(b"GET /fields/%d HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n" % MAX_FIELDS)
    assert whole.startswith(b"HTTP/1.1 200") and whole.endswith(b"\r\n\r\nok")
    assert whole.count(b"\r\na: b") == MAX_FIELDS - 1  # every field relayed
    assert app.connections == 1
    status, _, body = get(edge.connection(), f"/fields/{MAX_FIELDS + 1}")
    assert status == 502 and body.endswith(b"more than 256 fields\n")
    assert get(edge.connection(), "/echo")[0] == 200
    assert app.connections == 2  # the refused answer's connection was closed, never pooled


def test_a_chunked_request_reaches_the_app_whole_and_its_trailer_fields_do_not(edge: Edge, app: ScriptedApp) -> None:
    answer = edge.raw(
        b"POST /echo HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n"
        b"X-Trailer: sneaked\r\nX-Forwarded-For: 6.6.6.6\r\nHost: other.localhost\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200")
    (request,) = app.requests
    names = [name.lower() for name, _ in request["headers"]]
    assert request["body"] == b"hello world" and ("content-length", "11") in [
        (n.lower(), v) for n, v in request["headers"]
    ]
    assert "x-trailer" not in names and "transfer-encoding" not in names and b"6.6.6.6" not in request["head"]
    assert (
        names.count("host") == 1 and b"other.localhost" not in request["head"]
    )  # (trailer fields used to be taken for headers)


def test_an_app_slower_than_the_head_timeout_is_504(
    edge: Edge, app: ScriptedApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_relay, "UPSTREAM_HEAD_TIMEOUT", 0.3)
    status, headers, body = get(edge.connection(), "/slow")
    assert status == 504 and headers["connection"] == "close" and b"did not answer in time" in body


def test_a_small_answer_the_app_stalls_in_is_504_and_none_of_it_reaches_the_client(
    edge: Edge, app: ScriptedApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The edge holds an answer of at most POSTPONE_BYTES until it is whole, so the client has seen nothing of one the
    # app stops sending: it gets a clean 504 at the answer's deadline rather than waiting for ever, and the app's
    # connection is closed.
    monkeypatch.setattr(edge_relay, "UPSTREAM_HEAD_TIMEOUT", 0.3)
    answer = edge.raw(b"GET /stall-small HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 504 ") and b"\r\nconnection: close" in head.lower()
    assert body == b"504 the app did not answer in time\n"
    assert b"only ten" not in answer and b"content-length: 100" not in answer.lower()
    assert wait_until(lambda: app.stalled_closed, timeout=30)
    assert get(edge.connection(), "/echo")[0] == 200


def test_a_small_answer_that_keeps_coming_is_not_cut(
    edge: Edge, app: ScriptedApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deadline of a held answer runs from its last bytes (per read, as nginx's proxy_read_timeout), not from the
    # request: an app sending a small answer slowly but steadily is not cut, though the whole takes longer.
    monkeypatch.setattr(edge_relay, "UPSTREAM_HEAD_TIMEOUT", 1.0)
    status, _, body = get(edge.connection(), "/trickle-small")
    assert status == 200 and body == b"t" * 15


# -- tunnels and shutdown -------------------------------------------------------------------------------------------
def test_an_upgrade_becomes_a_byte_tunnel(edge: Edge, app: ScriptedApp) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly"
        )
        received = b""
        while b"EARLY" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 101")
        sock.sendall(b"ping")
        assert sock.recv(100) == b"PING"
    sent = [(k.lower(), v.lower()) for k, v in app.requests[-1]["headers"]]
    assert sent.count(("upgrade", "websocket")) == 1 and sent.count(("connection", "upgrade")) == 1


def test_a_client_gone_mid_answer_does_not_leave_the_connection_pooled(edge: Edge, app: ScriptedApp) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET /drip HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        assert b"first bytes" in sock.recv(1000)
    assert wait_until(lambda: app.dripped_closed, timeout=30)  # the edge hung up on the app too
    assert not any(edge.relay.pool.idle.values())
    assert get(edge.connection(), "/echo")[0] == 200
    assert app.connections == 2


def test_stop_closes_the_listener(app: ScriptedApp) -> None:
    relay = Relay(lambda host, affinity=(): (200, [Target(app.port)]), "127.0.0.1", 0)
    relay.start()
    port = relay.server.sockets[0].getsockname()[1]
    relay.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_a_taken_port_fails_at_start() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        relay = Relay(lambda host, affinity=(): (404, "none"), "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError):
            relay.start()


def test_a_refusing_target_gives_way_to_the_next_whose_cookie_the_answer_carries(app: ScriptedApp) -> None:
    dead = socket.create_server(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    seen: list[tuple[str, ...]] = []

    def route(host: str, affinity: tuple[str, ...] = ()) -> tuple[int, list[Target]]:
        seen.append(affinity)
        return 200, [
            Target(dead_port, b"rhone_affinity=dead; Path=/"),
            Target(app.port, b"rhone_affinity=live; Path=/"),
        ]

    relay = Relay(route, "127.0.0.1", 0)
    relay.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", relay.server.sockets[0].getsockname()[1], timeout=10)
        status, headers, _ = get(conn, "/echo", headers={"Cookie": "theme=dark; rhone_affinity=old.sig"})
        assert status == 200 and headers["set-cookie"] == "rhone_affinity=live; Path=/"
        assert seen == [("old.sig",)] and len(app.requests) == 1
        assert dict(app.requests[0]["headers"])["cookie"] == "theme=dark"  # the edge's cookie stays at the edge
    finally:
        relay.stop()


# -- what must never happen: replays and smuggling ------------------------------------------------------------------
def test_a_post_the_app_dropped_is_never_sent_again(edge: Edge, app: ScriptedApp) -> None:
    conn = edge.connection()
    assert get(conn, "/echo")[0] == 200  # leaves a pooled connection, just used
    status, _, body = get(conn, "/hang-up", "POST", body=b"pay 10")
    assert status == 502 and b"without answering" in body
    assert [r["target"] for r in app.requests].count("/hang-up") == 1


def test_a_post_skips_connections_idle_too_long_and_a_get_is_retried_once(
    edge: Edge, app: ScriptedApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(edge_relay, "FRESH_ENOUGH_SECONDS", -1.0)  # every idle connection is too old
    conn = edge.connection()
    assert get(conn, "/echo")[0] == 200
    assert get(conn, "/echo", "POST", body=b"x")[0] == 200
    assert app.connections == 2  # the POST did not take the idle connection
    app.close_idle_after_first = True
    for _ in range(3):
        assert get(conn, "/echo")[0] == 200  # a GET on a connection the app closed is retried on a new one
    assert [r["method"] for r in app.requests].count("GET") == 4


def test_an_upgrade_request_with_a_body_is_refused(edge: Edge, app: ScriptedApp) -> None:
    hidden = b"GET /smuggled HTTP/1.1\r\nX-Ignore: "
    answer = edge.raw(
        b"POST /echo HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(hidden), hidden)
    )
    assert answer.startswith(b"HTTP/1.1 400") and app.requests == []


def test_a_refused_upgrade_never_returns_its_connection_to_the_pool(edge: Edge, app: ScriptedApp) -> None:
    answer = edge.raw(b"GET /echo HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")  # the app answered normally instead of switching
    assert not any(edge.relay.pool.idle.values())
    assert get(edge.connection(), "/echo", headers={"Cookie": "session=victim"})[0] == 200
    assert app.connections == 2 and app.requests[-1]["target"] == "/echo"


def test_an_http10_keep_alive_client_is_told_the_connection_stays(edge: Edge) -> None:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(b"GET /head HTTP/1.0\r\nHost: web.localhost\r\nConnection: keep-alive\r\n\r\n")
            data = b""
            while not data.endswith(b"x" * 1234):
                data += sock.recv(65536)
            assert b"connection: keep-alive" in data.lower()


# -- what one client may hold: deadlines and the connection cap -----------------------------------------------------
def _until_closed(sock: socket.socket) -> bytes:
    """Everything the edge sends until it closes the connection (the socket's timeout fails a test that hangs)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_an_incomplete_head_is_408_at_the_head_deadline(edge_with, app: ScriptedApp) -> None:
    edge = edge_with(head_timeout=1.0)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: web.localhost\r\n")  # the blank line never comes
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer
    assert answer.endswith(b"408 the request did not arrive in time\n")
    assert app.requests == [] and wait_until(lambda: not edge.relay.clients)


def test_a_head_trickled_one_byte_at_a_time_is_cut_at_the_same_deadline(edge_with, app: ScriptedApp) -> None:
    """The deadline is for the whole head: each byte arrives well within it, the head as a whole does not."""
    edge = edge_with(head_timeout=0.5)
    head = b"GET /echo HTTP/1.1\r\nHost: web.localhost\r\n" + b"X-Pad: " + b"p" * 200 + b"\r\n\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        for byte in head:
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                break
            sock.sendall(bytes([byte]))
            sent += 1
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert sent < len(head)  # cut before the trickle ended (it would take ~5 s; the deadline is 0.5 s)
    assert app.requests == []


def test_a_body_that_does_not_arrive_whole_in_time_is_408(edge_with, app: ScriptedApp) -> None:
    edge = edge_with(body_timeout=0.3)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 10\r\n\r\nabc")
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408") and app.requests == []


def test_idle_connections_are_closed_without_an_answer(edge_with, app: ScriptedApp) -> None:
    edge = edge_with(head_timeout=1.0, keepalive_timeout=0.5)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as silent:
        assert _until_closed(silent) == b""  # said nothing: nothing is owed, the connection just ends
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as kept:
        kept.sendall(b"GET /head HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        answer = _until_closed(kept)  # the answer, then the keep-alive deadline ends the connection
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"x" * 1234) and answer.count(b"HTTP/1.1") == 1
    assert [r["target"] for r in app.requests] == ["/head"]


def test_a_slow_app_is_not_cut_by_the_client_deadlines(edge_with, app: ScriptedApp) -> None:
    # Deadlines well under the app's 1.5 s, yet long enough that a loaded machine sends the head in time.
    edge = edge_with(head_timeout=0.8, body_timeout=0.8, keepalive_timeout=10)
    conn = edge.connection()
    assert get(conn, "/slow")[2] == b"late"  # 1.5 s for the app: the edge owes an answer, no client deadline runs
    assert get(conn, "/echo", "POST", body=b"x")[0] == 200


def test_a_client_that_stops_reading_an_answer_is_cut_after_the_send_timeout(edge_with, app: ScriptedApp) -> None:
    edge = edge_with(send_timeout=0.3)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", edge.port))
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        assert wait_until(lambda: app.requests)  # the answer is under way ...
        assert wait_until(lambda: not edge.relay.clients, timeout=60)  # ... and the edge gave up on this client
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += len(chunk)
    assert received < BIG


def test_an_idle_tunnel_is_closed_after_its_idle_timeout_and_a_busy_one_is_not(edge_with, app: ScriptedApp) -> None:
    edge = edge_with(tunnel_idle_timeout=1.0)
    upgrade = b"GET /ws HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as idle:
        idle.sendall(upgrade)
        assert idle.recv(65536).startswith(b"HTTP/1.1 101")
        assert _until_closed(idle) == b""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as busy:
        busy.sendall(upgrade)
        assert busy.recv(65536).startswith(b"HTTP/1.1 101")
        for n in range(25):  # traffic every 0.1 s for 2.5 idle timeouts: never idle for one
            busy.sendall(b"m%d" % n)
            assert busy.recv(100) == b"M%d" % n
            time.sleep(0.1)
    assert edge_relay.Limits().tunnel_idle_timeout >= 3600  # the default tolerates an hour without traffic


def test_connections_past_the_cap_are_refused_with_503_and_logged_once(
    edge_with, app: ScriptedApp, caplog: pytest.LogCaptureFixture
) -> None:
    edge = edge_with(max_clients=4, head_timeout=120)  # the held connections stay for the whole test
    held = [socket.create_connection(("127.0.0.1", edge.port), timeout=10) for _ in range(4)]
    assert wait_until(lambda: len(edge.relay.clients) == 4)
    with caplog.at_level("WARNING", logger="rhone_local.edge"):
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as extra:
                answer = _until_closed(extra)
            assert answer.startswith(b"HTTP/1.1 503") and b"connection: close" in answer
            assert answer.endswith(b"503 the edge is at its connection limit; retry later\n")
        assert wait_until(lambda: caplog.records)
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]  # one line for the burst, not ten
    assert "cap of 4" in record.getMessage()
    assert int(record.getMessage().split("refused ")[1].split()[0]) + edge.relay.refused == 10
    assert app.requests == [] and len(edge.relay.clients) == 4
    # The held connections are served, and once one goes a new client is accepted.
    held[0].sendall(b"GET /echo HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n")
    assert _until_closed(held[0]).startswith(b"HTTP/1.1 200")
    assert wait_until(lambda: len(edge.relay.clients) == 3)
    assert get(edge.connection(), "/echo")[0] == 200
    for sock in held:
        sock.close()


def test_the_cap_keeps_a_reserve_of_descriptors_for_the_rest_of_the_process() -> None:
    assert edge_relay.client_cap(256) == (256 - 128 - edge_relay.LINGERING_REFUSALS) // 2
    assert edge_relay.client_cap(20_000) == (20_000 - 512 - edge_relay.LINGERING_REFUSALS) // 2
    assert edge_relay.client_cap(-1) == edge_relay.client_cap(1 << 20)  # RLIM_INFINITY
    for limit in (8, 64, 256, 1024, 4096, 1 << 20):
        cap = edge_relay.client_cap(limit)
        assert cap >= 1 and 2 * cap + edge_relay.LINGERING_REFUSALS <= max(limit, 2 + edge_relay.LINGERING_REFUSALS)


# -- HTTP conformance: which host the app is asked about -------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_head", "reason"),
    [
        (b"GET /echo HTTP/1.1\r\n\r\n", b"needs a Host header"),
        (b"GET /echo HTTP/1.1\r\nHost: web.localhost\r\nHost: web.localhost\r\n\r\n", b"one Host header"),
        (b"GET /echo HTTP/1.1\r\nHost: web.localhost\r\nhost: other.localhost\r\n\r\n", b"one Host header"),
        (b'GET /echo HTTP/1.1\r\nHost: "web.localhost"\r\n\r\n', b"not a host name"),
        (b"GET /echo HTTP/1.1\r\nHost: web.localhost/admin\r\n\r\n", b"not a host name"),
        (b"GET http://other.localhost/echo HTTP/1.1\r\nHost: web.localhost\r\n\r\n", b"another host"),
        (b"GET http://web.localhost:1/echo HTTP/1.1\r\nHost: web.localhost\r\n\r\n", b"another host"),
        (b"GET http://user@web.localhost/echo HTTP/1.1\r\nHost: web.localhost\r\n\r\n", b"another host"),
        (b"GET https://web.localhost/echo HTTP/1.1\r\nHost: web.localhost\r\n\r\n", b"not a forward proxy"),
        (b"CONNECT web.localhost:443 HTTP/1.1\r\nHost: web.localhost:443\r\n\r\n", b"not a forward proxy"),
        (b"GET * HTTP/1.1\r\nHost: web.localhost\r\n\r\n", b"not a forward proxy"),
    ],
)
def test_a_request_without_one_clear_host_is_400_and_the_app_sees_nothing(
    edge: Edge, app: ScriptedApp, request_head: bytes, reason: bytes
) -> None:
    edge.routes["other.localhost"] = (200, app.port)
    answer = edge.raw(request_head)
    assert answer.startswith(b"HTTP/1.1 400") and reason in answer and b"connection: close" in answer
    assert app.requests == [] and app.connections == 0


def test_an_http10_request_without_host_is_routed_nowhere(edge: Edge, app: ScriptedApp) -> None:
    assert edge.raw(b"GET /echo HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert app.requests == []


def test_an_absolute_form_target_naming_the_host_reaches_the_app_in_origin_form(edge: Edge, app: ScriptedApp) -> None:
    for target in (b"http://WEB.localhost/echo?x=1", b"http://web.localhost?y", b"*"):
        method = b"OPTIONS" if target == b"*" else b"GET"
        edge.raw(b"%s %s HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n" % (method, target))
    assert [r["target"] for r in app.requests] == ["/echo?x=1", "/?y", "*"]
    assert (
        json.loads(
            edge.raw(b"GET http://web.localhost/echo HTTP/1.0\r\nHost: web.localhost\r\n\r\n").split(b"\r\n\r\n", 1)[1]
        )["target"]
        == "/echo"
    )


def test_bytes_after_an_upgrade_the_app_refused_never_reach_it_as_a_request(edge: Edge, app: ScriptedApp) -> None:
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: web.localhost\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    answer = edge.raw(
        b"GET /echo HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + smuggled
    )
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1 ") == 1  # one answer, then the close
    assert [r["target"] for r in app.requests] == ["/echo"]
    assert wait_until(lambda: app.connections == 1) and not any(edge.relay.pool.idle.values())


def test_an_upgrade_keeps_origin_and_websocket_headers_byte_exact(edge: Edge, app: ScriptedApp) -> None:
    sent_headers = [
        ("Origin", "http://web.localhost:8471"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
    ]
    head = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in sent_headers)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: web.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + head + b"\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 101")
    received = app.requests[-1]["headers"]
    for name, value in sent_headers:  # names travel lower-cased (they are case-insensitive); values as sent
        assert received.count((name.lower(), value)) == 1, name


# -- the client's Host reaches the app ------------------------------------------------------------------------------
def test_the_app_sees_the_clients_host_so_its_websocket_origin_check_passes(edge: Edge, app: ScriptedApp) -> None:
    def upgrade(origin: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
            sock.sendall(
                b"GET /origin-ws HTTP/1.1\r\nHost: web.localhost:8471\r\nOrigin: %s\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" % origin
            )
            answer = sock.recv(65536)
            if answer.startswith(b"HTTP/1.1 101"):
                sock.sendall(b"frame")
                answer += sock.recv(100)
            return answer

    switched = upgrade(b"http://web.localhost:8471")
    assert switched.startswith(b"HTTP/1.1 101") and switched.endswith(b"FRAME")
    assert dict(app.requests[-1]["headers"])["host"] == "web.localhost:8471"
    # A mismatched Origin: the app decides, and its own refusal reaches the client unchanged.
    refused = upgrade(b"http://evil.example")
    assert refused.startswith(b"HTTP/1.1 403 Forbidden\r\n") and refused.endswith(b"\r\n\r\norigin does not match host")
    assert b"content-length: 26" in refused.lower() and b"x-app: yes" in refused.lower()
    assert dict(app.requests[-1]["headers"])["origin"] == "http://evil.example"  # the edge never rewrites Origin


# -- affinity cookie, open connections, rotation --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cookies", "app_sees", "affinity"),
    [
        (["a=1; rhone_affinity=x.y; b=2"], ["a=1; b=2"], ("x.y",)),
        (["rhone_affinity=x.y"], [], ("x.y",)),
        (["rhone_affinity=x.y;a=1"], ["a=1"], ("x.y",)),
        (["a=1;rhone_affinity=x.y"], ["a=1"], ("x.y",)),
        (["a=1; rhone_affinity=p.q; rhone_affinity=x.y"], ["a=1"], ("p.q", "x.y")),
        (["xrhone_affinity=1;  rhone_affinity_2=2"], ["xrhone_affinity=1;  rhone_affinity_2=2"], ()),
        (["a=1", "rhone_affinity=x.y;  b=2"], ["a=1", "b=2"], ("x.y",)),
        (["session=eyJ1Ijo.ZQ; Path"], ["session=eyJ1Ijo.ZQ; Path"], ()),
    ],
)
def test_the_affinity_cookie_stays_at_the_edge_and_the_rest_of_the_cookie_header_is_byte_exact(
    app: ScriptedApp, cookies: list[str], app_sees: list[str], affinity: tuple[str, ...]
) -> None:
    seen: list[tuple[str, ...]] = []

    def route(host: str, values: tuple[str, ...] = ()) -> tuple[int, list[Target]]:
        seen.append(values)
        return 200, [Target(app.port)]

    relay = Relay(route, "127.0.0.1", 0)
    relay.start()
    try:
        head = b"".join(b"Cookie: %s\r\n" % c.encode() for c in cookies)
        with socket.create_connection(("127.0.0.1", relay.server.sockets[0].getsockname()[1]), timeout=10) as sock:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: web.localhost\r\n" + head + b"Connection: close\r\n\r\n")
            assert _until_closed(sock).startswith(b"HTTP/1.1 200")
    finally:
        relay.stop()
    assert [v for k, v in app.requests[-1]["headers"] if k == "cookie"] == app_sees
    assert seen == [affinity]


def _dying_first(app: ScriptedApp, **dying_behaviour: bool) -> tuple[ScriptedApp, Relay, http.client.HTTPConnection]:
    """A relay whose every request has two targets: a second scripted app (the one that dies), then `app`."""
    dying = ScriptedApp(socket.create_server(("127.0.0.1", 0)), **dying_behaviour)
    threading.Thread(target=dying.serve, daemon=True).start()
    targets = [Target(dying.port, b"rhone_affinity=dying"), Target(app.port, b"rhone_affinity=live")]
    relay = Relay(lambda host, affinity=(): (200, targets), "127.0.0.1", 0)
    relay.start()
    return dying, relay, http.client.HTTPConnection("127.0.0.1", relay.server.sockets[0].getsockname()[1], timeout=10)


def test_an_allocation_that_died_with_a_pooled_connection_gives_way_to_the_next_target(app: ScriptedApp) -> None:
    dying, relay, conn = _dying_first(app)
    try:
        assert get(conn, "/echo")[1]["set-cookie"] == "rhone_affinity=dying"  # leaves a pooled connection to it
        dying.hang_up_everything = True  # it dies: the pooled connection is cut on use, new ones are refused
        dying.sock.shutdown(socket.SHUT_RDWR)  # (a plain close would wait for the thread blocked in accept)
        dying.sock.close()
        status, headers, _ = get(conn, "/echo")
        assert status == 200 and headers["set-cookie"] == "rhone_affinity=live"
        assert len(dying.requests) == 2 and len(app.requests) == 1
    finally:
        relay.stop()


def test_open_connections_count_requests_answers_and_tunnels_never_idle_ones(edge: Edge, app: ScriptedApp) -> None:
    relay, port = edge.relay, app.port
    assert get(edge.connection(), "/echo")[0] == 200
    assert relay.pool.idle[port] and relay.open_connections(port) == 0  # pooled and idle: not open

    slow = threading.Thread(target=get, args=(edge.connection(), "/slow"))
    slow.start()
    assert wait_until(lambda: relay.open_connections(port) == 1)  # waiting for the app's answer
    slow.join()
    assert wait_until(lambda: relay.open_connections(port) == 0)

    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as streaming:
        streaming.sendall(b"GET /drip HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        assert b"first bytes" in streaming.recv(1000)
        assert relay.open_connections(port) == 1  # an answer still streaming
        with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as tunnel:
            tunnel.sendall(b"GET /ws HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
            assert tunnel.recv(1000).startswith(b"HTTP/1.1 101")
            assert wait_until(lambda: relay.open_connections(port) == 2)
        assert wait_until(lambda: relay.open_connections(port) == 1)
    assert wait_until(lambda: relay.open_connections(port) == 0)
    assert relay.open_connections(port + 1) == 0


def test_an_allocation_out_of_rotation_loses_its_idle_connections_and_gets_no_new_ones(
    edge: Edge, app: ScriptedApp
) -> None:
    relay, port = edge.relay, app.port
    conn = edge.connection()
    assert get(conn, "/echo")[0] == 200
    relay.update_rotation(frozenset({port}))
    assert get(conn, "/echo")[0] == 200
    assert app.connections == 1 and len(relay.pool.idle[port]) == 1  # in rotation: kept and reused

    slow = threading.Thread(target=get, args=(edge.connection(), "/slow"))
    slow.start()
    assert wait_until(lambda: relay.open_connections(port) == 1)  # (on the pooled connection)
    assert get(edge.connection(), "/echo")[0] == 200  # a second connection, idle in the pool after this answer
    assert app.connections == 2 and len(relay.pool.idle[port]) == 1
    relay.update_rotation(frozenset({port + 1}))  # the allocation leaves rotation while an answer is under way
    assert wait_until(lambda: app.closed_connections == 1)  # its idle connection is closed at once ...
    slow.join()
    assert wait_until(lambda: app.closed_connections == 2)  # ... and the busy one after its answer, not pooled
    assert not relay.pool.idle.get(port) and relay.open_connections(port) == 0


def test_a_get_whose_new_connection_closes_unanswered_goes_to_the_next_target_and_a_post_never_does(
    app: ScriptedApp,
) -> None:
    dying, relay, conn = _dying_first(app, hang_up_everything=True)  # it accepts, then hangs up unanswered
    try:
        status, headers, _ = get(conn, "/echo")
        assert status == 200 and headers["set-cookie"] == "rhone_affinity=live"  # the client moved, and knows it
        assert [r["method"] for r in dying.requests] == ["GET"] and len(app.requests) == 1
        status, _, body = get(conn, "/echo", "POST", body=b"pay 10")
        assert status == 502 and b"without answering" in body  # it may have been seen: never sent again
        assert [r["method"] for r in dying.requests] == ["GET", "POST"] and len(app.requests) == 1
    finally:
        relay.stop()
        dying.sock.close()


# -- the request path: what it reuses, what it costs ----------------------------------------------------------------
FORWARDING = b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http"


def _exchange(sock: socket.socket, request: bytes, buffer: bytearray) -> bytes:
    """Send one request on `sock` and read its answer (Content-Length framed, as /echo answers)."""
    sock.sendall(request)
    head = _read_head(sock, buffer)
    assert head is not None, "the edge closed the connection"
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.startswith(b"content-length")))
    while len(buffer) < length:
        buffer += sock.recv(65536)
    body, buffer[:] = bytes(buffer[:length]), buffer[length:]
    return head + b"\r\n\r\n" + body


def test_each_request_on_a_connection_reaches_the_app_as_sent_whatever_came_before(
    edge: Edge, app: ScriptedApp
) -> None:
    # The edge reuses the upstream head it made for a client's previous request when the next one is the same
    # (Client._send): each change from one request to the next, alone, must still reach the app byte for byte.
    get_a1 = b"GET /echo HTTP/1.1\r\nHost: web.localhost\r\nX-A: 1\r\n\r\n"
    sent_a1 = b"GET /echo HTTP/1.1\r\nhost: web.localhost\r\nx-a: 1\r\n" + FORWARDING
    cases = [
        (get_a1, sent_a1, b""),
        (get_a1, sent_a1, b""),  # the same request: the same head
        (get_a1.replace(b"X-A: 1", b"X-A: 2"), sent_a1.replace(b"x-a: 1", b"x-a: 2"), b""),  # a header's value
        (get_a1.replace(b"X-A: 1", b"X-B: 1"), sent_a1.replace(b"x-a: 1", b"x-b: 1"), b""),  # a header's name
        (get_a1.replace(b"GET", b"DELETE"), sent_a1.replace(b"GET", b"DELETE"), b""),  # the method
        (get_a1.replace(b"/echo", b"/echo?x=2"), sent_a1.replace(b"/echo", b"/echo?x=2"), b""),  # the target
        (  # a header that makes another one hop-by-hop
            get_a1.replace(b"X-A: 1\r\n", b"X-A: 1\r\nConnection: keep-alive, X-A\r\n"),
            sent_a1.replace(b"x-a: 1\r\n", b""),
            b"",
        ),
        (get_a1, sent_a1, b""),  # back to the first
    ]
    post = b"POST /echo HTTP/1.1\r\nHost: web.localhost\r\nX-A: 1\r\nContent-Length: %d\r\n\r\n%s"
    sent_post = b"POST /echo HTTP/1.1\r\nhost: web.localhost\r\nx-a: 1\r\ncontent-length: %d\r\n" + FORWARDING
    for body in (b"a", b"b", b"bb", b"", b"bb"):  # a body; another of the same length; a longer one; none
        cases.append((post % (len(body), body), sent_post % len(body), body))
    chunked = b"POST /echo HTTP/1.1\r\nHost: web.localhost\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n"
    for body in (b"a", b"bb"):  # the same head from the client, bodies of two lengths
        cases.append((chunked % (b"%x\r\n%s\r\n" % (len(body), body)), sent_post % len(body), body))
    upgrade = get_a1.replace(b"X-A: 1\r\n", b"X-A: 1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n")
    cases.append(
        (upgrade, sent_a1.replace(b"x-a: 1\r\n", b"x-a: 1\r\nconnection: upgrade\r\nupgrade: websocket\r\n"), b"")
    )

    buffer = bytearray()
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        for request, _, _ in cases:
            assert _exchange(sock, request, buffer).startswith(b"HTTP/1.1 200 OK\r\n")
    assert [(r["head"], r["body"]) for r in app.requests] == [(head, body) for _, head, body in cases]
    assert app.connections == 2  # one pooled upstream connection carried all but the Upgrade (a new one: never pooled)


def test_a_request_without_host_names_the_port_it_went_to_after_one_sent_to_another(
    edge: Edge, app: ScriptedApp
) -> None:
    # An HTTP/1.0 request without Host gets `host: 127.0.0.1:<port>` (Request.head_for): the same request bytes,
    # routed to another port the second time, must not reach it with the first port's head.
    other = ScriptedApp(socket.create_server(("127.0.0.1", 0)))
    threading.Thread(target=other.serve, daemon=True).start()
    request = b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    sent = b"GET /echo HTTP/1.1\r\nhost: 127.0.0.1:%d\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http"
    try:
        buffer = bytearray()
        with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
            edge.routes[""] = (200, app.port)
            assert _exchange(sock, request, buffer).startswith(b"HTTP/1.1 200 OK\r\n")
            edge.routes[""] = (200, other.port)
            assert _exchange(sock, request, buffer).startswith(b"HTTP/1.1 200 OK\r\n")
        assert [r["head"] for r in app.requests] == [sent % app.port]
        assert [r["head"] for r in other.requests] == [sent % other.port]
    finally:
        other.sock.close()


class _Transport:
    """A transport that keeps what is written: the relay's request path without sockets or an event loop turn."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else None

    def set_write_buffer_limits(self, high: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def client_connection(relay: Relay) -> tuple[Any, _Transport]:
    """A client connection on a transport keeping what is written."""
    client, transport = edge_relay.Client(relay), _Transport()
    client.connection_made(transport)
    return client, transport


def pooled_upstream(relay: Relay, port: int) -> Any:
    """One more idle upstream connection to `port` in the pool, on a transport keeping what is written."""
    upstream = edge_relay.Upstream(relay.pool, port)
    upstream.connection_made(_Transport())
    relay.pool.idle.setdefault(port, []).append(upstream)
    return upstream


def client_and_pooled_upstream(relay: Relay, port: int) -> tuple[Any, _Transport, Any, _Transport]:
    """A client connection and the one idle pooled upstream connection to `port`."""
    relay.pool.idle[port] = []
    client, client_transport = client_connection(relay)
    upstream = pooled_upstream(relay, port)
    return client, client_transport, upstream, upstream.transport


# What one keep-alive request costs in Python calls into rhone_local/edge_relay.py: a bodiless GET on a pooled
# upstream connection, answered with Content-Length. The parsers' callbacks are 2 of them, however many headers either
# side sends (rhone_local/http1.py: `on_message` for a message read whole; 7 with a call per head and part, 15 with
# httptools' call per header). Raise it only knowingly: every call is paid on every request.
CALLS_PER_REQUEST = 17


def test_a_keep_alive_request_on_a_pooled_connection_costs_a_bounded_number_of_python_calls() -> None:
    targets = [Target(40000)]
    relay = Relay(lambda host, affinity=(): (200, targets))
    try:
        client, client_transport, upstream, upstream_transport = client_and_pooled_upstream(relay, 40000)
        request = b"GET / HTTP/1.1\r\nHost: app--production.localhost:8080\r\n\r\n"
        answer = b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nContent-Length: 13\r\n\r\nhello, world\n"
        calls: list[str] = []

        def count(frame: Any, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code.co_filename == edge_relay.__file__:
                calls.append(frame.f_code.co_name)

        def one_request() -> None:
            client.data_received(request)
            upstream.data_received(answer)

        one_request()  # the first request of a connection makes what the next ones reuse
        sys.setprofile(count)
        try:
            for _ in range(3):
                one_request()
        finally:
            sys.setprofile(None)
        assert len(client_transport.written) == 4 and len(upstream_transport.written) == 4
        assert client_transport.written[-1] == answer.replace(b"Server", b"server").replace(b"Content-L", b"content-l")
        assert upstream_transport.written[-1].startswith(b"GET / HTTP/1.1\r\nhost: app--production.localhost:8080\r\n")
        assert relay.pool.idle[40000] == [upstream] and relay.open_connections(40000) == 0
        assert len(calls) == 3 * CALLS_PER_REQUEST, calls[: len(calls) // 3]
    finally:
        relay.loop.close()


def _scripted_run(steps: list[tuple[bytes, list[bytes]]], merged: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Feed `steps` (a client read, then the app's answer reads, each to the upstream connection carrying the current
    request) to a relay whose protocols have `on_message` or not; what each transport got, and where pools end."""
    if not merged:  # the parsers then make the four calls on_message stands for (rhone_local/http1.py)
        monkeypatch.delattr(edge_relay.Client, "on_message")
        monkeypatch.delattr(edge_relay.Upstream, "on_message")
    route: dict[str, Any] = {"answer": (200, [Target(40000, b"rhone_affinity=x")])}
    relay = Relay(lambda host, affinity=(): route["answer"])
    try:
        client, client_transport = client_connection(relay)
        upstreams = [pooled_upstream(relay, port) for port in (40000, 40001) for _ in range(4)]
        for request, answers in steps:
            if request == b"route: 404":
                route["answer"] = (404, "no route")
            elif request == b"route: 40001":
                route["answer"] = (200, [Target(40001)])
            else:
                client.data_received(request)
            for answer in answers:
                assert client.exchange is not None
                client.exchange.upstream.data_received(answer)
        return (
            client_transport.written,
            client_transport.closing,
            [(u.port, u.transport.written, u.closed) for u in upstreams],
            {port: [upstreams.index(u) for u in idle] for port, idle in relay.pool.idle.items()},
            dict(relay.pool.open),
        )
    finally:
        relay.loop.close()


def test_on_message_does_exactly_what_the_four_parser_calls_it_stands_for_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # Client.on_message and Upstream.on_message are the relay's hot path: a request or an answer read whole is one
    # call, and a request like the last one reuses its Request. Every step below, run both ways, must write the same
    # bytes to the client and to each app connection and leave the pool alike.
    get = b"GET /a HTTP/1.1\r\nHost: web.localhost\r\nCookie: k=v\r\n\r\n"
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok"
    steps = [
        (get, [ok]),
        (get, [ok]),  # the same request: its Request again
        (get.replace(b"GET", b"DELETE"), [ok]),  # the method alone
        (get, [ok.replace(b"X-A: 1", b"X-A: 2")]),  # another answer head
        (get.replace(b"k=v", b"k=w"), [ok]),  # a header's value
        (get.replace(b"/a", b"/b"), [ok]),  # the target alone
        (get.replace(b"Cookie: k=v", b"Cookie: rhone_affinity=y; k=v"), [ok]),  # the edge's cookie, taken out
        (get, [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]),  # one piece
        (get, [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"]),  # two
        (get, [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]),  # none
        (get, [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe", b"llo"]),  # a body over two reads
        (get, [b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"]),
        (get, [b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"]),
        (get + get, [ok, ok]),  # pipelined: the second waits for the first answer
        (b"POST /a HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 2\r\n\r\nhi", [ok]),
        (b"POST /a HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n", [ok]),
        (b"POST /a HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n", [ok]),
        (b"route: 40001", []),
        (get, [ok]),  # the same request, routed elsewhere now
        (b"route: 404", []),
        (get.replace(b"GET", b"HEAD"), []),  # and now nowhere: the edge answers
        (get, []),
        (get.replace(b"HTTP/1.1", b"HTTP/1.0"), []),  # the version alone (not kept alive: the connection closes)
    ]
    merged = _scripted_run(steps, True, monkeypatch)
    apart = _scripted_run(steps, False, monkeypatch)
    assert merged == apart
    written = b"".join(merged[0])
    assert written.count(b"HTTP/1.1 404 ") == 3 and written.count(b"100 Continue") == 2
    sent = [b"".join(w) for _, w, _ in merged[2]]
    assert sum(s.count(b"DELETE /a ") for s in sent) == 1 and sum(s.count(b"GET /a ") for s in sent) == 14


@pytest.mark.parametrize(
    ("head", "reads", "writes"),
    [
        # A small answer whose head and body the app wrote apart (gunicorn does) leaves in one write, whole.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n", [b"hello, world\n"], 1),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nhello", [b", ", b"world\n"], 1),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", [], 1),
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % POSTPONE_BYTES, [b"x" * POSTPONE_BYTES], 1),
        # A larger one, and streams (chunked, close-delimited), are relayed read by read.
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (POSTPONE_BYTES + 1), [b"x" * (POSTPONE_BYTES + 1)], 2),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", [b"5\r\nhello\r\n", b"0\r\n\r\n"], 3),
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"0" * 5000 + b"2\r\n\r\n", [b"ok"], 2),  # valid, not held
    ],
)
def test_a_small_answer_read_in_pieces_leaves_for_the_client_in_one_write(head, reads, writes) -> None:
    relay = Relay(lambda host, affinity=(): (200, [Target(40000)]))
    try:
        client, client_transport, upstream, _ = client_and_pooled_upstream(relay, 40000)
        for _ in range(2):  # the second answer reuses the head made for the first: it must be held alike
            client_transport.written.clear()
            client.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            upstream.data_received(head)
            for piece in reads:
                assert client.exchange is not None
                upstream.data_received(piece)
            assert len(client_transport.written) == writes, client_transport.written
            written = b"".join(client_transport.written)
            assert written.startswith(b"HTTP/1.1 ") and written.endswith(
                b"0\r\n\r\n" if b"chunked" in head else reads[-1] if reads else b"\r\n\r\n"
            )
            assert client.exchange is None and relay.pool.idle[40000] == [upstream] and not client_transport.closing
    finally:
        relay.loop.close()


def test_held_answers_keep_their_order_and_their_client() -> None:
    # An informational answer before a held one, a HEAD (no body, never held), a pipelined request waiting while an
    # answer is held, and a client gone while its answer is held: every byte reaches its own client once, in order.
    relay = Relay(lambda host, affinity=(): (200, [Target(40000)]))
    try:
        client, client_transport, _, _ = client_and_pooled_upstream(relay, 40000)
        for _ in range(3):  # idle connections for the requests below
            pooled_upstream(relay, 40000)
        get = b"GET /%s HTTP/1.1\r\nHost: a\r\n\r\n"
        client.data_received(get % b"1" + get % b"2")  # pipelined: the second waits for the first's answer
        first = client.exchange.upstream
        first.data_received(b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n")
        first.data_received(b"\r\non")
        assert client_transport.written == []  # held
        assert [b"GET /2 " in b"".join(u.transport.written) for u in relay.pool.idle[40000]] == [False] * 3
        first.data_received(b"e")
        assert client_transport.written == [b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"]
        second = client.exchange.upstream  # only now: the first answer is whole
        assert second.transport.written[-1].startswith(b"GET /2 ")
        second.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
        second.data_received(b"two")
        assert client_transport.written[-1] == b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo"

        client.data_received(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        client.exchange.upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
        assert client_transport.written[-1] == b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n"  # at once, bodiless
        assert client.exchange is None and len(client_transport.written) == 3

        other, other_transport = client_connection(relay)
        other.data_received(get % b"3")
        held_on = other.exchange.upstream
        held_on.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
        other.connection_lost(None)  # its client goes while the answer is held
        assert other_transport.written == [] and held_on.closed  # nothing left for anyone; the app's connection closed
        assert held_on not in relay.pool.idle.get(40000, [])
        assert len(client_transport.written) == 3  # the first client got nothing of it
    finally:
        relay.loop.close()


def test_a_held_answer_the_app_cuts_short_is_a_502_and_none_of_it_reaches_the_client() -> None:
    relay = Relay(lambda host, affinity=(): (200, [Target(40000)]))
    try:
        client, client_transport, upstream, _ = client_and_pooled_upstream(relay, 40000)
        client.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        upstream.data_received(b"only ten..")
        assert client_transport.written == []  # held: the answer is not whole
        upstream.connection_lost(None)
        # The client has seen nothing of the answer, so it gets a clean error rather than a part of it; the client
        # connection closes after it, and the app's connection is never pooled.
        assert client_transport.written == [
            plain_response(502, "502 the app closed the connection before its answer was whole\n", close=True)
        ]
        assert client_transport.closing and not client_transport.aborted
        assert relay.pool.idle.get(40000, []) == [] and client.exchange is None
    finally:
        relay.loop.close()


def test_a_held_answer_that_fails_within_a_read_is_replaced_by_the_error() -> None:
    # The failure comes while this read's bytes of the held answer are still corked: none of them may reach the
    # client with the error.
    relay = Relay(lambda host, affinity=(): (200, [Target(40000)]))
    try:
        client, client_transport, upstream, _ = client_and_pooled_upstream(relay, 40000)
        client.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        upstream.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst ")
        parser = upstream.parser

        class FailingAfterFeeding:
            def feed_data(self, data: bytes) -> None:
                parser.feed_data(data)
                raise httptools.HttpParserError("failed after the bytes were parsed")

            def __getattr__(self, name: str) -> Any:
                return getattr(parser, name)

        upstream.parser = FailingAfterFeeding()
        upstream.data_received(b"second ")
        (written,) = client_transport.written
        assert written.startswith(b"HTTP/1.1 502 ") and b"not valid HTTP/1.1" in written
        assert b"first" not in written and b"second" not in written and b"content-length: 100" not in written
        assert upstream.closed and relay.pool.idle.get(40000, []) == [] and client.exchange is None
    finally:
        relay.loop.close()


def test_a_request_with_a_body_is_not_kept_past_its_exchange() -> None:
    # The upstream head made for a client's last request is kept with that Request when it has no body (a repeat is
    # then the same object); a body of up to 32 MiB must not stay in memory for as long as the connection idles, nor
    # while it repeats a bodiless request (which skips on_message_begin).
    relay = Relay(lambda host, affinity=(): (200, [Target(40000)]))
    try:
        client, _, upstream, _ = client_and_pooled_upstream(relay, 40000)
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        client.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        upstream.data_received(answer)
        assert client.last_head[3] is client.same_as_last[2]
        client.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        upstream.data_received(answer)
        assert client.last_head[3] is None and client.same_as_last[2].method == b"GET"
        client.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # the same GET again: the fast path
        upstream.data_received(answer)
        assert client.body is None and all(r.body != b"hello" for r in (client.same_as_last[2], client.last_head[3]))
    finally:
        relay.loop.close()
