"""The kinds with little to check: ConfigMap, Lease and v1 Event."""

from __future__ import annotations

from datetime import datetime

from apiserver.strategies.access import dig, sub, text
from apiserver.strategy import GenericStrategy, RawObject
from apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column, age
from apiserver.validation import (
    Cause,
    forbidden,
    invalid,
    is_config_map_key,
    key,
    too_long,
)
from minik8s.models import ConfigMap, Event, Lease

CONFIG_MAP_MAX_BYTES = 1024 * 1024


class ConfigMapStrategy(GenericStrategy):
    model = ConfigMap

    def __init__(self) -> None:
        super().__init__(namespaced=True, has_status=False)

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        causes: list[Cause] = []
        data = sub(obj, "data") or {}
        binary = sub(obj, "binaryData") or {}
        total = 0
        for k, v in data.items():
            causes += [invalid(key("data", k), k, m) for m in is_config_map_key(k)]
            total += len(v.encode()) if isinstance(v, str) else 0
        for k, v in binary.items():
            causes += [invalid(key("binaryData", k), k, m) for m in is_config_map_key(k)]
            if k in data:
                causes.append(invalid(key("binaryData", k), k, "duplicate of key present in data"))
            total += len(v) if isinstance(v, str) else 0
        if total > CONFIG_MAP_MAX_BYTES:
            causes.append(too_long("", CONFIG_MAP_MAX_BYTES))
        return causes

    def validate_kind_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        if old.get("immutable") is True:
            causes: list[Cause] = []
            if new.get("immutable") is not True:
                causes.append(forbidden("immutable", "field is immutable when `immutable` is set"))
            for field in ("data", "binaryData"):
                if new.get(field) != old.get(field):
                    causes.append(forbidden(field, "field is immutable when `immutable` is set"))
            return causes
        return []

    columns = (
        NAME_COLUMN,
        Column(
            "Data",
            lambda obj, now: len(sub(obj, "data") or {}) + len(sub(obj, "binaryData") or {}),
            type="integer",
            description="The number of keys in data and binaryData.",
        ),
        AGE_COLUMN,
    )


class LeaseStrategy(GenericStrategy):
    model = Lease

    def __init__(self) -> None:
        super().__init__(namespaced=True, has_status=False)

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        causes: list[Cause] = []
        duration = dig(obj, "spec", "leaseDurationSeconds")
        if isinstance(duration, int) and duration <= 0:
            causes.append(invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
        transitions = dig(obj, "spec", "leaseTransitions")
        if isinstance(transitions, int) and transitions < 0:
            causes.append(
                invalid("spec.leaseTransitions", transitions, "must be greater than or equal to 0")
            )
        return causes

    columns = (
        NAME_COLUMN,
        Column(
            "Holder",
            lambda obj, now: text(dig(obj, "spec", "holderIdentity")),
            description="The holder of the lease.",
        ),
        AGE_COLUMN,
    )


EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)


class EventStrategy(GenericStrategy):
    model = Event
    extra_fields = EVENT_FIELDS

    def __init__(self) -> None:
        super().__init__(namespaced=True, has_status=False)

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        namespace = text(dig(obj, "metadata", "namespace"))
        involved = text(dig(obj, "involvedObject", "namespace"))
        if involved and namespace and involved != namespace:
            return [invalid("involvedObject.namespace", involved, "does not match event.namespace")]
        return []

    def kind_fields(self, obj: RawObject) -> dict[str, str]:
        fields = {
            f"involvedObject.{name}": text(dig(obj, "involvedObject", name))
            for name in (
                "kind",
                "namespace",
                "name",
                "uid",
                "apiVersion",
                "resourceVersion",
                "fieldPath",
            )
        }
        fields["reason"] = text(obj.get("reason"))
        fields["reportingComponent"] = text(obj.get("reportingComponent"))
        fields["source"] = text(dig(obj, "source", "component"))
        fields["type"] = text(obj.get("type"))
        return fields

    columns = (
        Column(
            "Last Seen",
            lambda obj, now: _last_seen(obj, now),
            description="Time when this Event was last seen",
        ),
        Column("Type", lambda obj, now: text(obj.get("type")), description="Type of this event"),
        Column("Reason", lambda obj, now: text(obj.get("reason")), description="Why the event"),
        Column(
            "Object",
            lambda obj, now: (
                f"{text(dig(obj, 'involvedObject', 'kind')).lower()}/"
                f"{text(dig(obj, 'involvedObject', 'name'))}"
            ),
            description="The object that this event is about",
        ),
        Column(
            "Subobject",
            lambda obj, now: text(dig(obj, "involvedObject", "fieldPath")),
            priority=1,
            description="The subobject that this event is about",
        ),
        Column(
            "Source",
            lambda obj, now: _source(obj),
            priority=1,
            description="The component reporting this event",
        ),
        Column("Message", lambda obj, now: text(obj.get("message")), description="The message"),
        Column(
            "First Seen",
            lambda obj, now: _first_seen(obj, now),
            priority=1,
            description="Time when this Event was first seen",
        ),
        Column(
            "Count",
            lambda obj, now: obj.get("count") or 1,
            type="integer",
            priority=1,
            description="Number of times this event has occurred",
        ),
        Column(
            "Name",
            NAME_COLUMN.value,
            format="name",
            priority=1,
            description=NAME_COLUMN.description,
        ),
    )


def _last_seen(obj: RawObject, now: datetime) -> str:
    moment = dig(obj, "series", "lastObservedTime") or obj.get("lastTimestamp")
    moment = moment or obj.get("eventTime") or dig(obj, "metadata", "creationTimestamp")
    return age(moment, now)


def _first_seen(obj: RawObject, now: datetime) -> str:
    moment = obj.get("firstTimestamp") or obj.get("eventTime")
    return age(moment or dig(obj, "metadata", "creationTimestamp"), now)


def _source(obj: RawObject) -> str:
    component = text(dig(obj, "source", "component")) or text(obj.get("reportingComponent"))
    host = text(dig(obj, "source", "host")) or text(obj.get("reportingInstance"))
    return f"{component}, {host}" if host else component
