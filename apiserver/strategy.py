"""Per-kind REST rules (upstream's "strategies"): defaulting, validation, field sets, tables.

Objects are raw dicts in wire form, in and out. A strategy validates by parsing with the
kind's pydantic model (type errors become causes with Kubernetes field paths) and by
upstream's checks on the dict, but never rewrites what the user sent beyond upstream's own
defaulting: annotations are stored exactly as sent.

``strategy_for(resource)`` gives the strategy of a built-in kind, one registered at runtime
with ``register_strategy`` (a CRD's), or a ``GenericStrategy`` for anything else.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from apiserver.resources import Resource
from apiserver.tables import DEFAULT_COLUMNS, Column, cells
from apiserver.validation import (
    Cause,
    NameValidator,
    child,
    index,
    is_dns1123_subdomain,
    required,
    type_invalid,
    validate_object_meta,
    validate_object_meta_update,
)
from minik8s.models import KubeModel, KubeObject, model_for

RawObject = dict[str, Any]
ColumnDefinitions = list[dict[str, Any]]
Rows = list[list[Any]]

__all__ = [
    "Cause",
    "GenericStrategy",
    "Strategy",
    "decode_error",
    "invalid_message",
    "qualified_kind",
    "register_strategy",
    "strategy_for",
    "strict_decoding_message",
    "unknown_fields",
]


@runtime_checkable
class Strategy(Protocol):
    """The rules of one kind. Every method works on raw (wire-form) dicts in place."""

    selectable_fields: frozenset[str]
    """The field selector labels this kind supports (``metadata.name``, ``spec.nodeName``...)."""

    def prepare_for_create(self, obj: RawObject) -> None:
        """Defaulting and upstream's resets before a create (e.g. a Pod's status)."""

    def validate(self, obj: RawObject) -> list[Cause]:
        """Every problem with ``obj``, after ``prepare_for_create``; [] when valid."""
        ...

    def prepare_for_update(self, new: RawObject, old: RawObject) -> None:
        """Before an update of the main resource: keep the old status (when the kind has a
        status subresource), keep system metadata, default, and bump
        ``metadata.generation`` when the spec changed."""

    def validate_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        """``validate(new)`` plus the update rules (immutable fields)."""
        ...

    def prepare_for_status_update(self, new: RawObject, old: RawObject) -> None:
        """Before an update of ``/status``: keep everything but the status."""

    def validate_status_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        """The checks of a ``/status`` update."""
        ...

    def field_set(self, obj: RawObject) -> dict[str, str]:
        """The values field selectors match against (``metadata.name``, ``status.phase``...)."""
        ...

    def table(
        self, objs: Sequence[RawObject], *, wide: bool, now: datetime
    ) -> tuple[ColumnDefinitions, Rows]:
        """Column definitions and one row of cells per object (every column; kubectl hides
        the priority-1 ones unless ``-o wide``)."""
        ...


# --------------------------------------------------------------------------- messages


def qualified_kind(resource: Resource) -> str:
    """``Service`` for the core group, ``EndpointSlice.discovery.k8s.io`` otherwise."""
    return f"{resource.kind}.{resource.group}" if resource.group else resource.kind


def invalid_message(resource: Resource, name: str, causes: Sequence[Cause]) -> str:
    """The message of a 422 Invalid, as upstream's NewInvalid writes it."""
    if len(causes) == 1:
        errors = str(causes[0])
    else:
        errors = "[" + ", ".join(str(c) for c in causes) + "]"
    return f'{qualified_kind(resource)} "{name}" is invalid: {errors}'


def strict_decoding_message(resource: Resource, paths: Sequence[str]) -> str:
    """The 400 for ``fieldValidation=Strict`` and unknown fields, as kubectl shows it."""
    unknown = ", ".join(f'unknown field "{p}"' for p in paths)
    return (
        f'{resource.kind} in version "{resource.version}" cannot be handled as a '
        f"{resource.kind}: strict decoding error: {unknown}"
    )


# --------------------------------------------------------------------------- model parsing

_TYPE_NAMES = {
    "int": "integer",
    "string": "string",
    "bool": "boolean",
    "float": "number",
    "dict": "object",
    "list": "array",
    "model": "object",
}


def _path_and_value(obj: Any, loc: tuple[int | str, ...]) -> tuple[str, Any]:
    """The Kubernetes path of a pydantic error location, following the data itself (so that
    pydantic's union-member tags such as ``int``/``str`` are dropped)."""
    path = ""
    value = obj
    for part in loc:
        if isinstance(part, int) and isinstance(value, list) and 0 <= part < len(value):
            path = index(path, part)
            value = value[part]
        elif isinstance(part, str) and isinstance(value, dict):
            path = child(path, part)
            value = value.get(part)
        else:
            break
    return path, value


