"""The proxy's control loop on the fake backend, fed by an in-memory event source."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from minik8s.client import SYNCED, NotFound, RawObject, WatchEvent
from proxy.desired import ProxyConfig
from proxy.fake import FakeBackend
from proxy.ipvs import IpvsError
from proxy.runner import ProxyRunner
from proxy.state import (
    DestinationSpec,
    IpvsState,
    RealServer,
    Service,
    ServiceSpec,
    VirtualServer,
)

CONFIG = ProxyConfig.from_strings(["10.96.0.0/12"])
VS = VirtualServer("10.96.0.10", 80, "TCP")
RS1 = RealServer("10.2.16.5", 12345)


class EventSource:
    """Services and EndpointSlices as queues of watch events."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[WatchEvent]] = {
            "services": asyncio.Queue(),
            "endpointslices": asyncio.Queue(),
        }

    async def list_watch(self, api_version: str, plural: str) -> AsyncIterator[WatchEvent]:
        queue = self.queues[plural]
        while True:
            yield await queue.get()

    async def list(self, api_version: str, plural: str) -> tuple[list[RawObject], str]:
        return [], "1"

    def emit(self, plural: str, event_type: str, obj: RawObject | None = None) -> None:
        self.queues[plural].put_nowait(WatchEvent(event_type, obj or {}))

    def synced(self) -> None:
        self.emit("services", SYNCED)
        self.emit("endpointslices", SYNCED)


def service(name: str = "web", ip: str = "10.96.0.10", port: int = 80) -> RawObject:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": port}]},
    }


def endpoint_slice(*ips: str, name: str = "web-a", trigger: datetime | None = None) -> RawObject:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "default",
        "labels": {"kubernetes.io/service-name": "web"},
    }
    if trigger is not None:
        meta["annotations"] = {
            "endpoints.kubernetes.io/last-change-trigger-time": trigger.isoformat()
        }
    return {
        "metadata": meta,
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
        "ports": [{"name": "http", "port": 12345, "protocol": "TCP"}],
    }


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the deadline")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def running(
    backend: FakeBackend, **options: float
) -> AsyncIterator[tuple[ProxyRunner, EventSource]]:
    source = EventSource()
    options.setdefault("min_sync_period", 0.0)
    runner = ProxyRunner(source, lambda: backend, CONFIG, **options)
    task = asyncio.create_task(runner.run())
    try:
        yield runner, source
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def programmed(backend: FakeBackend) -> Callable[[], bool]:
    return lambda: VS in backend.state.services and "10.96.0.10" in backend.state.addresses


async def test_nothing_is_written_until_both_lists_are_complete() -> None:
    backend = FakeBackend()
    async with running(backend) as (runner, source):
        source.emit("services", "ADDED", service())
        source.emit("services", SYNCED)
        await until(lambda: runner.tracker.service_count() == 1)
        for _ in range(20):
            await asyncio.sleep(0)
        assert runner.sync_count == 0 and backend.calls == 0
        source.emit("endpointslices", SYNCED)
        await until(programmed(backend))
    assert backend.state.services[VS] == Service(ServiceSpec("rr"), {})


async def test_endpoint_changes_after_the_first_sync_are_programmed() -> None:
    backend = FakeBackend()
    async with running(backend) as (runner, source):
        source.emit("services", "ADDED", service())
        source.synced()
        await until(programmed(backend))
        source.emit("endpointslices", "ADDED", endpoint_slice("10.2.16.5"))
        await until(lambda: RS1 in backend.state.services[VS].destinations)
        assert backend.state.services[VS].destinations[RS1] == DestinationSpec(1, "masq")
        source.emit("services", "DELETED", service())
        await until(lambda: not backend.state.services and not backend.state.addresses)
    assert runner.full_sync_count == 1  # the rest were partial syncs


async def test_a_burst_of_changes_is_batched_into_few_syncs() -> None:
    backend = FakeBackend()
    async with running(backend, min_sync_period=0.3) as (runner, source):
        source.synced()
        await until(lambda: runner.sync_count == 1)
        for i in range(50):
            source.emit("services", "ADDED", service(f"s{i}", ip=f"10.96.1.{i}"))
        await until(lambda: len(backend.state.services) == 50)
        assert runner.sync_count <= 3


