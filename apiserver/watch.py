"""Watch fan-out: one storage watch per resource feeding every client of that resource.

A :class:`Broadcaster` per resource prefix (``/registry/services/``) reads one storage
watch and keeps a bounded history of :class:`CachedEvent` s. Each event is serialised once
(:meth:`CachedEvent.line`), whatever the number of watchers; a :class:`Subscriber` is a
client's queue with its filter (namespace, label and field selectors). A client resuming
from a revision the broadcaster's history covers is replayed from memory; an older one
gets its own storage watch (which answers 410 Expired when the store has compacted it).

Everything that touches a broadcaster's subscribers runs on the event loop without
awaiting, so "replay the history, then subscribe" is atomic with respect to new events:
none is lost or doubled.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from apiserver.encoding import encode
from apiserver.errors import expired
from apiserver.storage.interface import Compacted, Storage, StorageError, WatchEvent

logger = logging.getLogger(__name__)

RawObject = dict[str, Any]
Matcher = Callable[[RawObject], bool]

HISTORY_LIMIT = 20_000
"""Events kept per resource for resuming watches from memory."""
SUBSCRIBER_BACKLOG_LIMIT = 50_000
"""A client this far behind is cut off with a 410 (it re-lists), instead of growing forever."""
CATCH_UP_TIMEOUT = 3.0
"""How long a consistent list waits for the cache to reach the store's revision before it
reads the store instead."""


class _ReportsProgress(Protocol):
    """A store whose watch reports progress: ``progress(revision)`` once every change under
    the prefix up to ``revision`` has been handed out (the embedded store does)."""

    def watch(
        self, prefix: str, *, since: int, progress: Callable[[int], None] | None = None
    ) -> AsyncIterator[WatchEvent]: ...


def reports_progress(storage: Storage) -> bool:
    return bool(getattr(storage, "reports_watch_progress", False))


class CacheEntry:
    """One object of a list cache with its JSON computed at most once (never mutated)."""

    __slots__ = ("_json", "obj")

    def __init__(self, obj: RawObject) -> None:
        self.obj = obj
        self._json: bytes | None = None

    def json(self) -> bytes:
        if self._json is None:
            self._json = encode(self.obj)
        return self._json


def cache_key(prefix: str, obj: RawObject) -> str | None:
    """The storage key of a listed object (the registry's scheme), None if it has no name."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    namespace = meta.get("namespace")
    return f"{prefix}{namespace}/{name}" if namespace else f"{prefix}{name}"


class CachedEvent:
    """A storage event with its JSON line computed at most once."""

    __slots__ = ("_line", "key", "obj", "prev", "revision", "type")

    def __init__(
        self, type_: str, key: str, obj: RawObject, revision: int, prev: RawObject | None
    ) -> None:
        self.type = type_
        self.key = key
        self.obj = obj
        self.revision = revision
        self.prev = prev
        self._line: bytes | None = None

    @classmethod
    def from_storage(cls, ev: WatchEvent) -> CachedEvent:
        return cls(ev.type, ev.key, ev.obj, ev.revision, ev.prev)

    def line(self) -> bytes:
        if self._line is None:
            self._line = encode({"type": self.type, "object": self.obj}) + b"\n"
        return self._line

    def retyped(self, type_: str) -> CachedEvent:
        """The same change as seen through a filter (MODIFIED -> ADDED/DELETED)."""
        return CachedEvent(type_, self.key, self.obj, self.revision, self.prev)


@dataclass(slots=True)
class WatchFilter:
    """Which events a client sees: by key prefix (namespace) and by object."""

    key_prefix: str
    matches: Matcher | None = None
    selectors: tuple[str, str] | None = None
    """The label and field selectors ``matches`` was made from: watchers with the same
    prefix and selectors share one filtering of each event. None: not shared."""

    def share_key(self) -> tuple[str, str, str] | None:
        if self.matches is None:
            return (self.key_prefix, "", "")
        if self.selectors is None:
            return None
        return (self.key_prefix, *self.selectors)

    def apply(self, ev: CachedEvent) -> CachedEvent | None:
        if not ev.key.startswith(self.key_prefix):
            return None
        if self.matches is None:
            return ev
        now = self.matches(ev.obj)
        if ev.type != "MODIFIED":
            return ev if now else None
        before = self.matches(ev.prev) if ev.prev is not None else now
        if now and before:
            return ev
        if now:
            return ev.retyped("ADDED")
        if before:
            return ev.retyped("DELETED")
        return None


class WatchClosed(Exception):
    """A subscriber's stream ended; ``error`` is the Status to send, if any."""

    def __init__(self, error: dict[str, Any] | None = None) -> None:
        super().__init__("watch closed")
        self.error = error


@dataclass(eq=False)
class Subscriber:
    """One client's queue of events strictly after ``since`` that pass its filter."""

    since: int
    filter: WatchFilter
    pending: deque[CachedEvent] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    closed: WatchClosed | None = None
    last_revision: int = 0
    """The revision of the last event handed out."""
    sink: Callable[[CachedEvent], bool] | None = None
    """Takes events as they come (a live HTTP stream); False means "queue it for now"."""
    seen_revision: int = 0
    """The revision of the last event offered to this subscriber (matching or not)."""

    def __post_init__(self) -> None:
        self.last_revision = self.seen_revision = self.since

    def bookmark_revision(self) -> int:
        """A revision the client may resume from without missing an event."""
        return self.last_revision if self.pending else max(self.seen_revision, self.last_revision)

    def push(self, ev: CachedEvent, shared: dict[object, CachedEvent | None] | None = None) -> None:
        """Offer ``ev``; ``shared`` holds the filterings of ``ev`` already made for other
        subscribers with the same filter (one event to many watchers filters once)."""
        if ev.revision <= self.since or self.closed is not None:
            return
        if ev.revision > self.seen_revision:
            self.seen_revision = ev.revision
        key = self.filter.share_key() if shared is not None else None
        if key is None or shared is None:
            seen = self.filter.apply(ev)
        elif key in shared:
            seen = shared[key]
        else:
            seen = shared[key] = self.filter.apply(ev)
        if seen is None:
            return
        if self.sink is not None and not self.pending and self.sink(seen):
            self.last_revision = seen.revision
            return
        if len(self.pending) >= SUBSCRIBER_BACKLOG_LIMIT:
            self.close(
                expired(f"watch client fell {len(self.pending)} events behind; re-list").to_status()
            )
            return
        self.pending.append(seen)
        self.wakeup.set()

    def close(self, error: dict[str, Any] | None = None) -> None:
        if self.closed is None:
            self.closed = WatchClosed(error)
            self.wakeup.set()

    async def next_batch(self, wait_at_most: float | None) -> list[CachedEvent]:
        """Pending events (none after ``wait_at_most`` s); WatchClosed once closed and drained."""
        if not self.pending:
            if self.closed is not None:
                raise self.closed
            self.wakeup.clear()
            if wait_at_most is None:
                await self.wakeup.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), wait_at_most)
        batch = list(self.pending)
        self.pending.clear()
        if batch:
            self.last_revision = batch[-1].revision
        elif self.closed is not None:
            raise self.closed
        return batch


