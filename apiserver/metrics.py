"""Prometheus metrics with upstream's names, one registry per app (tests run several)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

# verb, group, version, resource, subresource, scope
RequestLabels = tuple[str, str, str, str, str, str]
_LABELS = ("verb", "group", "version", "resource", "subresource", "scope", "component")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, version, resource, "
            "scope, component, and HTTP response code.",
            (*_LABELS, "code"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, "
            "subresource, scope and component.",
            _LABELS,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0, 60.0),
            registry=self.registry,
        )
        self.watchers = Gauge(
            "apiserver_registered_watchers",
            "Number of currently registered watchers for a given resource.",
            ("group", "version", "kind"),
            registry=self.registry,
        )

        self._counters: dict[tuple[RequestLabels, int], Counter] = {}
        self._histograms: dict[RequestLabels, Histogram] = {}

    def count(self, labels: RequestLabels, code: int) -> None:
        counter = self._counters.get((labels, code))
        if counter is None:
            counter = self.requests.labels(*labels, "apiserver", str(code))
            self._counters[(labels, code)] = counter
        counter.inc()

    def observe(self, labels: RequestLabels, code: int, seconds: float) -> None:
        self.count(labels, code)
        histogram = self._histograms.get(labels)
        if histogram is None:
            histogram = self._histograms[labels] = self.duration.labels(*labels, "apiserver")
        histogram.observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
