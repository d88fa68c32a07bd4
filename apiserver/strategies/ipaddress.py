"""networking.k8s.io/v1 IPAddress: named after a canonical IP, with an immutable parentRef."""

from __future__ import annotations

import ipaddress

from apiserver.strategies.access import dig, sub, text
from apiserver.strategy import GenericStrategy, RawObject
from apiserver.tables import AGE_COLUMN, NAME_COLUMN, Column
from apiserver.validation import (
    IMMUTABLE,
    Cause,
    invalid,
    is_dns1123_label,
    is_dns1123_subdomain,
    required,
)
from minik8s.models import IPAddress


def ip_address_name_errors(name: str) -> list[str]:
    """ValidateIPAddressName: a valid IP in canonical form (``10.96.0.1``, ``2001:db8::1``)."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return [f'ParseAddr("{name}"): unable to parse IP']
    if str(ip) != name:
        return ["must be a canonical format IP address"]
    return []


class IPAddressStrategy(GenericStrategy):
    model = IPAddress
    name_validator = staticmethod(ip_address_name_errors)

    def __init__(self) -> None:
        super().__init__(namespaced=False, has_status=False)

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        ref = dig(obj, "spec", "parentRef")
        if not isinstance(ref, dict):
            return [required("spec.parentRef")]
        causes: list[Cause] = []
        if not ref.get("resource"):
            causes.append(required("spec.parentRef.resource"))
        if not ref.get("name"):
            causes.append(required("spec.parentRef.name"))
        group = ref.get("group")
        if isinstance(group, str) and group:
            causes += [
                invalid("spec.parentRef.group", group, m) for m in is_dns1123_subdomain(group)
            ]
        namespace = ref.get("namespace")
        if isinstance(namespace, str) and namespace:
            causes += [
                invalid("spec.parentRef.namespace", namespace, m)
                for m in is_dns1123_label(namespace)
            ]
        return causes

    def validate_kind_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        new_ref = dig(new, "spec", "parentRef")
        if new_ref != dig(old, "spec", "parentRef"):
            return [invalid("spec.parentRef", new_ref, IMMUTABLE)]
        return []

    columns = (
        NAME_COLUMN,
        Column(
            "ParentRef",
            lambda obj, now: parent_ref(obj),
            description="ParentRef references the resource that an IPAddress is attached to.",
        ),
        AGE_COLUMN,
    )


def parent_ref(obj: RawObject) -> str:
    ref = sub(obj.get("spec") or {}, "parentRef") if isinstance(obj.get("spec"), dict) else None
    if ref is None:
        return "<none>"
    resource = text(ref.get("resource"))
    group = text(ref.get("group"))
    name = (f"{resource}.{group}" if group else resource).lower()
    if text(ref.get("namespace")):
        name += "/" + text(ref.get("namespace"))
    return f"{name}/{text(ref.get('name'))}"
