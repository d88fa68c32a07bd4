"""One strategy per built-in kind; ``register_builtins`` puts them in the strategy registry."""

from __future__ import annotations

from apiserver.strategies.endpoints import EndpointsStrategy
from apiserver.strategies.endpointslice import EndpointSliceStrategy
from apiserver.strategies.ipaddress import IPAddressStrategy
from apiserver.strategies.namespace import NamespaceStrategy
from apiserver.strategies.node import NodeStrategy
from apiserver.strategies.pod import PodStrategy
from apiserver.strategies.service import ServiceStrategy
from apiserver.strategies.small import ConfigMapStrategy, EventStrategy, LeaseStrategy
from apiserver.strategy import register_strategy


def register_builtins() -> None:
    register_strategy("", "Namespace", NamespaceStrategy())
    register_strategy("", "Pod", PodStrategy())
    register_strategy("", "Service", ServiceStrategy())
    register_strategy("", "Endpoints", EndpointsStrategy())
    register_strategy("", "Event", EventStrategy())
    register_strategy("", "Node", NodeStrategy())
    register_strategy("", "ConfigMap", ConfigMapStrategy())
    register_strategy("discovery.k8s.io", "EndpointSlice", EndpointSliceStrategy())
    register_strategy("networking.k8s.io", "IPAddress", IPAddressStrategy())
    register_strategy("coordination.k8s.io", "Lease", LeaseStrategy())


__all__ = [
    "ConfigMapStrategy",
    "EndpointSliceStrategy",
    "EndpointsStrategy",
    "EventStrategy",
    "IPAddressStrategy",
    "LeaseStrategy",
    "NamespaceStrategy",
    "NodeStrategy",
    "PodStrategy",
    "ServiceStrategy",
    "register_builtins",
]
