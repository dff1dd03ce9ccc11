"""A minimal Redis (RESP2) client: what Rhone Local needs to run its Redis engines (AUTH, PING, ACL, CLIENT LIST,
INFO), over one short-lived loopback connection with a deadline. Apps bring their own client; this one only
administers."""

from __future__ import annotations

import socket
from typing import Any

MAX_REPLY_BYTES = 16 * 1024 * 1024  # CLIENT LIST of many connections stays well below this


class RespError(Exception):
    """An error reply (`-ERR …`, `-WRONGPASS …`) or a connection that broke mid-reply."""


def encode(*args: str | bytes | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RespConnection:
    def __init__(self, port: int, *, host: str = "127.0.0.1", timeout: float = 2.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        self.received = 0

    def __enter__(self) -> RespConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def call(self, *args: str | bytes | int) -> Any:
        self.sock.sendall(encode(*args))
        return self._reply()

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RespError("the connection closed mid-reply")
        self.received += len(chunk)
        if self.received > MAX_REPLY_BYTES:
            raise RespError("reply too large")
        self.buffer += chunk

    def _reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                self._fill()
            data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
            return data.decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise RespError(f"unexpected reply {line[:40]!r}")
