"""Route events on NATS JetStream, for edges on other machines (`--events nats://…`; docs/multi-node.md, "Route
events"). The store stays the source of truth: an event is committed first and published second.

- `RouteEventPublisher` reads committed route events through a callable (`read_events_after(seq, limit)`, the
  store's `route_events_after`) and publishes each, in sequence order, on the stream `RHONE_ROUTES` with the
  de-duplication id `Nats-Msg-Id: route-<seq>` — a publish repeated after a crash or by a second publisher within
  the stream's duplicate window is dropped by JetStream. One publisher runs at a time: it holds a `PublisherLock`
  (in process here; the PostgreSQL store's advisory lock is the cluster-wide one). It resumes after the route
  sequence of the stream's last message, and republishes from the start into an empty (new or purged) stream.
- `RouteStreamFollower` feeds an edge's route table: a verified snapshot first (`load_snapshot`, e.g. the API's
  feed), then every message of the stream in stream order, read one by one by stream sequence. The edge's table
  (domain/routing.py) drops what the snapshot already holds and fails closed on a route-sequence gap; the follower
  also fails closed when the stream lost messages it had not read (a purge: its next sequence is below the stream's
  first) or went backwards (a server that came back without its data). Failing closed, it loads a new snapshot and
  reads on from the stream's start. Each time it confirms it has read to the stream's end it extends the edge's
  lease (`renew`): an edge cut off from NATS stops serving routes when the lease passes, never serves an older owner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

log = logging.getLogger("rhone_local.route_stream")

STREAM = "RHONE_ROUTES"
SUBJECT = "rhone.routes"
SEQ_HEADER = "Rhone-Route-Seq"
DUPLICATE_WINDOW_SECONDS = 120.0
BATCH = 500
CONNECT_TIMEOUT_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 5.0
PUBLISH_INTERVAL_SECONDS = 0.5  # a publisher not poked looks for committed events this often
IDLE_CHECK_SECONDS = 0.5  # a follower at the stream's end asks the stream for news at least this often
RETRY_SECONDS = 0.2
EVENT_KEYS = ("seq", "route_key", "epoch", "deployment_id", "artifact_digest")


class PublisherLock(Protocol):
    """Held by the one publisher of a cluster (the PostgreSQL store's advisory lock; `LocalPublisherLock` here)."""

    def acquire(self) -> bool:
        """True if this caller now holds the lock; False if another holds it (never blocks)."""
        ...

    def release(self) -> None: ...


class LocalPublisherLock:
    """One publisher per name in this process: enough for a single node, where one server owns the store."""

    _held: ClassVar[set[str]] = set()
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = STREAM) -> None:
        self.name = name

    def acquire(self) -> bool:
        with self._guard:
            if self.name in self._held:
                return False
            self._held.add(self.name)
            return True

    def release(self) -> None:
        with self._guard:
            self._held.discard(self.name)


async def _connect(url: str) -> Any:
    """A connection, or an exception within CONNECT_TIMEOUT_SECONDS: nats-py keeps retrying a refused first connect
    by itself (even told not to reconnect), which would hold a publisher's lock and a shutdown for ever."""
    import nats

    async def quiet(error: Exception) -> None:  # each failure is logged once by the caller, not with a traceback
        log.debug("route events: NATS said %s", error)

    connecting = nats.connect(
        url,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        max_reconnect_attempts=0,
        allow_reconnect=False,
        error_cb=quiet,
    )
    return await asyncio.wait_for(connecting, CONNECT_TIMEOUT_SECONDS)


def _event_of(message: Any) -> dict[str, Any]:
    document = json.loads(message.data)
    return {k: document[k] for k in EVENT_KEYS}


class _Threaded:
    """A loop of its own in a thread: nats-py is asynchronous, the control plane and the edge's feed are threads."""

    name = "route-stream"

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.stopping.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name=self.name, daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(CONNECT_TIMEOUT_SECONDS + REQUEST_TIMEOUT_SECONDS + 1)

    async def _sleep(self, seconds: float) -> None:
        """Until `seconds` pass, or `poke`/`stop` is called."""
        await asyncio.get_running_loop().run_in_executor(None, self._wake.wait, seconds)
        self._wake.clear()

    async def _run(self) -> None:
        raise NotImplementedError


