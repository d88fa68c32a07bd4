"""The proxy's control loop: watch Services and EndpointSlices, keep IPVS in step.

- Two informers (``ApiClient.list_watch``) feed a :class:`~proxy.desired.DesiredTracker`.
- Nothing is written before *both* initial lists are complete: a restarted proxy never
  wipes the kernel from a partial view.
- The first sync and every ``sync_period`` is a *full* sync: read IPVS and kube-ipvs0
  back from the kernel, plan everything, apply. That repairs drift (a rule deleted by
  hand comes back).
- In between, *partial* syncs plan only what the events touched, against an in-memory
  model of the kernel (the last read plus what was applied since): the cost follows the
  change, not the number of services.
- Syncs are at least ``min_sync_period`` apart; events arriving meanwhile are batched.
- A failed operation is logged as a failure, counted, and retried by a full sync after
  ``retry_period``; it is never reported as done.

Backend calls (blocking netlink) run on one dedicated thread; the plan is computed on the
event loop, where the tracker lives, so the two never race.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from minik8s.client import SYNCED, RawObject, WatchEvent
from proxy.desired import DesiredTracker, ProxyConfig, desired_state, trigger_time
from proxy.ipvs import IpvsBackend
from proxy.metrics import ProxyMetrics
from proxy.plan import ApplyError, Op, apply, plan, record
from proxy.state import IpvsState, Touched

logger = logging.getLogger(__name__)

T = TypeVar("T")

SERVICES = ("v1", "services")
ENDPOINT_SLICES = ("discovery.k8s.io/v1", "endpointslices")


class WatchSource(Protocol):
    """What the runner needs of the API client (``minik8s.client.ApiClient`` is one)."""

    def list_watch(self, api_version: str, plural: str) -> AsyncIterator[WatchEvent]: ...

    async def list(self, api_version: str, plural: str) -> tuple[list[RawObject], str]: ...


class ProxyRunner:
    def __init__(
        self,
        api: WatchSource,
        backend_factory: Callable[[], IpvsBackend],
        config: ProxyConfig,
        *,
        min_sync_period: float = 1.0,
        sync_period: float = 30.0,
        retry_period: float = 5.0,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self.api = api
        self.config = config
        self.min_sync_period = min_sync_period
        self.sync_period = sync_period
        self.retry_period = retry_period
        self.metrics = metrics or ProxyMetrics()
        self.tracker = DesiredTracker(config)
        self._backend_factory = backend_factory
        self._backend: IpvsBackend | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipvs")
        self._model: IpvsState | None = None  # the kernel as last read, plus what we applied
        self._wake = asyncio.Event()
        self._lists_synced: dict[str, bool] = {"services": False, "endpointslices": False}
        self._both_synced = asyncio.Event()
        self._pending_triggers: list[datetime] = []
        self._full_due = 0.0
        #: Counts completed syncs (full and partial); tests poll it.
        self.sync_count = 0
        self.full_sync_count = 0
        self.last_error: Exception | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run until cancelled."""
        try:
            self._backend = await self._in_backend_thread(self._backend_factory)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch(*SERVICES, "services"))
                group.create_task(self._watch(*ENDPOINT_SLICES, "endpointslices"))
                group.create_task(self._sync_loop())
        except BaseExceptionGroup as group:
            # One task failed (the API refused a list, say): raise that error itself,
            # so that callers can tell it from the others.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            await self._close_backend()

    async def _close_backend(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            await asyncio.shield(self._in_backend_thread(backend.close))
        self._executor.shutdown(wait=False)

    async def _in_backend_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def request_full_sync(self) -> None:
        """Make the next sync a full one (as the periodic resync does), now."""
        self._full_due = 0.0
        self._wake.set()

    # ------------------------------------------------------------------ informers

    async def _watch(self, api_version: str, plural: str, name: str) -> None:
        is_slices = plural == "endpointslices"
        async for event in self.api.list_watch(api_version, plural):
            if event.type == SYNCED:
                if not self._lists_synced[name]:
                    logger.info("initial list of %s complete", name)
                self._lists_synced[name] = True
                if all(self._lists_synced.values()):
                    self._both_synced.set()
                self._wake.set()
                continue
            obj = event.object
            if is_slices:
                if event.type == "DELETED":
                    self.tracker.delete_slice(obj)
                else:
                    self.tracker.upsert_slice(obj)
                    moment = trigger_time(obj)
                    if moment is not None and self._both_synced.is_set():
                        self._pending_triggers.append(moment)
            elif event.type == "DELETED":
                self.tracker.delete_service(obj)
            else:
                self.tracker.upsert_service(obj)
            self._wake.set()

    # ------------------------------------------------------------------ syncing

    async def _sync_loop(self) -> None:
        await self._both_synced.wait()
        logger.info("services and endpoint slices listed: programming IPVS")
        last_start = -float("inf")
        while True:
            now = time.monotonic()
            if now < self._full_due and not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), self._full_due - now)
                except TimeoutError:
                    pass
            pause = last_start + self.min_sync_period - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)  # batch the burst: rate-limit syncs
            self._wake.clear()
            last_start = time.monotonic()
            full = self._model is None or last_start >= self._full_due
            ok = await self.sync(full=full)
            if full or not ok:
                delay = self.sync_period if ok else self.retry_period
                self._full_due = time.monotonic() + delay

    async def sync(self, *, full: bool) -> bool:
        """One sync; True when every operation succeeded."""
        backend = self._backend
        assert backend is not None, "sync() before run() opened the backend"
        kind = "full" if full else "partial"
        started = time.perf_counter()
        triggers, self._pending_triggers = self._pending_triggers, []
        ops: list[Op] = []
        try:
            if full or self._model is None:
                await self._in_backend_thread(backend.ensure_node_setup)
                actual = await self._in_backend_thread(backend.read_state)
                self.tracker.take_touched()  # a full plan covers everything
                self._model = actual
                ops = plan(self.tracker.state, actual, self.config.owns)
            else:
                touched: Touched = self.tracker.take_touched()
                if not touched:
                    return True
                ops = plan(self.tracker.state, self._model, self.config.owns, touched)
            if ops:
                applied = await self._in_backend_thread(apply, ops, backend)
                record(self._model, applied)
                self._count(applied, "ok")
                for op in applied[:50]:
                    logger.debug("applied: %s", op)
        except ApplyError as exc:
            if self._model is not None:
                record(self._model, exc.applied)
            self._count(exc.applied, "ok")
            self._count([op for op, _ in exc.failed], "error")
            self._failed(kind, exc, len(ops), triggers)
            for op, error in exc.failed[:10]:
                logger.warning("IPVS operation failed: %s: %s", op, error)
            return False
        except Exception as exc:  # an IpvsError reading the kernel, say: counted, retried
            self._failed(kind, exc, len(ops), triggers)
            return False
        elapsed = time.perf_counter() - started
        self.metrics.sync_duration.observe(elapsed)
        self.metrics.syncs.labels(kind, "ok").inc()
        self.metrics.last_sync.set_to_current_time()
        self.metrics.virtual_servers.set(len(self.tracker.state.services))
        now = datetime.now(UTC)
        for moment in triggers:
            self.metrics.network_programming.observe(max(0.0, (now - moment).total_seconds()))
        self.sync_count += 1
        self.full_sync_count += full
        self.last_error = None
        log = logger.info if ops else logger.debug
        log(
            "%s sync: %d operations applied in %.1f ms (%d virtual servers wanted)",
            kind,
            len(ops),
            elapsed * 1000,
            len(self.tracker.state.services),
        )
        return True

    def _failed(self, kind: str, exc: Exception, planned: int, triggers: list[datetime]) -> None:
        self.metrics.syncs.labels(kind, "error").inc()
        self._pending_triggers[:0] = triggers  # observed once programming succeeds
        self._model = None  # re-read the kernel on the retry
        self.last_error = exc
        logger.error(
            "%s sync FAILED (%d operations planned): %s; retrying with a full sync in %.1fs",
            kind,
            planned,
            exc,
            self.retry_period,
        )

    def _count(self, ops: list[Op], result: str) -> None:
        for op in ops:
            self.metrics.operations.labels(type(op).__name__, result).inc()


async def dry_run(
    api: WatchSource, config: ProxyConfig, backend_factory: Callable[[], IpvsBackend] | None
) -> tuple[list[Op], str]:
    """The plan the proxy would apply now, and where the actual state came from."""
    services, _ = await api.list(*SERVICES)
    slices, _ = await api.list(*ENDPOINT_SLICES)
    desired = desired_state(services, slices, config)
    actual = IpvsState()
    source = "an empty kernel (no backend)"
    if backend_factory is not None:

        def read() -> IpvsState:
            backend = backend_factory()
            try:
                return backend.read_state()
            finally:
                backend.close()

        try:
            actual = await asyncio.to_thread(read)
            source = "the kernel"
        except Exception as exc:  # no IPVS / not root: plan against an empty state
            source = f"an empty kernel (could not read IPVS: {exc})"
    return plan(desired, actual, config.owns), source
