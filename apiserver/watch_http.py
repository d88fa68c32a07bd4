"""The watch stream over HTTP: chunked JSON lines, written as events happen.

A live watch does not wake a task per event. Once its backlog (initial objects, replayed
history) is written, :class:`WatchResponse` installs itself as its subscriber's *sink*:
the broadcaster hands each event straight to it, and it writes the (once-serialised) line
with the ASGI ``send`` driven synchronously — which is what uvicorn's send does unless the
socket's buffer is full. Only then does the write continue in a task, while later events
queue on the subscriber and the stream's own coroutine writes them in order. With 1,000
watchers one change costs 1,000 socket writes, not 1,000 task switches on top.

The stream's coroutine otherwise sleeps: it wakes for a backlog, a bookmark, the
``timeoutSeconds`` deadline, the end of the watch (shutdown, 410), or a disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from apiserver.encoding import encode
from apiserver.errors import StatusError
from apiserver.resources import Resource
from apiserver.watch import CachedEvent, Subscriber, WatchClosed, WatchHub

logger = logging.getLogger(__name__)

RawObject = dict[str, Any]
TableBuilder = Callable[..., RawObject]
"""``build([obj], with_definitions=...)`` -> a Table (see handlers.build_table)."""


class EventEncoder(Protocol):
    def event(self, ev: CachedEvent) -> bytes: ...

    def added(self, obj: RawObject) -> bytes: ...


class JsonEvents:
    """``{"type":..,"object":..}`` lines; an event's line is shared by every watcher."""

    def event(self, ev: CachedEvent) -> bytes:
        return ev.line()

    def added(self, obj: RawObject) -> bytes:
        return encode({"type": "ADDED", "object": obj}) + b"\n"


class TableEvents:
    """``kubectl get -w``: each event's object is a one-row Table (columns on the first)."""

    def __init__(self, table: TableBuilder) -> None:
        self.table = table
        self.first = True

    def _line(self, type_: str, obj: RawObject) -> bytes:
        table = self.table([obj], with_definitions=self.first)
        self.first = False
        return encode({"type": type_, "object": table}) + b"\n"

    def event(self, ev: CachedEvent) -> bytes:
        return self._line(ev.type, ev.obj)

    def added(self, obj: RawObject) -> bytes:
        return self._line("ADDED", obj)


class ConvertedEvents:
    """Events of a custom kind served at ``api_version``: an object stored at another
    apiVersion is converted first, and its line is this watcher's own; an object already
    at that version keeps the event's shared line."""

    def __init__(
        self, inner: EventEncoder, convert: Callable[[RawObject], RawObject], api_version: str
    ) -> None:
        self.inner = inner
        self.convert = convert
        self.api_version = api_version

    def event(self, ev: CachedEvent) -> bytes:
        if ev.obj.get("apiVersion") == self.api_version:
            return self.inner.event(ev)
        converted = CachedEvent(ev.type, ev.key, self.convert(ev.obj), ev.revision, ev.prev)
        return self.inner.event(converted)

    def added(self, obj: RawObject) -> bytes:
        return self.inner.added(self.convert(obj))


