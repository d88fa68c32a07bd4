"""Typed Kubernetes API objects (pydantic v2), shared by every component.

Python names are snake_case; the Kubernetes wire names are aliases (``cluster_ip`` <->
``clusterIP``). Parse with ``Service.model_validate(raw)`` (or ``from_wire``), write back
with ``obj.to_wire()`` (= ``model_dump(by_alias=True, exclude_none=True, mode="json")``).
"""

from __future__ import annotations

from minik8s.models.base import KubeModel, KubeObject, wire_name
from minik8s.models.coordination import Lease, LeaseSpec
from minik8s.models.core import (
    ConfigMap,
    Container,
    ContainerPort,
    ContainerState,
    ContainerStatus,
    EndpointAddress,
    Endpoints,
    EndpointSubset,
    EnvVar,
    Event,
    EventSource,
    IntOrString,
    Namespace,
    NamespaceSpec,
    NamespaceStatus,
    Node,
    NodeAddress,
    NodeCondition,
    NodeSpec,
    NodeStatus,
    Pod,
    PodCondition,
    PodIP,
    PodSpec,
    PodStatus,
    Service,
    ServicePort,
    ServiceSpec,
    ServiceStatus,
    Taint,
    Toleration,
    Volume,
    VolumeMount,
)
from minik8s.models.discovery import (
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    Endpoint,
    EndpointConditions,
    EndpointSlice,
)
from minik8s.models.discovery import EndpointPort as EndpointSlicePort
from minik8s.models.meta import (
    Condition,
    LabelSelector,
    LabelSelectorRequirement,
    ListMeta,
    ObjectMeta,
    ObjectReference,
    OwnerReference,
    Time,
    format_micro_time,
    format_time,
    parse_time,
)
from minik8s.models.networking import IPAddress, IPAddressSpec, ParentReference

KINDS: dict[tuple[str, str], type[KubeObject]] = {
    (model.GROUP, model.KIND): model
    for model in (
        Namespace,
        Pod,
        Service,
        Endpoints,
        Event,
        Node,
        ConfigMap,
        EndpointSlice,
        IPAddress,
        Lease,
    )
}
"""Every built-in kind by (group, kind); the core group is ""."""


def model_for(group: str, kind: str) -> type[KubeObject] | None:
    return KINDS.get((group, kind))


__all__ = [
    "KINDS",
    "MANAGED_BY_LABEL",
    "SERVICE_NAME_LABEL",
    "Condition",
    "ConfigMap",
    "Container",
    "ContainerPort",
    "ContainerState",
    "ContainerStatus",
    "Endpoint",
    "EndpointAddress",
    "EndpointConditions",
    "EndpointSlice",
    "EndpointSlicePort",
    "EndpointSubset",
    "Endpoints",
    "EnvVar",
    "Event",
    "EventSource",
    "IPAddress",
    "IPAddressSpec",
    "IntOrString",
    "KubeModel",
    "KubeObject",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Lease",
    "LeaseSpec",
    "ListMeta",
    "Namespace",
    "NamespaceSpec",
    "NamespaceStatus",
    "Node",
    "NodeAddress",
    "NodeCondition",
    "NodeSpec",
    "NodeStatus",
    "ObjectMeta",
    "ObjectReference",
    "OwnerReference",
    "ParentReference",
    "Pod",
    "PodCondition",
    "PodIP",
    "PodSpec",
    "PodStatus",
    "Service",
    "ServicePort",
    "ServiceSpec",
    "ServiceStatus",
    "Taint",
    "Time",
    "Toleration",
    "Volume",
    "VolumeMount",
    "format_micro_time",
    "format_time",
    "model_for",
    "parse_time",
    "wire_name",
]
