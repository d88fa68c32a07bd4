"""The proxy's Prometheus metrics (names as kube-proxy's where kube-proxy has one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# kube-proxy: metrics.SyncProxyRulesLatency buckets (1 ms .. ~16 s, exponential).
SYNC_BUCKETS = tuple(0.001 * 2**i for i in range(15))
# kube-proxy: metrics.NetworkProgrammingLatency buckets (0.25 s .. 5 min).
PROGRAMMING_BUCKETS = (
    0.25,
    0.5,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    25,
    30,
    45,
    60,
    120,
    180,
    240,
    300,
)


class ProxyMetrics:
    """One registry per proxy (tests run several side by side)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.sync_duration = Histogram(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds (plan + apply, and the kernel read of a full sync)",
            buckets=SYNC_BUCKETS,
            registry=self.registry,
        )
        self.network_programming = Histogram(
            "kubeproxy_network_programming_duration_seconds",
            "From an endpoints change (the EndpointSlice's last-change-trigger-time) "
            "to its IPVS rules being programmed",
            buckets=PROGRAMMING_BUCKETS,
            registry=self.registry,
        )
        self.syncs = Counter(
            "kubeproxy_sync_proxy_rules_total",
            "Syncs performed, by kind (full: read back from the kernel; partial: changes only)",
            ["kind", "result"],
            registry=self.registry,
        )
        self.operations = Counter(
            "kubeproxy_sync_proxy_rules_operations_total",
            "IPVS and address operations performed, by result",
            ["operation", "result"],
            registry=self.registry,
        )
        self.last_sync = Gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time a sync of the rules succeeded",
            registry=self.registry,
        )
        self.virtual_servers = Gauge(
            "kubeproxy_ipvs_virtual_servers",
            "IPVS virtual servers the proxy wants programmed",
            registry=self.registry,
        )