def bookmark_line(res: Resource, revision: int, initial_end: bool = False) -> bytes:
    meta: RawObject = {"resourceVersion": str(revision)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    obj = {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}
    return encode({"type": "BOOKMARK", "object": obj}) + b"\n"


def error_line(status: RawObject) -> bytes:
    return encode({"type": "ERROR", "object": status}) + b"\n"


class ErrorStream(Response):
    """A watch that is over before it starts: one ERROR event (e.g. 410 Expired)."""

    def __init__(self, err: StatusError, media_type: str) -> None:
        super().__init__(error_line(err.to_status()), 200, media_type=media_type)


class _Resumed:
    """The rest of a coroutine that was started by hand and suspended at ``first``.

    ``asyncio.ensure_future(_Resumed(coro, first))`` hands it to a task, which waits on what
    it yielded and resumes it, exactly as if the task had started it (PEP 380 delegation).
    """

    def __init__(self, steps: Generator[Any, Any, None], first: Any) -> None:
        self.coro = steps
        self.first = first

    def __await__(self) -> Generator[Any, Any, None]:
        value = self.first
        while True:
            try:
                received = yield value
            except BaseException as exc:
                try:
                    value = self.coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = self.coro.send(received)
                except StopIteration:
                    return


def start_eagerly(awaitable: Awaitable[None]) -> asyncio.Future[None] | None:
    """Run ``awaitable`` now, on this stack; None if it finished, else a future for the rest."""
    steps = awaitable.__await__()
    try:
        first = steps.send(None)
    except StopIteration:
        return None
    rest = asyncio.ensure_future(_Resumed(steps, first))
    # A task cancelled before its first step never enters _Resumed: close the work here.
    rest.add_done_callback(lambda done: steps.close() if done.cancelled() else None)
    return rest


class WatchResponse(Response):
    """One client's watch: backlog first, then live events through the subscriber's sink."""

    def __init__(
        self,
        hub: WatchHub,
        res: Resource,
        subscriber: Subscriber,
        prefix: str,
        *,
        initial: list[RawObject],
        initial_revision: int,
        encoder: EventEncoder,
        media_type: str,
        bookmarks: bool,
        bookmark_interval: float,
        initial_end_bookmark: bool,
        timeout_s: float | None,
    ) -> None:
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers({"Cache-Control": "no-cache, private"})
        self.hub = hub
        self.res = res
        self.sub = subscriber
        self.prefix = prefix
        self.initial = initial
        self.initial_revision = initial_revision
        self.encoder = encoder
        self.bookmarks = bookmarks
        self.bookmark_interval = bookmark_interval
        self.initial_end_bookmark = initial_end_bookmark
        self.timeout_s = timeout_s
        self._send: Send | None = None
        self._inflight: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._send = send
        stream: asyncio.Future[None] | None = None
        listener: asyncio.Future[None] | None = None
        ended = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            stream = asyncio.ensure_future(self._stream(send))
            listener = asyncio.ensure_future(self._until_disconnect(receive))
            await asyncio.wait({stream, listener}, return_when=asyncio.FIRST_COMPLETED)
            ended = stream.done() and not stream.cancelled() and stream.exception() is None
            if ended and self._inflight is not None:
                await self._inflight
        finally:
            self.sub.sink = None
            self.hub.unsubscribe(self.prefix, self.sub)
            for task in (stream, listener, self._inflight):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif stream is not None and stream.done() and not stream.cancelled():
            error = stream.exception()
            if error is not None and not isinstance(error, OSError):
                logger.error("watch stream on %s failed", self.prefix, exc_info=error)

    @staticmethod
    async def _until_disconnect(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _write(self, send: Send, body: bytes) -> None:
        if self._inflight is not None:
            await self._inflight
        await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _stream(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s if self.timeout_s else None
        sub = self.sub
        if self.initial:
            await self._write(send, b"".join(self.encoder.added(obj) for obj in self.initial))
            self.initial = []
        if self.initial_end_bookmark:
            await self._write(send, bookmark_line(self.res, self.initial_revision, True))
        next_bookmark = loop.time() + self.bookmark_interval
        while True:
            if not sub.pending and self._inflight is None and sub.closed is None:
                sub.sink = self._deliver  # live: the broadcaster writes for us
            now = loop.time()
            waits = []
            if deadline is not None:
                if now >= deadline:
                    return
                waits.append(deadline - now)
            if self.bookmarks:
                waits.append(max(0.0, next_bookmark - now))
            try:
                batch = await sub.next_batch(min(waits) if waits else None)
            except WatchClosed as closed:
                sub.sink = None
                if closed.error is not None:
                    await self._write(send, error_line(closed.error))
                return
            sub.sink = None  # we write the backlog ourselves, in order
            if batch:
                await self._write(send, b"".join(self.encoder.event(ev) for ev in batch))
            if self.bookmarks and loop.time() >= next_bookmark:
                revision = sub.bookmark_revision()
                await self._write(send, bookmark_line(self.res, revision))
                next_bookmark = loop.time() + self.bookmark_interval

    def _deliver(self, ev: CachedEvent) -> bool:
        """The sink: write ``ev`` now; False (the event queues) while a write is pending."""
        if self._inflight is not None or self._send is None:
            return False
        try:
            line = self.encoder.event(ev)
            pending = start_eagerly(
                self._send({"type": "http.response.body", "body": line, "more_body": True})
            )
        except Exception:
            logger.exception("writing a watch event on %s failed; ending the watch", self.prefix)
            self.sub.close()
            return True
        if pending is not None:
            self._inflight = pending
            pending.add_done_callback(self._written)
        return True

    def _written(self, done: asyncio.Future[None]) -> None:
        self._inflight = None
        if not done.cancelled() and done.exception() is not None:
            self.sub.close()
        self.sub.wakeup.set()  # the stream writes what queued meanwhile, then goes live again