class RouteEventPublisher(_Threaded):
    name = "route-publisher"

    def __init__(
        self,
        url: str,
        read_events_after: Callable[[int, int], list[dict[str, Any]]],
        lock: PublisherLock | None = None,
        *,
        stream: str = STREAM,
        subject: str = SUBJECT,
    ) -> None:
        super().__init__()
        self.url, self.read_events_after = url, read_events_after
        self.lock = lock or LocalPublisherLock(stream)
        self.stream, self.subject = stream, subject
        self.published = 0  # the last route sequence this publisher saw acknowledged (stored or a duplicate)
        self.counts = {"published": 0, "duplicate": 0}

    async def ensure_stream(self, js: Any) -> None:
        from nats.js.api import StreamConfig
        from nats.js.errors import NotFoundError

        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            config = StreamConfig(name=self.stream, subjects=[self.subject], duplicate_window=DUPLICATE_WINDOW_SECONDS)
            await js.add_stream(config)

    async def last_on_stream(self, js: Any) -> int | None:
        """The route sequence of the stream's last message; None when the stream is empty (new or purged)."""
        from nats.js.errors import NotFoundError

        try:
            message = await js.get_last_msg(self.stream, self.subject)
        except NotFoundError:
            return None
        return int(message.headers[SEQ_HEADER])

    async def publish_pending(self, js: Any) -> int:
        """Publish every committed event after the stream's last one, in order; how many were sent."""
        last = await self.last_on_stream(js)
        after = self.published if last is None else max(last, self.published)
        sent = 0
        while True:
            events = self.read_events_after(after, BATCH)
            for event in events:
                body = json.dumps({k: event[k] for k in EVENT_KEYS}, separators=(",", ":")).encode()
                headers = {"Nats-Msg-Id": f"route-{event['seq']}", SEQ_HEADER: str(event["seq"])}
                ack = await js.publish(self.subject, body, stream=self.stream, headers=headers)
                self.counts["duplicate" if ack.duplicate else "published"] += 1
                after = self.published = event["seq"]
                sent += 1
            if len(events) < BATCH:
                return sent

    async def _run(self) -> None:
        while not self.stopping.is_set():
            if not self.lock.acquire():
                await self._sleep(PUBLISH_INTERVAL_SECONDS)  # another publisher runs; take over when it is gone
                continue
            try:
                client = await _connect(self.url)
                try:
                    js = client.jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
                    await self.ensure_stream(js)
                    while not self.stopping.is_set() and client.is_connected:
                        await self.publish_pending(js)
                        await self._sleep(PUBLISH_INTERVAL_SECONDS)
                finally:
                    await client.close()
            except Exception as error:  # noqa: BLE001 - NATS away, a timeout: the store keeps every event, retry
                log.warning("route events: publishing to %s failed (%s); retrying", self.stream, error)
                await self._sleep(RETRY_SECONDS)
            finally:
                self.lock.release()


class RouteStreamFollower(_Threaded):
    """Keeps an edge's route table on the stream. `apply(document)` takes `{"routes": {"snapshot": …}}` or
    `{"routes": {"events": […]}}` (the edge feed's shape, `Edge.apply`); `wanted_seq()` is the route sequence the
    table applies, None when it needs a snapshot; `fail_closed()` makes it stop serving routes; `renew(sent)` extends
    its lease, with the monotonic time the confirming request was sent."""

    name = "route-follower"

    def __init__(
        self,
        url: str,
        *,
        load_snapshot: Callable[[], dict[str, Any]],
        apply: Callable[[dict[str, Any]], None],
        wanted_seq: Callable[[], int | None],
        fail_closed: Callable[[str], None],
        renew: Callable[[float], None],
        stream: str = STREAM,
        subject: str = SUBJECT,
    ) -> None:
        super().__init__()
        self.url, self.stream, self.subject = url, stream, subject
        self.load_snapshot, self.apply, self.wanted_seq = load_snapshot, apply, wanted_seq
        self.fail_closed, self.renew = fail_closed, renew
        self.next_stream_seq: int | None = None  # the stream sequence to read next; None: from the stream's start
        self.counts = {"snapshots": 0, "events": 0, "closed": 0}

    def _close(self, reason: str) -> None:
        log.warning("route events: %s; failing closed until a new snapshot", reason)
        self.counts["closed"] += 1
        self.fail_closed(reason)
        self.next_stream_seq = None

    async def step(self, js: Any) -> bool:
        """Read what the stream has next; True if there may be more to read at once."""
        from nats.js.errors import NotFoundError

        sent = time.monotonic()
        if self.next_stream_seq is None or self.wanted_seq() is None:
            # No position on the stream yet (started, or failed closed), or a table that needs one: a verified
            # snapshot, then the stream from its start (the table drops what the snapshot already holds).
            state = (await js.stream_info(self.stream)).state
            self.apply({"routes": {"snapshot": self.load_snapshot()}})
            self.counts["snapshots"] += 1
            self.next_stream_seq = state.first_seq or 1
        state = (await js.stream_info(self.stream)).state
        read = self.next_stream_seq - 1
        if self.next_stream_seq < state.first_seq:
            self._close(f"the stream lost messages {read + 1}..{state.first_seq - 1} before this edge read them")
            return True
        if self.next_stream_seq > state.last_seq + 1:
            self._close(f"the stream went back to sequence {state.last_seq} (this edge read up to {read})")
            return True
        if self.next_stream_seq == state.last_seq + 1:
            self.renew(sent)  # read to the end of the stream as it stood when asked
            return False
        try:
            message = await js.get_msg(self.stream, self.next_stream_seq)
        except NotFoundError:  # deleted between the two requests: what it held is lost to this edge
            self._close(f"message {self.next_stream_seq} of the stream is gone")
            return True
        self.next_stream_seq += 1
        self.counts["events"] += 1
        self.apply({"routes": {"events": [_event_of(message)]}})
        if self.wanted_seq() is None:
            self._close("a route sequence gap")
        return True

    async def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                client = await _connect(self.url)
                try:
                    js = client.jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
                    wake = await client.subscribe(self.subject, cb=self._on_publish)
                    while not self.stopping.is_set() and client.is_connected:
                        if not await self.step(js):
                            await self._sleep(IDLE_CHECK_SECONDS)
                    await wake.unsubscribe()
                finally:
                    await client.close()
            except Exception as error:  # noqa: BLE001 - NATS away: the lease runs out and the edge fails closed
                log.warning("route events: following %s failed (%s); retrying", self.stream, error)
                await self._sleep(RETRY_SECONDS)

    async def _on_publish(self, _message: Any) -> None:
        self.poke()  # a new event on the stream: read it now rather than at the next check