def _expected(error_type: str) -> str:
    base = error_type.removesuffix("_type").removesuffix("_parsing")
    return _TYPE_NAMES.get(base, base.replace("_", " "))


def model_causes(model: type[KubeModel], obj: RawObject) -> list[Cause]:
    """Type errors and missing required fields found by parsing ``obj`` with ``model``."""
    try:
        model.model_validate(obj, strict=True)
    except ValidationError as exc:
        causes: list[Cause] = []
        seen: set[str] = set()
        for error in exc.errors():
            path, value = _path_and_value(obj, tuple(error["loc"]))
            if path in seen:
                continue
            seen.add(path)
            if error["type"] == "missing":
                causes.append(required(path))
            elif error["type"] == "value_error":
                causes.append(type_invalid(path, value, str(error.get("ctx", {}).get("error"))))
            else:
                causes.append(
                    type_invalid(path, value, f"must be of type {_expected(error['type'])}")
                )
        return causes
    return []


def unique(causes: Sequence[Cause]) -> list[Cause]:
    """Causes without repeats (the model and the kind's checks may both see a missing field)."""
    seen: set[tuple[str, str]] = set()
    out: list[Cause] = []
    for cause in causes:
        if (cause.field, cause.reason) not in seen or cause.reason != "FieldValueRequired":
            out.append(cause)
        seen.add((cause.field, cause.reason))
    return out


def decode_error(obj: RawObject, resource: Resource) -> str | None:
    """The 400 message for a body that does not decode as the kind (a string where an
    integer belongs), or None. Missing fields are left to validation (422)."""
    model = model_for(resource.group, resource.kind)
    if model is None:
        return None
    for cause in model_causes(model, obj):
        if cause.reason == "FieldValueTypeInvalid":
            return (
                f'{resource.kind} in version "{resource.version}" cannot be handled as a '
                f"{resource.kind}: {cause.field}: {cause.message}"
            )
    return None


