"""Small real servers on loopback for network tests: an API stand-in (plain or TLS), an HTTP forward proxy and a
SOCKS5 proxy, plus certificates made on the fly. Every server binds port 0 and reports the port it got; every
test stops what it starts (context managers). Names like `rhone.test` are resolved by the proxies themselves, to
loopback, so nothing leaves this machine."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import select
import socket
import socketserver
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

WHOAMI = {"id": "usr_1", "kind": "user", "name": "ada", "workspaces": [{"name": "local", "role": "owner"}]}


@dataclass
class Server:
    port: int
    requests: list[str] = field(default_factory=list)  # "METHOD target" (an API), or "CONNECT host:port" (a proxy)
    connections: int = 0


@contextlib.contextmanager
def _serving(server: socketserver.BaseServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _tcp_serving(handler: type, record: Server) -> Iterator[Server]:
    """A threaded TCP server for `handler` on a loopback port the kernel picks, recorded in `record`, while the
    caller's block runs."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    record.port = server.server_address[1]
    with _serving(server):
        yield record


# -- the API stand-in ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def api_server(tls: ssl.SSLContext | None = None, answers: dict[str, object] | None = None) -> Iterator[Server]:
    """Answers GET /v1/whoami (and the paths of `answers`, query ignored) on 127.0.0.1; with `tls`, over TLS."""
    record = Server(0)
    known = {"/v1/whoami": WHOAMI, **(answers or {})}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            record.requests.append(f"GET {self.path}")
            path = self.path.split("?")[0]
            body = json.dumps(known[path]).encode() if path in known else b"{}"
            self.send_response(200 if path in known else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Http(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self):  # type: ignore[no-untyped-def]
            conn, address = self.socket.accept()
            record.connections += 1
            if tls is not None:
                conn = tls.wrap_socket(conn, server_side=True)  # a failed handshake ends this connection only
            return conn, address

        def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
            pass

    server = Http(("127.0.0.1", 0), Handler)
    record.port = server.server_address[1]
    with _serving(server):
        yield record


# -- proxies -----------------------------------------------------------------------------------------------------------
def _loopback(host: str) -> str:
    """The proxies resolve every name to loopback: tests name remote-looking hosts without any DNS."""
    del host
    return "127.0.0.1"


def _relay(a: socket.socket, b: socket.socket) -> None:
    sockets = [a, b]
    while True:
        readable, _, _ = select.select(sockets, [], [], 5)
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


@contextlib.contextmanager
def http_proxy() -> Iterator[Server]:
    """A forward proxy: absolute-form requests (`GET http://host:port/path`) and CONNECT tunnels."""
    record = Server(0)

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                head += chunk
            request_line = head.split(b"\r\n", 1)[0].decode()
            method, target, _ = request_line.split(" ", 2)
            record.requests.append(f"{method} {target}")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((_loopback(host), int(port)), timeout=5)
                self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                url = urlsplit(target)
                upstream = socket.create_connection((_loopback(url.hostname or ""), url.port or 80), timeout=5)
                origin = url.path + (f"?{url.query}" if url.query else "")
                upstream.sendall(head.replace(target.encode(), origin.encode(), 1))
            with upstream:
                _relay(self.request, upstream)

    yield from _tcp_serving(Handler, record)


@contextlib.contextmanager
def socks5_proxy() -> Iterator[Server]:
    """A SOCKS5 proxy without authentication that supports CONNECT to a domain name or an IPv4 address."""
    record = Server(0)

    class Handler(socketserver.BaseRequestHandler):
        def _read(self, count: int) -> bytes:
            data = b""
            while len(data) < count:
                chunk = self.request.recv(count - len(data))
                if not chunk:
                    raise ConnectionError("client went away")
                data += chunk
            return data

        def handle(self) -> None:
            _version, methods = self._read(2)
            self._read(methods)
            self.request.sendall(b"\x05\x00")
            _version, command, _reserved, address_type = self._read(4)
            if address_type == 3:
                host = self._read(self._read(1)[0]).decode()
            elif address_type == 1:
                host = str(ipaddress.IPv4Address(self._read(4)))
            else:
                self.request.sendall(b"\x05\x08\x00\x01" + b"\x00" * 6)
                return
            (port,) = struct.unpack("!H", self._read(2))
            record.requests.append(f"CONNECT {host}:{port}")
            if command != 1:
                self.request.sendall(b"\x05\x07\x00\x01" + b"\x00" * 6)
                return
            upstream = socket.create_connection((_loopback(host), port), timeout=5)
            self.request.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", port))
            with upstream:
                _relay(self.request, upstream)

    yield from _tcp_serving(Handler, record)


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs: bound (so nobody else gets it) but
    never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# -- certificates ----------------------------------------------------------------------------------------------------
@dataclass
class Certificates:
    directory: Path
    ca: Path  # PEM of the test CA
    good: ssl.SSLContext  # server context: a certificate for 127.0.0.1/localhost signed by the CA
    expired: ssl.SSLContext  # signed by the CA, expired yesterday
    self_signed: ssl.SSLContext  # for 127.0.0.1, signed by nobody
    wrong_host: ssl.SSLContext  # signed by the CA, for another host name


def make_certificates(directory: Path) -> Certificates:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool, sans, start, end):  # type: ignore[no-untyped-def]
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def context(cert, key, label: str) -> ssl.SSLContext:  # type: ignore[no-untyped-def]
        cert_path, key_path = directory / f"{label}.pem", directory / f"{label}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_path, key_path)
        return server

    loopback = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    year = datetime.timedelta(days=365)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate(
        "rhone test CA", ca_key, "rhone test CA", ca_key, ca=True, sans=None, start=now, end=now + year
    )
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(label: str, *, sans=loopback, start=now - datetime.timedelta(hours=1), end=now + year, signer=None):  # type: ignore[no-untyped-def]
        key = ec.generate_private_key(ec.SECP256R1())
        issuer, issuer_key = ("rhone test CA", ca_key) if signer is None else (label, key)
        return context(
            certificate(label, key, issuer, issuer_key, ca=False, sans=sans, start=start, end=end), key, label
        )

    return Certificates(
        directory=directory,
        ca=ca_path,
        good=leaf("good"),
        expired=leaf("expired", start=now - 2 * year, end=now - datetime.timedelta(days=1)),
        self_signed=leaf("self-signed", signer="self"),
        wrong_host=leaf("wrong-host", sans=[x509.DNSName("elsewhere.example")]),
    )
