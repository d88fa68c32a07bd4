"""networking.k8s.io/v1: IPAddress (one object per allocated ClusterIP, named after it)."""

from __future__ import annotations

from pydantic import Field

from minik8s.models.base import KubeModel, KubeObject
from minik8s.models.meta import ObjectMeta


class ParentReference(KubeModel):
    group: str | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None


class IPAddressSpec(KubeModel):
    parent_ref: ParentReference


class IPAddress(KubeObject):
    GROUP = "networking.k8s.io"
    KIND = "IPAddress"
    PLURAL = "ipaddresses"

    api_version: str = "networking.k8s.io/v1"
    kind: str = "IPAddress"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: IPAddressSpec | None = None
