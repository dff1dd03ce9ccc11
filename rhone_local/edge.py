"""The edge: one HTTP listener that routes by Host header to allocations.

- `dep-<id>.<suffix>` reaches that deployment's own ready allocation (the id's `_` becomes `-`: hostnames have
  no underscores);
- `<app>--<env>.<suffix>` reaches the route owner's ready allocation in that environment. Ownership comes from the
  edge's own route table (`domain/routing.py`): a verified snapshot, then the store's route events applied by
  sequence and epoch; a gap fails closed until a fresh snapshot. Allocation health never picks the owner.
An unknown host is 404; a known route or deployment without a ready allocation is 503 — the edge never falls back
to another deployment. Request bodies are read whole; responses stream; hop-by-hop headers are dropped.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import httpx

from rhone_local.domain.routing import Owner, RouteEvent, RouteTable
from rhone_local.store import Store

log = logging.getLogger("rhone_local.edge")
MAX_REQUEST_BODY = 32 * 1024 * 1024
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


SYNC_INTERVAL_SECONDS = 0.02


class Edge:
    def __init__(self, store: Store, suffix: str = "localhost") -> None:
        self.store = store
        self.suffix = suffix
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0), follow_redirects=False)
        self.table = RouteTable()
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None

    # -- route ownership ---------------------------------------------------------------------------------------
    def load_snapshot(self) -> None:
        seq, owners, expected = self.store.route_snapshot()
        mapping = {o["route_key"]: Owner(o["deployment_id"], o["artifact_digest"], o["epoch"]) for o in owners}
        self.table.load_snapshot(seq, mapping, expected)

    def sync_once(self) -> None:
        """Bring the route table up to date: contiguous events, or a fresh snapshot after a gap."""
        if not self.table.serving:
            self.load_snapshot()
        for row in self.store.route_events_after(self.table.seq or 0):
            event = RouteEvent(row["seq"], row["route_key"], row["epoch"], row["deployment_id"], row["artifact_digest"])
            if self.table.apply(event) == "gap":
                self.load_snapshot()
                break

    def start_sync(self) -> None:
        def loop() -> None:
            try:
                while not self._stop.wait(SYNC_INTERVAL_SECONDS):
                    try:
                        self.sync_once()
                    except Exception:
                        log.exception("route table sync failed; retrying")
            finally:
                self.store.close()

        self.sync_once()
        self._sync_thread = threading.Thread(target=loop, name="edge-routes", daemon=True)
        self._sync_thread.start()

    def stop_sync(self) -> None:
        self._stop.set()
        if self._sync_thread is not None:
            self._sync_thread.join(2)

    def route(self, host: str) -> tuple[int, str | int]:
        """(status, upstream port or reason) for a Host header."""
        name = host.split(":", 1)[0].lower().rstrip(".")
        if not name.endswith("." + self.suffix):
            return 404, f"{name} is not under .{self.suffix}"
        label = name[: -len(self.suffix) - 1]
        if "--" in label and "." not in label:
            _, _, environment = label.partition("--")
            if not self.table.serving:
                return 503, "route table rebuilding after a gap (failing closed)"
            owner = self.table.owner(label)
            if owner is None:
                return 404, f"no route {label}"
            alloc = self.store.one(
                "SELECT a.port FROM allocations a JOIN environments e ON e.id = a.environment_id "
                "WHERE a.deployment_id = ? AND e.name = ? AND a.state = 'ready' ORDER BY a.id DESC LIMIT 1",
                owner.deployment_id,
                environment,
            )
            if alloc is None:
                return 503, f"route {label} (epoch {owner.epoch}, {owner.deployment_id}) has no ready allocation"
            return 200, alloc["port"]
        if label.startswith("dep-") and "." not in label:
            deployment_id = "dep_" + label[4:]
            deployment = self.store.one("SELECT id FROM deployments WHERE id = ?", deployment_id)
            if deployment is None:
                return 404, f"no deployment {deployment_id}"
            alloc = self.store.one(
                "SELECT port FROM allocations WHERE deployment_id = ? AND state = 'ready' ORDER BY id DESC LIMIT 1",
                deployment_id,
            )
            if alloc is None:
                return 503, f"deployment {deployment_id} has no ready allocation"
            return 200, alloc["port"]
        return 404, f"no route for {name}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, target = self.route(headers.get("host", ""))
        if status != 200:
            await self._plain(send, status, f"{status} {target}\n")
            return
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        url = f"http://127.0.0.1:{target}{path.decode('latin-1')}" + (f"?{query.decode('latin-1')}" if query else "")
        forward = [(k, v) for k, v in headers.items() if k not in HOP_BY_HOP]
        forward += [("x-forwarded-host", headers.get("host", "")), ("x-forwarded-proto", "http")]
        client_host = (scope.get("client") or ("", 0))[0]
        if client_host:
            forward.append(("x-forwarded-for", client_host))

        # Request bodies are read whole (bounded) so the upstream gets a Content-Length: simple app servers (the
        # standard library's among them) do not read chunked request bodies. Responses stream.
        chunks, size = [], 0
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_REQUEST_BODY:
                await self._plain(send, 413, "413 request body too large for the local edge\n")
                return
            if not message.get("more_body"):
                break
        request = self.client.build_request(scope["method"], url, headers=forward, content=b"".join(chunks))
        try:
            response = await self.client.send(request, stream=True)
        except httpx.ConnectError:
            # The allocation recorded as ready does not accept connections (its process died): that is "the owner
            # has no ready allocation", so 503 like every other such case — and still never another deployment.
            await self._plain(send, 503, "503 the allocation is not answering\n")
            return
        except httpx.TransportError as error:
            await self._plain(send, 502, f"502 upstream failed: {type(error).__name__}\n")
            return
        try:
            out_headers = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in response.headers.multi_items()
                if k.lower() not in HOP_BY_HOP
            ]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    @staticmethod
    async def _plain(send: Any, status: int, text: str) -> None:
        body = text.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