class Broadcaster:
    """One storage watch on ``prefix``, its history, and its subscribers."""

    def __init__(self, storage: Storage, prefix: str, history_limit: int = HISTORY_LIMIT) -> None:
        self.storage = storage
        self.prefix = prefix
        self.history_limit = history_limit
        self.history: list[CachedEvent] = []
        self.horizon = 0
        """Every event with a revision above this one is in ``history``."""
        self.last_revision = 0
        self.subscribers: set[Subscriber] = set()
        self.done = False
        self._task: asyncio.Task[None] | None = None
        self.stream_revision = 0
        """Every change under the prefix up to this store revision has been published here
        (the last event's revision, or more when the store reports progress)."""
        self._catch_up: list[tuple[int, asyncio.Future[None]]] = []
        self.cache: dict[str, CacheEntry] | None = None
        """The current objects under the prefix by key (upstream's watch cache), once loaded."""
        self.cache_revision = 0
        """The store revision the cache's content is the state at."""
        self._sorted_keys: list[str] | None = None
        self._cache_load: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self.horizon = self.last_revision = await self.storage.current_revision()
        self.stream_revision = self.horizon
        self._task = asyncio.create_task(self._run(), name=f"watch-fanout {self.prefix}")

    async def _run(self) -> None:
        error: dict[str, Any] | None = None
        try:
            if reports_progress(self.storage):
                events = cast(_ReportsProgress, self.storage).watch(
                    self.prefix, since=self.horizon, progress=self._progress
                )
            else:
                events = self.storage.watch(self.prefix, since=self.horizon)
            async for ev in events:
                self._publish(CachedEvent.from_storage(ev))
        except StorageError as exc:
            logger.warning("watch on %s ended: %s", self.prefix, exc)
            reason = f"the watch on the store ended ({type(exc).__name__}); re-watch"
            error = expired(reason).to_status()
        finally:
            self.done = True
            self.cache = None
            for _revision, waiter in self._catch_up:
                if not waiter.done():
                    waiter.set_result(None)
            self._catch_up.clear()
            for sub in list(self.subscribers):
                sub.close(error)
            self.subscribers.clear()

    def _progress(self, revision: int) -> None:
        """The store says every change under the prefix up to ``revision`` was handed out."""
        if revision > self.stream_revision:
            self._advance(revision)

    def _advance(self, revision: int) -> None:
        self.stream_revision = revision
        if self.cache is not None and revision > self.cache_revision:
            self.cache_revision = revision
        if self._catch_up:
            waiting = []
            for wanted, waiter in self._catch_up:
                if wanted <= revision:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    waiting.append((wanted, waiter))
            self._catch_up = waiting

    def _apply(self, ev: CachedEvent) -> None:
        cache = self.cache
        assert cache is not None
        key = ev.key
        if ev.type == "DELETED":
            if cache.pop(key, None) is not None:
                self._sorted_keys = None
            return
        if key not in cache:
            self._sorted_keys = None
        cache[key] = CacheEntry(ev.obj)

    def _publish(self, ev: CachedEvent) -> None:
        self.history.append(ev)
        self.last_revision = ev.revision
        if self.cache is not None and ev.revision > self.cache_revision:
            self._apply(ev)
            self.cache_revision = ev.revision
        if ev.revision > self.stream_revision:
            self._advance(ev.revision)
        if len(self.history) > 2 * self.history_limit:
            cut = len(self.history) - self.history_limit
            self.horizon = self.history[cut - 1].revision
            del self.history[:cut]
        shared: dict[object, CachedEvent | None] = {}
        for sub in list(self.subscribers):
            sub.push(ev, shared)

    def subscribe(self, since: int, filter_: WatchFilter) -> Subscriber | None:
        """A subscriber replayed from history, or None when history does not reach ``since``."""
        if self.done or since < self.horizon:
            return None
        sub = Subscriber(since, filter_)
        start = bisect.bisect_right(self.history, since, key=lambda e: e.revision)
        for ev in self.history[start:]:
            sub.push(ev)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    # -- the list cache ------------------------------------------------------------------

    async def ensure_cache(self) -> bool:
        """Load the list cache (once; concurrent callers share the load). False if it cannot."""
        if self.cache is not None:
            return True
        if self.done:
            return False
        if self._cache_load is None or self._cache_load.done():
            self._cache_load = asyncio.ensure_future(self._load_cache())
        await asyncio.shield(self._cache_load)
        return self.cache is not None

    async def _load_cache(self) -> None:
        for _attempt in range(3):
            page = await self.storage.list(self.prefix)
            if self.done:
                return
            if page.revision < self.horizon:
                continue  # history was trimmed meanwhile: it no longer bridges the list
            cache: dict[str, CacheEntry] = {}
            for obj in page.items:
                key = cache_key(self.prefix, obj)
                if key is None or key in cache:
                    logger.warning("no list cache for %s: an object without a key", self.prefix)
                    return
                cache[key] = CacheEntry(obj)
            self.cache = cache
            self._sorted_keys = list(cache)  # the store lists in key order
            self.cache_revision = page.revision
            start = bisect.bisect_right(self.history, page.revision, key=lambda e: e.revision)
            for ev in self.history[start:]:
                self.cache_revision = ev.revision
                self._apply(ev)
            if self.stream_revision > self.cache_revision:
                self.cache_revision = self.stream_revision
            logger.info(
                "list cache for %s: %d objects at revision %d",
                self.prefix,
                len(cache),
                self.cache_revision,
            )
            return

    async def caught_up(self, revision: int) -> bool:
        """Wait until every change up to ``revision`` is in the cache (False after
        CATCH_UP_TIMEOUT s, or when the store does not report progress)."""
        if self.cache_revision >= revision:
            return True
        if not reports_progress(self.storage) or self.done:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._catch_up.append((revision, waiter))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), CATCH_UP_TIMEOUT)
        return self.cache is not None and self.cache_revision >= revision

    def cached(self, key_prefix: str, matches: Matcher | None) -> list[CacheEntry]:
        """The cached objects under ``key_prefix`` passing ``matches``, in key order."""
        cache = self.cache
        assert cache is not None
        keys = self._sorted_keys
        if keys is None:
            keys = self._sorted_keys = sorted(cache)
        if key_prefix != self.prefix:
            lo = bisect.bisect_left(keys, key_prefix)
            hi = bisect.bisect_left(keys, key_prefix + "\U0010ffff")
            keys = keys[lo:hi]
        entries = [cache[k] for k in keys]
        if matches is None:
            return entries
        return [e for e in entries if matches(e.obj)]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sub in list(self.subscribers):
            sub.close()
        self.subscribers.clear()
        self.done = True


