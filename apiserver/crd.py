"""apiextensions.k8s.io/v1 CustomResourceDefinition: the CRD itself, as data.

The pure half of CRD support: defaulting and validating a CRD (upstream's rules, with
field paths), its status (``NamesAccepted``, ``Established``, ``acceptedNames``,
``storedVersions``), and what a CRD makes the apiserver serve: one :class:`Resource` per
served version plus a :class:`CustomKind` holding each version's compiled schema,
``additionalPrinterColumns`` and subresources. :mod:`apiserver.crds` wires this into the
registry, the resource index and discovery.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apiserver.errors import StatusCause
from apiserver.resources import ALL_VERBS, Resource
from apiserver.schema import (
    ObjectSchema,
    check_schema,
    forbidden,
    invalid,
    not_supported,
    required,
)
from apiserver.validation import is_dns1035_label, is_dns1123_subdomain

RawObject = dict[str, Any]

GROUP = "apiextensions.k8s.io"
VERSION = "v1"
KIND = "CustomResourceDefinition"

CRD_RESOURCE = Resource(
    GROUP,
    VERSION,
    KIND,
    "customresourcedefinitions",
    "customresourcedefinition",
    namespaced=False,
    short_names=("crd", "crds"),
    categories=("api-extensions",),
    subresources=("status",),
)

_COLUMN_TYPES = ("boolean", "date", "integer", "number", "string")
_COLUMN_FORMATS = ("byte", "date", "date-time", "double", "float", "int32", "int64", "password")
_DEFAULT_COLUMNS: tuple[RawObject, ...] = (
    {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": "CreationTimestamp is a timestamp representing the server time when "
        "this object was created.",
    },
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- defaulting ----------------------------------------------------------------------


def default_crd(crd: RawObject) -> RawObject:
    """Upstream's defaults (in place; returns ``crd``): singular, listKind, conversion."""
    spec = crd.setdefault("spec", {})
    if not isinstance(spec, dict):
        return crd
    names = spec.get("names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str):
        if not names.get("singular"):
            names["singular"] = names["kind"].lower()
        if not names.get("listKind"):
            names["listKind"] = names["kind"] + "List"
    spec.setdefault("conversion", {"strategy": "None"})
    return crd


# --- validation ----------------------------------------------------------------------


def validate_crd(crd: RawObject, old: RawObject | None = None) -> list[StatusCause]:
    """Every problem with ``crd`` (and with changing ``old`` into it), with field paths."""
    errors: list[StatusCause] = []
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    group = spec.get("group")
    names = spec.get("names") if isinstance(spec.get("names"), dict) else None
    if not group or not isinstance(group, str):
        errors.append(required("spec.group"))
    else:
        errors.extend(invalid("spec.group", group, e) for e in is_dns1123_subdomain(group))
        if "." not in group:
            errors.append(invalid("spec.group", group, "should be a domain with at least one dot"))
    if names is None:
        errors.append(required("spec.names"))
    else:
        errors.extend(_validate_names(names, "spec.names"))
    plural = names.get("plural") if names else None
    name = (crd.get("metadata") or {}).get("name")
    if group and plural and name != f"{plural}.{group}":
        errors.append(invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    scope = spec.get("scope")
    if not scope:
        errors.append(required("spec.scope"))
    elif scope not in ("Cluster", "Namespaced"):
        errors.append(not_supported("spec.scope", scope, ["Cluster", "Namespaced"]))
    errors.extend(_validate_versions(spec.get("versions"), "spec.versions"))
    conversion = spec.get("conversion") or {}
    strategy = conversion.get("strategy", "None") if isinstance(conversion, dict) else None
    if strategy == "Webhook":
        errors.append(
            forbidden(
                "spec.conversion.strategy",
                "conversion webhooks are not supported by minik8s; use strategy None "
                "(versions differ only in apiVersion)",
            )
        )
    elif strategy != "None":
        errors.append(not_supported("spec.conversion.strategy", strategy, ["None", "Webhook"]))
    if old is not None:
        errors.extend(validate_crd_update(crd, old))
    return errors


def _validate_names(names: Mapping[str, Any], base: str) -> list[StatusCause]:
    errors: list[StatusCause] = []
    for key in ("plural", "singular", "kind", "listKind"):
        value = names.get(key)
        if not value:
            if key in ("plural", "kind"):
                errors.append(required(f"{base}.{key}"))
            continue
        errors.extend(_label_errors(f"{base}.{key}", value, lower=key in ("kind", "listKind")))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errors.append(
            invalid(
                f"{base}.listKind", names.get("listKind"), "kind and listKind cannot be the same"
            )
        )
    for key in ("shortNames", "categories"):
        values = names.get(key) or []
        if not isinstance(values, list):
            errors.append(invalid(f"{base}.{key}", values, "must be a list of strings"))
            continue
        for index, value in enumerate(values):
            errors.extend(_label_errors(f"{base}.{key}[{index}]", value))
    return errors


def _label_errors(field: str, value: Any, *, lower: bool = False) -> list[StatusCause]:
    """Upstream's IsDNS1035Label check (of the lower-cased value for kinds)."""
    if not isinstance(value, str):
        return [invalid(field, value, "must be a string")]
    return [invalid(field, value, e) for e in is_dns1035_label(value.lower() if lower else value)]


def _validate_versions(versions: Any, base: str) -> list[StatusCause]:
    if not isinstance(versions, list) or not versions:
        return [required(base, "must have exactly one version marked as storage version")]
    errors: list[StatusCause] = []
    seen: set[str] = set()
    storage = 0
    for index, version in enumerate(versions):
        where = f"{base}[{index}]"
        if not isinstance(version, dict):
            errors.append(invalid(where, version, "must be an object"))
            continue
        name = version.get("name")
        if not name:
            errors.append(required(f"{where}.name"))
        elif problems := _label_errors(f"{where}.name", name):
            errors.extend(problems)
        elif name in seen:
            errors.append(
                StatusCause("FieldValueDuplicate", f'Duplicate value: "{name}"', f"{where}.name")
            )
        else:
            seen.add(name)
        for flag in ("served", "storage"):
            if not isinstance(version.get(flag), bool):
                errors.append(required(f"{where}.{flag}"))
        if version.get("storage") is True:
            storage += 1
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if schema is None:
            errors.append(required(f"{where}.schema.openAPIV3Schema", "schemas are required"))
        else:
            errors.extend(check_schema(schema, f"{where}.schema.openAPIV3Schema"))
        subresources = version.get("subresources") or {}
        if not isinstance(subresources, dict):
            errors.append(invalid(f"{where}.subresources", subresources, "must be an object"))
        for c_index, column in enumerate(version.get("additionalPrinterColumns") or []):
            errors.extend(_validate_column(column, f"{where}.additionalPrinterColumns[{c_index}]"))
    if storage != 1:
        errors.append(
            invalid(
                base,
                f"{storage} storage versions",
                "must have exactly one version marked as storage version",
            )
        )
    if versions and not any(isinstance(v, dict) and v.get("served") for v in versions):
        errors.append(invalid(base, "no served versions", "must have at least one served version"))
    return errors


def _validate_column(column: Any, base: str) -> list[StatusCause]:
    if not isinstance(column, dict):
        return [invalid(base, column, "must be an object")]
    errors: list[StatusCause] = []
    if not column.get("name"):
        errors.append(required(f"{base}.name"))
    type_ = column.get("type")
    if not type_:
        errors.append(required(f"{base}.type"))
    elif type_ not in _COLUMN_TYPES:
        errors.append(not_supported(f"{base}.type", type_, _COLUMN_TYPES))
    path = column.get("jsonPath")
    if not path:
        errors.append(required(f"{base}.jsonPath"))
    elif not isinstance(path, str) or not path.startswith("."):
        errors.append(
            invalid(f"{base}.jsonPath", path, "must be a simple json path starting with .")
        )
    fmt = column.get("format")
    if fmt and fmt not in _COLUMN_FORMATS:
        errors.append(not_supported(f"{base}.format", fmt, _COLUMN_FORMATS))
    priority = column.get("priority", 0)
    if not isinstance(priority, int) or priority < 0:
        errors.append(invalid(f"{base}.priority", priority, "must be greater than or equal to 0"))
    return errors


def validate_crd_update(crd: RawObject, old: RawObject) -> list[StatusCause]:
    errors: list[StatusCause] = []
    spec, old_spec = crd.get("spec") or {}, old.get("spec") or {}
    for key in ("group", "scope"):
        if spec.get(key) != old_spec.get(key):
            errors.append(invalid(f"spec.{key}", spec.get(key), "field is immutable"))
    served = {v.get("name") for v in spec.get("versions") or [] if isinstance(v, dict)}
    for stored in (old.get("status") or {}).get("storedVersions") or []:
        if stored not in served:
            errors.append(
                invalid(
                    "status.storedVersions[]",
                    stored,
                    "must appear in spec.versions (objects may be stored at that version; "
                    "remove it from status.storedVersions first)",
                )
            )
    return errors


# --- status --------------------------------------------------------------------------


def name_conflicts(crd: RawObject, others: Iterable[RawObject]) -> list[str]:
    """Why ``crd``'s names clash with an established CRD of the same group (empty: none)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    mine = _claimed_names(names)
    problems: list[str] = []
    for other in others:
        if (other.get("metadata") or {}).get("name") == (crd.get("metadata") or {}).get("name"):
            continue
        other_spec = other.get("spec") or {}
        if other_spec.get("group") != spec.get("group"):
            continue
        accepted = (other.get("status") or {}).get("acceptedNames") or other_spec.get("names") or {}
        if names.get("kind") and names.get("kind") == accepted.get("kind"):
            problems.append(f'"{names["kind"]}" is already in use')
        for taken in sorted(mine & _claimed_names(accepted)):
            problems.append(f'"{taken}" is already in use')
    return problems


def _claimed_names(names: Mapping[str, Any]) -> set[str]:
    out = {names.get("plural"), names.get("singular"), *(names.get("shortNames") or [])}
    return {n for n in out if isinstance(n, str) and n}


def crd_status(
    crd: RawObject, conflicts: list[str], previous: RawObject | None = None
) -> RawObject:
    """The status the apiserver reports for ``crd`` once it has looked at its names."""
    spec = crd.get("spec") or {}
    old_status = (previous or {}).get("status") or crd.get("status") or {}
    old_conditions = {c.get("type"): c for c in old_status.get("conditions") or []}
    accepted = not conflicts

    def condition(type_: str, ok: bool, reason: str, message: str) -> RawObject:
        status = "True" if ok else "False"
        before = old_conditions.get(type_) or {}
        moment = before.get("lastTransitionTime") if before.get("status") == status else None
        return {
            "type": type_,
            "status": status,
            "lastTransitionTime": moment or _now(),
            "reason": reason,
            "message": message,
        }

    conditions = [
        condition(
            "NamesAccepted",
            accepted,
            "NoConflicts" if accepted else "NameConflict",
            "no conflicts found" if accepted else "; ".join(conflicts),
        ),
        condition(
            "Established",
            accepted,
            "InitialNamesAccepted" if accepted else "NotAccepted",
            "the initial names have been accepted" if accepted else "not all names are accepted",
        ),
    ]
    stored = list(old_status.get("storedVersions") or [])
    storage = storage_version(crd)
    if storage and storage not in stored:
        stored.append(storage)
    return {
        "conditions": conditions,
        "acceptedNames": copy.deepcopy(spec.get("names") or {})
        if accepted
        else (old_status.get("acceptedNames") or {"plural": "", "kind": ""}),
        "storedVersions": stored,
    }


def is_established(crd: RawObject) -> bool:
    for condition in (crd.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Established":
            return bool(condition.get("status") == "True")
    return False


def storage_version(crd: RawObject) -> str:
    for version in (crd.get("spec") or {}).get("versions") or []:
        if isinstance(version, dict) and version.get("storage") is True:
            return str(version.get("name"))
    return ""


# --- what a CRD serves ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomVersion:
    """One served version of a custom kind."""

    resource: Resource
    schema: ObjectSchema | None
    printer_columns: tuple[RawObject, ...]
    status_subresource: bool


@dataclass(frozen=True, slots=True)
class CustomKind:
    """Everything the apiserver needs to serve the objects of one CRD."""

    crd_name: str
    group: str
    kind: str
    plural: str
    namespaced: bool
    storage_version: str
    versions: Mapping[str, CustomVersion] = field(default_factory=dict)

    @property
    def resources(self) -> list[Resource]:
        return [v.resource for v in self.versions.values()]

    def version(self, name: str) -> CustomVersion | None:
        return self.versions.get(name)


_KUBE_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(name: str) -> tuple[int, int, int, str]:
    """Sort key putting versions in upstream's priority order: v2, v1, v1beta2, v1beta1,
    v1alpha1, then anything else alphabetically (the first is the preferred version)."""
    match = _KUBE_VERSION.match(name)
    if match is None:
        return (3, 0, 0, name)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0), name)


def custom_kind(crd: RawObject) -> CustomKind:
    """What a valid, established CRD makes the apiserver serve."""
    spec = crd["spec"]
    names = (crd.get("status") or {}).get("acceptedNames") or spec["names"]
    if not names.get("plural"):
        names = spec["names"]
    group = spec["group"]
    namespaced = spec.get("scope") == "Namespaced"
    versions: dict[str, CustomVersion] = {}
    ordered = sorted(spec.get("versions") or [], key=lambda v: version_priority(v["name"]))
    for version in ordered:
        if not version.get("served"):
            continue
        subresources = version.get("subresources") or {}
        subs = tuple(s for s in ("status", "scale") if s in subresources and s == "status")
        resource = Resource(
            group,
            version["name"],
            names["kind"],
            names["plural"],
            names.get("singular") or names["kind"].lower(),
            namespaced=namespaced,
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            verbs=ALL_VERBS,
            subresources=subs,
            list_kind=names.get("listKind") or names["kind"] + "List",
        )
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        columns = version.get("additionalPrinterColumns")
        versions[version["name"]] = CustomVersion(
            resource=resource,
            schema=ObjectSchema(schema) if isinstance(schema, Mapping) else None,
            printer_columns=tuple(columns) if columns else _DEFAULT_COLUMNS,
            status_subresource="status" in subs,
        )
    return CustomKind(
        crd_name=crd["metadata"]["name"],
        group=group,
        kind=names["kind"],
        plural=names["plural"],
        namespaced=namespaced,
        storage_version=storage_version(crd),
        versions=versions,
    )


def version_schema(crd: RawObject, version: str) -> Mapping[str, Any] | None:
    """The openAPIV3Schema of ``version`` (for /openapi/v3)."""
    for entry in (crd.get("spec") or {}).get("versions") or []:
        if isinstance(entry, dict) and entry.get("name") == version:
            schema = (entry.get("schema") or {}).get("openAPIV3Schema")
            return schema if isinstance(schema, Mapping) else None
    return None
