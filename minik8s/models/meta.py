"""meta.k8s.io/v1 types shared by every kind: ObjectMeta, ListMeta, selectors, conditions.

Timestamps stay strings in RFC 3339 form (``2024-05-01T12:00:00Z``) exactly as on the wire;
``parse_time`` turns one into an aware datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from minik8s.models.base import KubeModel

Time = str
"""An RFC 3339 timestamp as Kubernetes writes it (``2024-05-01T12:00:00Z``)."""


def parse_time(value: Time) -> datetime:
    """An aware UTC datetime from a Kubernetes timestamp (``Z`` or an offset; micro-precision)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def format_time(moment: datetime) -> Time:
    """A Kubernetes ``Time``: whole seconds, UTC, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(moment: datetime) -> Time:
    """A Kubernetes ``MicroTime`` (events, leases): microseconds, UTC, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class OwnerReference(KubeModel):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(KubeModel):
    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: Time | None = None
    deletion_timestamp: Time | None = None
    deletion_grace_period_seconds: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = None
    finalizers: list[str] | None = None
    managed_fields: list[dict[str, Any]] | None = None
    self_link: str | None = None


class ListMeta(KubeModel):
    resource_version: str | None = None
    continue_: str | None = Field(default=None, alias="continue")
    remaining_item_count: int | None = None


class LabelSelectorRequirement(KubeModel):
    key: str
    operator: str
    values: list[str] | None = None


class LabelSelector(KubeModel):
    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class Condition(KubeModel):
    """metav1.Condition, as used in status.conditions of newer kinds."""

    type: str
    status: str
    observed_generation: int | None = None
    last_transition_time: Time | None = None
    reason: str | None = None
    message: str | None = None


class ObjectReference(KubeModel):
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    api_version: str | None = None
    resource_version: str | None = None
    field_path: str | None = None


class LocalObjectReference(KubeModel):
    name: str | None = None