class WatchHub:
    """The broadcasters of one apiserver, created on first watch of each resource."""

    def __init__(self, storage: Storage, history_limit: int = HISTORY_LIMIT) -> None:
        self.storage = storage
        self.history_limit = history_limit
        self._broadcasters: dict[str, Broadcaster] = {}
        self._lock = asyncio.Lock()
        self._dedicated: dict[Subscriber, asyncio.Task[None]] = {}
        self.closed = False

    async def broadcaster(self, prefix: str) -> Broadcaster:
        found = self._broadcasters.get(prefix)
        if found is not None and not found.done:
            return found
        async with self._lock:
            found = self._broadcasters.get(prefix)
            if found is None or found.done:
                found = Broadcaster(self.storage, prefix, self.history_limit)
                await found.start()
                self._broadcasters[prefix] = found
            return found

    async def subscribe(self, prefix: str, since: int, filter_: WatchFilter) -> Subscriber:
        """Events under ``prefix`` after ``since``, shared when possible, else dedicated."""
        if self.closed:
            ended = Subscriber(since, filter_)
            ended.close()
            return ended
        bc = await self.broadcaster(prefix)
        shared = bc.subscribe(since, filter_)
        if shared is not None:
            return shared
        return self._dedicated_watch(prefix, since, filter_)

    def _dedicated_watch(self, prefix: str, since: int, filter_: WatchFilter) -> Subscriber:
        sub = Subscriber(since, filter_)

        async def pump() -> None:
            error: dict[str, Any] | None = None
            try:
                async for ev in self.storage.watch(prefix, since=since):
                    if sub.closed is not None:
                        return
                    sub.push(CachedEvent.from_storage(ev))
            except Compacted as exc:
                error = expired(
                    f"too old resource version: {exc.requested} ({exc.compacted})"
                ).to_status()
            except StorageError as exc:
                logger.warning("dedicated watch on %s ended: %s", prefix, exc)
                error = expired("the watch on the store ended; re-watch").to_status()
            finally:
                sub.close(error)

        task = asyncio.create_task(pump(), name=f"watch {prefix} since {since}")
        self._dedicated[sub] = task
        task.add_done_callback(lambda _t: self._dedicated.pop(sub, None))
        return sub

    def unsubscribe(self, prefix: str, sub: Subscriber) -> None:
        bc = self._broadcasters.get(prefix)
        if bc is not None:
            bc.unsubscribe(sub)
        task = self._dedicated.pop(sub, None)
        if task is not None:
            sub.close()
            task.cancel()

    async def cached_list(
        self, prefix: str, key_prefix: str, matches: Matcher | None, *, consistent: bool
    ) -> tuple[list[CacheEntry], int] | None:
        """The objects under ``key_prefix`` from the watch cache and the revision they are
        the state at, or None when the cache cannot answer (the caller reads the store).

        ``consistent``: only a state at least as new as the store's current revision
        (a list with no resourceVersion); otherwise any recent state (resourceVersion "0").
        """
        if self.closed:
            return None
        bc = await self.broadcaster(prefix)
        if not await bc.ensure_cache():
            return None
        if consistent or reports_progress(self.storage):
            current = await self.storage.current_revision()
            if not await bc.caught_up(current):
                return None
        if bc.cache is None:
            return None
        return bc.cached(key_prefix, matches), bc.cache_revision

    def last_revision(self, prefix: str) -> int:
        bc = self._broadcasters.get(prefix)
        return bc.last_revision if bc is not None else 0

    def watcher_count(self) -> int:
        return sum(len(b.subscribers) for b in self._broadcasters.values()) + len(self._dedicated)

    def end_all(self) -> None:
        """End every open watch now (server shutdown): clients see a clean end of stream."""
        self.closed = True
        for bc in self._broadcasters.values():
            for sub in list(bc.subscribers):
                sub.close()
        for sub in list(self._dedicated):
            sub.close()

    async def close(self) -> None:
        self.end_all()
        for bc in list(self._broadcasters.values()):
            await bc.close()
        self._broadcasters.clear()
        tasks = list(self._dedicated.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
