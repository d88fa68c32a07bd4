"""/metrics is what prometheus_client's own Counter, Histogram and Gauge would write."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from apiserver.metrics import _LABELS, BUCKETS, DURATION, REQUESTS, WATCHERS, Metrics

OBSERVED = [
    (("POST", "", "v1", "services", "", "namespace"), 201, 0.0012),
    (("POST", "", "v1", "services", "", "namespace"), 201, 0.005),
    (("POST", "", "v1", "services", "", "namespace"), 409, 0.3),
    (("GET", "discovery.k8s.io", "v1", "endpointslices", "", "cluster"), 200, 0.07),
    (("PUT", "", "v1", "services", "status", "resource"), 200, 75.0),
    (("POST", "", "v1", "services", "", "namespace"), 201, 0.02),
]
COUNTED = [(("WATCH", "", "v1", "pods", "", "cluster"), 200)]


def reference(observed: bool = True) -> bytes:
    registry = CollectorRegistry(auto_describe=True)
    requests = Counter(*REQUESTS, (*_LABELS, "code"), registry=registry)
    duration = Histogram(*DURATION, _LABELS, buckets=BUCKETS, registry=registry)
    Gauge(*WATCHERS, ("group", "version", "kind"), registry=registry)
    for labels, code, seconds in OBSERVED if observed else []:
        requests.labels(*labels, "apiserver", str(code)).inc()
        duration.labels(*labels, "apiserver").observe(seconds)
    for labels, code in COUNTED if observed else []:
        requests.labels(*labels, "apiserver", str(code)).inc()
    return generate_latest(registry)


def without_creation_times(exposition: bytes) -> str:
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", exposition.decode())


def test_the_exposition_is_prometheus_clients() -> None:
    metrics = Metrics()
    for labels, code, seconds in OBSERVED:
        metrics.observe(labels, code, seconds)
    for labels, code in COUNTED:
        metrics.count(labels, code)
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=")
    assert without_creation_times(body) == without_creation_times(reference())
    assert 'scope="namespace",subresource="",verb="POST",version="v1"} 3.0' in body.decode()


def test_an_unused_apiserver_exposes_the_families_without_series() -> None:
    body, _ = Metrics().exposition()
    assert body == reference(observed=False)
    assert body.decode().count("# TYPE") == 3