async def test_a_rule_deleted_by_hand_comes_back_at_the_next_full_resync() -> None:
    backend = FakeBackend()
    # The fake is changed from this thread while the runner may be reading it from its
    # own: a sync that trips over that is retried soon.
    async with running(backend, sync_period=0.2, retry_period=0.05) as (runner, source):
        source.emit("services", "ADDED", service())
        source.emit("endpointslices", "ADDED", endpoint_slice("10.2.16.5"))
        source.synced()
        await until(lambda: runner.sync_count >= 1 and programmed(backend)())
        backend.delete_destination(VS, RS1)  # drift, behind the proxy's back
        backend.unbind_address("10.96.0.10")
        await until(lambda: RS1 in backend.state.services[VS].destinations)
        await until(lambda: "10.96.0.10" in backend.state.addresses)
    assert runner.full_sync_count >= 2


async def test_foreign_ipvs_services_and_addresses_are_left_alone() -> None:
    foreign = VirtualServer("192.168.5.5", 443, "TCP")
    backend = FakeBackend(IpvsState({foreign: Service(ServiceSpec("wlc"))}, {"192.168.5.5"}))
    async with running(backend) as (runner, source):
        source.synced()
        await until(lambda: runner.sync_count >= 1)
    assert foreign in backend.state.services
    assert backend.state.addresses == {"192.168.5.5"}


class FlakyBackend(FakeBackend):
    """Fails the first ``failures`` service additions with EPERM."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def add_service(self, vs: VirtualServer, spec: ServiceSpec) -> None:
        if self.failures:
            self.failures -= 1
            raise IpvsError(f"add IPVS service {vs}: Operation not permitted", errno.EPERM)
        super().add_service(vs, spec)


def sample(runner: ProxyRunner, name: str, **labels: str) -> float:
    value = runner.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_a_failed_operation_is_counted_logged_and_retried_never_reported_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = FlakyBackend(failures=1)
    async with running(backend, retry_period=0.05) as (runner, source):
        source.emit("services", "ADDED", service())
        source.synced()
        await until(lambda: runner.last_error is not None)
        assert VS not in backend.state.services
        await until(programmed(backend))
        await until(lambda: runner.last_error is None)
    failed = sample(
        runner,
        "kubeproxy_sync_proxy_rules_operations_total",
        operation="AddService",
        result="error",
    )
    assert failed == 1
    assert sample(runner, "kubeproxy_sync_proxy_rules_total", kind="full", result="error") == 1
    assert any("FAILED" in r.message and r.levelname == "ERROR" for r in caplog.records)
    assert any("Operation not permitted" in r.getMessage() for r in caplog.records)


async def test_sync_and_network_programming_durations_are_observed() -> None:
    backend = FakeBackend()
    async with running(backend) as (runner, source):
        source.emit("services", "ADDED", service())
        source.synced()
        await until(programmed(backend))
        trigger = datetime.now(UTC) - timedelta(seconds=2)
        source.emit("endpointslices", "ADDED", endpoint_slice("10.2.16.5", trigger=trigger))
        await until(
            lambda: sample(runner, "kubeproxy_network_programming_duration_seconds_count") == 1
        )
    assert sample(runner, "kubeproxy_network_programming_duration_seconds_sum") >= 2.0
    assert sample(runner, "kubeproxy_sync_proxy_rules_duration_seconds_count") >= 2


class RefusingSource(EventSource):
    async def list_watch(self, api_version: str, plural: str) -> AsyncIterator[WatchEvent]:
        if plural == "endpointslices":
            raise NotFound({"code": 404, "reason": "NotFound", "message": "no endpointslices"})
        async for event in super().list_watch(api_version, plural):
            yield event


async def test_an_api_refusal_ends_the_runner_with_that_error_itself() -> None:
    runner = ProxyRunner(RefusingSource(), FakeBackend, CONFIG)
    with pytest.raises(NotFound):
        await runner.run()


async def test_a_gone_endpoint_drains_then_is_deleted_at_a_resync_without_connections() -> None:
    rs2 = RealServer("10.2.16.6", 12345)
    backend = FakeBackend()
    async with running(backend, sync_period=0.2, retry_period=0.05) as (runner, source):
        source.emit("services", "ADDED", service())
        source.emit("endpointslices", "ADDED", endpoint_slice("10.2.16.5", "10.2.16.6"))
        source.synced()
        await until(
            lambda: rs2 in backend.state.services.get(VS, Service(ServiceSpec())).destinations
        )
        backend.state.connections[VS, rs2] = 2  # someone is talking to it
        await until(lambda: runner.full_sync_count >= 2)  # the kernel read saw them
        source.emit("endpointslices", "MODIFIED", endpoint_slice("10.2.16.5"))
        await until(lambda: backend.state.services[VS].destinations.get(rs2) == (0, "masq"))
        backend.state.connections.clear()  # they hung up
        await until(lambda: rs2 not in backend.state.services[VS].destinations)
    assert RS1 in backend.state.services[VS].destinations
