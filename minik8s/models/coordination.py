"""coordination.k8s.io/v1: Lease."""

from __future__ import annotations

from pydantic import Field

from minik8s.models.base import KubeModel, KubeObject
from minik8s.models.meta import ObjectMeta, Time


class LeaseSpec(KubeModel):
    holder_identity: str | None = None
    lease_duration_seconds: int | None = None
    acquire_time: Time | None = None
    renew_time: Time | None = None
    lease_transitions: int | None = None
    strategy: str | None = None
    preferred_holder: str | None = None


class Lease(KubeObject):
    GROUP = "coordination.k8s.io"
    KIND = "Lease"
    PLURAL = "leases"

    api_version: str = "coordination.k8s.io/v1"
    kind: str = "Lease"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LeaseSpec | None = None
