"""discovery.k8s.io/v1: EndpointSlice."""

from __future__ import annotations

from pydantic import Field

from minik8s.models.base import KubeModel, KubeObject
from minik8s.models.meta import ObjectMeta, ObjectReference


class EndpointConditions(KubeModel):
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class ForZone(KubeModel):
    name: str


class EndpointHints(KubeModel):
    for_zones: list[ForZone] | None = None


class Endpoint(KubeModel):
    addresses: list[str]
    conditions: EndpointConditions | None = None
    hostname: str | None = None
    target_ref: ObjectReference | None = None
    deprecated_topology: dict[str, str] | None = None
    node_name: str | None = None
    zone: str | None = None
    hints: EndpointHints | None = None


class EndpointPort(KubeModel):
    name: str | None = None
    protocol: str | None = None
    port: int | None = None
    app_protocol: str | None = None


class EndpointSlice(KubeObject):
    GROUP = "discovery.k8s.io"
    KIND = "EndpointSlice"
    PLURAL = "endpointslices"

    api_version: str = "discovery.k8s.io/v1"
    kind: str = "EndpointSlice"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    address_type: str
    endpoints: list[Endpoint] | None = None
    ports: list[EndpointPort] | None = None


SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"

__all__ = [
    "MANAGED_BY_LABEL",
    "SERVICE_NAME_LABEL",
    "Endpoint",
    "EndpointConditions",
    "EndpointHints",
    "EndpointPort",
    "EndpointSlice",
    "ForZone",
]
