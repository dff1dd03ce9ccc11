"""The floor under any Python HTTP proxy on this machine, for `bench/edge_wrk.py --floor`.

    python bench/_floor_proxy.py UPSTREAM_PORT      (prints the port it listens on, then serves until killed)

uvloop and httptools (what the edge parses with when its C parsers are not built), doing the least a proxy can: each
client connection gets one upstream connection; every byte is parsed (httptools: a Python call per header) and copied
unchanged both ways. No routing, no header rewriting, no forwarding headers (the app gets fewer than from the edge or
the nginx anchor), no pooling, no deadlines: what is left between this and the edge is what the edge's HTTP semantics
cost. Not a proxy to use: it trusts the app and the client alike.
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class Headers:
    """httptools callbacks that keep what a proxy would look at, and nothing else."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))


class Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(Headers())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class Client(asyncio.Protocol):
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.upstream: Upstream | None = None
        self.pending: list[bytes] = []
        self.parser = httptools.HttpRequestParser(Headers())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.upstream = await loop.create_connection(
            lambda: Upstream(self.transport), "127.0.0.1", self.upstream_port
        )
        for data in self.pending:
            self.upstream.transport.write(data)
        self.pending = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.transport.close()


async def serve(upstream_port: int) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: Client(upstream_port), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
