"""Prometheus metrics with upstream's names, one set per app (tests run several).

Requests are counted in plain dicts (a dict lookup and two additions per request);
prometheus_client is imported only when ``/metrics`` is scraped, and the families are
built then, sample for sample as its Counter, Histogram and Gauge write them (its
import is ~20 ms of startup, and its children take a lock per increment).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

# verb, group, version, resource, subresource, scope
RequestLabels = tuple[str, str, str, str, str, str]
_LABELS = ("verb", "group", "version", "resource", "subresource", "scope", "component")
_COMPONENT = "apiserver"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0, 60.0)
_BOUNDS = (*BUCKETS, float("inf"))

REQUESTS = (
    "apiserver_request",
    "Counter of apiserver requests broken out for each verb, group, version, resource, "
    "scope, component, and HTTP response code.",
)
DURATION = (
    "apiserver_request_duration_seconds",
    "Response latency distribution in seconds for each verb, group, version, resource, "
    "subresource, scope and component.",
)
WATCHERS = (
    "apiserver_registered_watchers",
    "Number of currently registered watchers for a given resource.",
)


class _Count:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()


class _Latencies:
    __slots__ = ("buckets", "created", "total")

    def __init__(self) -> None:
        self.buckets = [0.0] * len(_BOUNDS)
        self.total = 0.0
        self.created = time.time()


class Metrics:
    def __init__(self) -> None:
        self._counts: dict[tuple[RequestLabels, int], _Count] = {}
        self._latencies: dict[RequestLabels, _Latencies] = {}

    def count(self, labels: RequestLabels, code: int) -> None:
        counted = self._counts.get((labels, code))
        if counted is None:
            counted = self._counts[(labels, code)] = _Count()
        counted.value += 1.0

    def observe(self, labels: RequestLabels, code: int, seconds: float) -> None:
        self.count(labels, code)
        latencies = self._latencies.get(labels)
        if latencies is None:
            latencies = self._latencies[labels] = _Latencies()
        latencies.buckets[bisect.bisect_left(_BOUNDS, seconds)] += 1.0
        latencies.total += seconds

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
        from prometheus_client.exposition import generate_latest

        registry = CollectorRegistry(auto_describe=True)
        registry.register(_Collector(self))
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def families(self) -> Iterator[Metric]:
        """The three families, as prometheus_client's Counter("apiserver_request"),
        Histogram("apiserver_request_duration_seconds") and Gauge(...) collect them."""
        from prometheus_client import metrics
        from prometheus_client.metrics_core import Metric
        from prometheus_client.utils import floatToGoString

        created = metrics._use_created  # PROMETHEUS_DISABLE_CREATED_SERIES
        name, help_text = REQUESTS
        family = Metric(name, help_text, "counter")
        for (labels, code), counted in list(self._counts.items()):
            series = dict(zip(_LABELS, (*labels, _COMPONENT), strict=True))
            series["code"] = str(code)
            family.add_sample(f"{name}_total", series, counted.value)
            if created:
                family.add_sample(f"{name}_created", dict(series), counted.created)
        yield family

        name, help_text = DURATION
        family = Metric(name, help_text, "histogram")
        les = [floatToGoString(bound) for bound in _BOUNDS]  # type: ignore[no-untyped-call]
        for labels, latencies in list(self._latencies.items()):
            series = dict(zip(_LABELS, (*labels, _COMPONENT), strict=True))
            running = 0.0
            for le, count in zip(les, latencies.buckets, strict=True):
                running += count
                family.add_sample(f"{name}_bucket", {**series, "le": le}, running)
            family.add_sample(f"{name}_count", dict(series), running)
            family.add_sample(f"{name}_sum", dict(series), latencies.total)
            if created:
                family.add_sample(f"{name}_created", dict(series), latencies.created)
        yield family

        name, help_text = WATCHERS
        yield Metric(name, help_text, "gauge")


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.families()