def _model_in(annotation: Any) -> type[KubeModel] | None:
    """The KubeModel inside ``X | None``, ``list[X]``, ``dict[str, X]``; None if there is none."""
    if isinstance(annotation, type) and issubclass(annotation, KubeModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


@functools.cache
def _wire_fields(model: type[KubeModel]) -> dict[str, tuple[type[KubeModel] | None, bool]]:
    """wire name -> (the model inside the field, whether it is a map of them)."""
    fields: dict[str, tuple[type[KubeModel] | None, bool]] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        members = (annotation, *getattr(annotation, "__args__", ()))
        is_map = any(getattr(a, "__origin__", None) is dict for a in members)
        fields[info.alias or name] = (_model_in(annotation), is_map)
    return fields


def _unknown(model: type[KubeModel], data: Any, path: str, out: list[str]) -> None:
    if isinstance(data, list):
        for i, item in enumerate(data):
            _unknown(model, item, index(path, i), out)
        return
    if not isinstance(data, dict):
        return
    fields = _wire_fields(model)
    for key_name, value in data.items():
        found = fields.get(key_name)
        if found is None:
            if not model.OPEN:
                out.append(child(path, key_name))
            continue
        inner, is_map = found
        if inner is None:
            continue
        if is_map:
            if isinstance(value, dict):
                for k, v in value.items():
                    _unknown(inner, v, f"{child(path, key_name)}[{k}]", out)
            continue
        _unknown(inner, value, child(path, key_name), out)


def unknown_fields(obj: RawObject, resource: Resource) -> list[str]:
    """Paths (``spec.foo``, ``spec.ports[0].bar``) of fields the kind does not define, for
    ``fieldValidation=Strict``; [] for kinds without a model (CRDs: their schema decides)."""
    model = model_for(resource.group, resource.kind)
    if model is None:
        return []
    out: list[str] = []
    _unknown(model, obj, "", out)
    return out


# --------------------------------------------------------------------------- generic strategy

SYSTEM_METADATA = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds")
_TOP_LEVEL_FIXED = ("apiVersion", "kind", "metadata", "status")


def spec_part(obj: RawObject) -> dict[str, Any]:
    """What ``metadata.generation`` tracks: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in _TOP_LEVEL_FIXED}


class GenericStrategy:
    """Rules shared by every kind; usable alone for any kind (CRDs included)."""

    model: type[KubeObject] | None = None
    name_validator: NameValidator = staticmethod(is_dns1123_subdomain)
    columns: tuple[Column, ...] = DEFAULT_COLUMNS
    extra_fields: tuple[str, ...] = ()
    """Field selector labels beyond metadata.name and metadata.namespace."""

    def __init__(self, *, namespaced: bool = True, has_status: bool = False) -> None:
        self.namespaced = namespaced
        self.has_status = has_status
        self.selectable_fields = frozenset(
            ("metadata.name", "metadata.namespace", *self.extra_fields)
        )

    # -- create
    def prepare_for_create(self, obj: RawObject) -> None:
        meta = obj.setdefault("metadata", {})
        meta.pop("deletionTimestamp", None)
        meta.pop("deletionGracePeriodSeconds", None)
        meta["generation"] = 1
        self.default(obj)

    def default(self, obj: RawObject) -> None:
        """Upstream's defaulting, applied on create and on every update."""

    def validate(self, obj: RawObject) -> list[Cause]:
        meta = obj.get("metadata")
        causes: list[Cause] = []
        if isinstance(meta, dict):
            causes.extend(
                validate_object_meta(
                    meta, namespaced=self.namespaced, name_validator=self.name_validator
                )
            )
        elif meta is None:
            causes.append(required("metadata.name", "name or generateName is required"))
        if self.model is not None:
            causes.extend(model_causes(self.model, obj))
        causes.extend(self.validate_kind(obj))
        return unique(causes)

    def validate_kind(self, obj: RawObject) -> list[Cause]:
        """The kind's own checks (on a dict that may not be well-typed: check types)."""
        return []

    # -- update
    def prepare_for_update(self, new: RawObject, old: RawObject) -> None:
        new_meta = new.setdefault("metadata", {})
        old_meta = old.get("metadata") or {}
        for name in SYSTEM_METADATA:
            if name in old_meta:
                new_meta[name] = old_meta[name]
            else:
                new_meta.pop(name, None)
        if self.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        self.default(new)
        generation = old_meta.get("generation") or 1
        if spec_part(new) != spec_part(old):
            generation += 1
        new_meta["generation"] = generation

    def validate_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        causes = self.validate(new)
        causes.extend(
            validate_object_meta_update(new.get("metadata") or {}, old.get("metadata") or {})
        )
        causes.extend(self.validate_kind_update(new, old))
        causes.extend(self.validate_status(new))
        return unique(causes)

    def validate_kind_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        return []

    # -- status
    def prepare_for_status_update(self, new: RawObject, old: RawObject) -> None:
        status = new.get("status")
        resource_version = (new.get("metadata") or {}).get("resourceVersion")
        new.clear()
        new.update(copy.deepcopy(old))
        if status is None:
            new.pop("status", None)
        else:
            new["status"] = status
        if resource_version is not None:
            new["metadata"]["resourceVersion"] = resource_version
        elif "metadata" in new:
            new["metadata"].pop("resourceVersion", None)
        self.default_status(new)

    def default_status(self, obj: RawObject) -> None:
        """Defaulting of the status part (protocol of a status port, ...)."""

    def validate_status_update(self, new: RawObject, old: RawObject) -> list[Cause]:
        causes: list[Cause] = []
        if self.model is not None:
            causes.extend(model_causes(self.model, new))
        causes.extend(
            validate_object_meta_update(new.get("metadata") or {}, old.get("metadata") or {})
        )
        causes.extend(self.validate_status(new))
        return unique(causes)

    def validate_status(self, obj: RawObject) -> list[Cause]:
        """The kind's checks of ``status`` (run on every update, whichever path it took)."""
        return []

    # -- reading
    def field_set(self, obj: RawObject) -> dict[str, str]:
        meta = obj.get("metadata") or {}
        fields = {
            "metadata.name": str(meta.get("name") or ""),
            "metadata.namespace": str(meta.get("namespace") or ""),
        }
        fields.update(self.kind_fields(obj))
        return fields

    def kind_fields(self, obj: RawObject) -> dict[str, str]:
        return {}

    def table(
        self, objs: Sequence[RawObject], *, wide: bool, now: datetime
    ) -> tuple[ColumnDefinitions, Rows]:
        return [c.definition() for c in self.columns], cells(self.columns, objs, now)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[tuple[str, str], Strategy] = {}
_BUILTINS_LOADED = False


def register_strategy(group: str, kind: str, strategy: Strategy) -> None:
    """Use ``strategy`` for (group, kind) from now on (a CRD's, registered at runtime)."""
    _REGISTRY[(group, kind)] = strategy


def unregister_strategy(group: str, kind: str) -> None:
    _REGISTRY.pop((group, kind), None)


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        from apiserver.strategies import register_builtins

        register_builtins()


def strategy_for(resource: Resource) -> Strategy:
    """The strategy for ``resource``; a GenericStrategy when none is registered."""
    _load_builtins()
    found = _REGISTRY.get((resource.group, resource.kind))
    if found is not None:
        return found
    generic = GenericStrategy(
        namespaced=resource.namespaced, has_status="status" in resource.subresources
    )
    return generic
