"""Custom objects against a CRD's ``openAPIV3Schema``: pruning, defaulting, validation.

The order is upstream's: unknown fields are pruned (unless
``x-kubernetes-preserve-unknown-fields``), non-nullable nulls dropped and ``default``
values applied, then the object is validated with ``jsonschema`` (OpenAPI v3.0 is JSON
Schema draft 4 plus ``nullable`` and the ``x-kubernetes-*`` extensions, translated here).
Errors are :class:`~apiserver.errors.StatusCause` with Kubernetes field paths (``spec.replicas``,
``spec.ports[0].port``) and messages in kube-apiserver's words.

:func:`check_schema` is the other half: the validation a CRD's own schema gets before
the CRD is accepted (structural rules, valid defaults).
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import ipaddress
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from apiserver.errors import StatusCause

if TYPE_CHECKING:
    import jsonschema
    from jsonschema.exceptions import ValidationError

JsonObject = dict[str, Any]

# Keys at the root of every object (and of embedded resources) that no schema prunes.
_OBJECT_KEYS = ("apiVersion", "kind", "metadata")
# ObjectMeta fields an embedded resource keeps (x-kubernetes-embedded-resource).
_EMBEDDED_METADATA_KEYS = frozenset(
    {"name", "namespace", "generateName", "labels", "annotations", "finalizers", "ownerReferences"}
)
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
# JSON Schema keywords carried over to the draft-4 schema jsonschema checks against.
_VALIDATION_KEYS = frozenset(
    {
        "type",
        "format",
        "enum",
        "maximum",
        "minimum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "multipleOf",
        "maxProperties",
        "minProperties",
        "required",
    }
)
_SCHEMA_LIST_KEYS = ("allOf", "anyOf", "oneOf")


def invalid(field: str, value: Any, detail: str) -> StatusCause:
    return StatusCause("FieldValueInvalid", f"Invalid value: {_render(value)}: {detail}", field)


def required(field: str, detail: str = "") -> StatusCause:
    return StatusCause(
        "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""), field
    )


def forbidden(field: str, detail: str) -> StatusCause:
    return StatusCause("FieldValueForbidden", f"Forbidden: {detail}", field)


def not_supported(field: str, value: Any, supported: Iterable[Any]) -> StatusCause:
    choices = ", ".join(_render(v) for v in supported)
    return StatusCause(
        "FieldValueNotSupported",
        f"Unsupported value: {_render(value)}: supported values: {choices}",
        field,
    )


def _render(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def field_path(parts: Iterable[str | int], base: str = "") -> str:
    """``["spec", "ports", 0, "port"]`` -> ``spec.ports[0].port``."""
    out = base
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# --- pruning -------------------------------------------------------------------------


def prune(obj: JsonObject, schema: Mapping[str, Any]) -> JsonObject:
    """Drop the fields ``schema`` does not specify (in place; returns ``obj``).

    ``apiVersion``, ``kind`` and ``metadata`` at the root are the apiserver's business and
    are never pruned here.
    """
    _prune_object(obj, schema, keep=_OBJECT_KEYS)
    return obj


def unknown_fields(obj: JsonObject, schema: Mapping[str, Any]) -> list[str]:
    """The paths pruning would drop (``spec.bogus``), for ``fieldValidation=Strict``."""
    found: list[str] = []
    _unknown_object(obj, schema, "", found, keep=_OBJECT_KEYS)
    return found


def _unknown(value: Any, schema: Mapping[str, Any], path: str, found: list[str]) -> None:
    if isinstance(value, dict):
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        _unknown_object(value, schema, path, found, keep=_OBJECT_KEYS if embedded else ())
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                _unknown(item, items, f"{path}[{index}]", found)


def _unknown_object(
    value: JsonObject,
    schema: Mapping[str, Any],
    path: str,
    found: list[str],
    *,
    keep: Sequence[str],
) -> None:
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    for key, item in value.items():
        child = f"{path}.{key}" if path else key
        if key in keep:
            continue
        if key in properties:
            _unknown(item, properties[key], child, found)
        elif isinstance(additional, Mapping):
            _unknown(item, additional, child, found)
        elif not (preserve or additional is True):
            found.append(child)


def _prune(value: Any, schema: Mapping[str, Any]) -> None:
    if isinstance(value, dict):
        if schema.get("x-kubernetes-embedded-resource") is True:
            _prune_object(value, schema, keep=_OBJECT_KEYS)
            metadata = value.get("metadata")
            if isinstance(metadata, dict):
                for key in [k for k in metadata if k not in _EMBEDDED_METADATA_KEYS]:
                    del metadata[key]
        else:
            _prune_object(value, schema, keep=())
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for item in value:
                _prune(item, items)


def _prune_object(value: JsonObject, schema: Mapping[str, Any], *, keep: Sequence[str]) -> None:
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    for key in list(value):
        if key in keep:
            continue
        if key in properties:
            _prune(value[key], properties[key])
        elif isinstance(additional, Mapping):
            _prune(value[key], additional)
        elif not (preserve or additional is True):
            del value[key]


# --- defaulting ----------------------------------------------------------------------


def apply_defaults(obj: JsonObject, schema: Mapping[str, Any]) -> JsonObject:
    """Apply ``default`` values and drop non-nullable nulls (in place; returns ``obj``).

    As upstream: a null in a field that is not ``nullable`` is removed and, when the field
    has a default, replaced by it; a missing field with a default gets a copy of it; the
    walk then descends into the (possibly defaulted) values.
    """
    _default(obj, schema, root=True)
    return obj


def _default(value: Any, schema: Mapping[str, Any], *, root: bool = False) -> None:
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, sub in properties.items():
            if root and key in _OBJECT_KEYS:
                continue
            current = value.get(key, _MISSING)
            if current is None and not sub.get("nullable"):
                del value[key]
                current = _MISSING
            if current is _MISSING and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        if isinstance(additional, Mapping):
            for key in [k for k, v in value.items() if k not in properties and v is None]:
                if not additional.get("nullable"):
                    del value[key]
        for key, item in value.items():
            if root and key in _OBJECT_KEYS:
                continue
            sub = properties.get(key)
            if sub is None and isinstance(additional, Mapping):
                sub = additional
            if sub is not None:
                _default(item, sub)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for item in value:
                _default(item, items)


_MISSING: Any = object()


# --- validation ----------------------------------------------------------------------


def to_json_schema(schema: Mapping[str, Any], *, root: bool = True) -> JsonObject:
    """The draft-4 JSON Schema equivalent of a Kubernetes structural schema node."""
    out: JsonObject = {k: copy.deepcopy(v) for k, v in schema.items() if k in _VALIDATION_KEYS}
    if schema.get("x-kubernetes-int-or-string") is True and "type" not in out:
        out["type"] = ["integer", "string"]
    if schema.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif isinstance(out.get("type"), list):
            out["type"] = [*out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    if schema.get("x-kubernetes-embedded-resource") is True:
        out["required"] = sorted({*out.get("required", []), "apiVersion", "kind"})
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        converted = {k: to_json_schema(v, root=False) for k, v in properties.items()}
        if root:
            converted.pop("apiVersion", None)
            converted.pop("kind", None)
            meta = properties.get("metadata")
            converted.pop("metadata", None)
            if isinstance(meta, Mapping):
                # Only name and generateName may be constrained by a CRD (as upstream).
                meta_props = {
                    k: to_json_schema(v, root=False)
                    for k, v in (meta.get("properties") or {}).items()
                    if k in ("name", "generateName")
                }
                if meta_props:
                    converted["metadata"] = {"type": "object", "properties": meta_props}
        out["properties"] = converted
    if root and isinstance(out.get("required"), list):
        out["required"] = [k for k in out["required"] if k not in _OBJECT_KEYS]
        if not out["required"]:
            del out["required"]
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        out["additionalProperties"] = to_json_schema(additional, root=False)
    items = schema.get("items")
    if isinstance(items, Mapping):
        out["items"] = to_json_schema(items, root=False)
    for key in _SCHEMA_LIST_KEYS:
        subs = schema.get(key)
        if isinstance(subs, list):
            out[key] = [to_json_schema(s, root=False) for s in subs if isinstance(s, Mapping)]
    negated = schema.get("not")
    if isinstance(negated, Mapping):
        out["not"] = to_json_schema(negated, root=False)
    return out


def _is_date_time(value: object) -> bool:
    if isinstance(value, str):
        datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return True


def _is_date(value: object) -> bool:
    if isinstance(value, str):
        date.fromisoformat(value)
    return True


def _is_ipv4(value: object) -> bool:
    if isinstance(value, str):
        ipaddress.IPv4Address(value)
    return True


def _is_ipv6(value: object) -> bool:
    if isinstance(value, str):
        ipaddress.IPv6Address(value)
    return True


def _is_cidr(value: object) -> bool:
    if isinstance(value, str):
        ipaddress.ip_network(value, strict=False)
    return True


def _is_uuid(value: object) -> bool:
    if isinstance(value, str):
        uuid.UUID(value)
    return True


def _is_byte(value: object) -> bool:
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
    return True


@functools.cache
def _format_checker() -> jsonschema.FormatChecker:
    """The formats Kubernetes checks (jsonschema is imported when a CRD schema is first
    compiled: it costs ~60 ms at startup)."""
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())
    for name, check in {
        "date-time": _is_date_time,
        "date": _is_date,
        "ipv4": _is_ipv4,
        "ipv6": _is_ipv6,
        "cidr": _is_cidr,
        "uuid": _is_uuid,
        "byte": _is_byte,
    }.items():
        checker.checks(name, raises=(ValueError, TypeError, binascii.Error))(check)
    return checker


class ObjectSchema:
    """A CRD version's ``openAPIV3Schema``, compiled once and used for every write."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        import jsonschema

        self.schema: Mapping[str, Any] = schema
        self._validator = jsonschema.Draft4Validator(
            to_json_schema(schema), format_checker=_format_checker()
        )

    def admit(self, obj: JsonObject) -> list[StatusCause]:
        """Prune, default and validate ``obj`` in place; the errors (empty when valid)."""
        prune(obj, self.schema)
        apply_defaults(obj, self.schema)
        return self.validate(obj)

    def validate(self, obj: JsonObject) -> list[StatusCause]:
        instance = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        errors: list[StatusCause] = []
        seen: set[tuple[str, str]] = set()
        for error in self._validator.iter_errors(instance):
            for field_error in _translate(error):
                key = (field_error.field, field_error.message)
                if key not in seen:
                    seen.add(key)
                    errors.append(field_error)
        errors.sort(key=lambda e: e.field)
        return errors


def _translate(error: ValidationError) -> Iterator[StatusCause]:
    parts = list(error.absolute_path)
    path = field_path(parts)
    name = path or "<root>"
    value = error.instance
    keyword = error.validator
    expected: Any = error.validator_value
    if keyword == "required":
        if isinstance(value, dict):
            for prop in expected:
                if prop not in value:
                    yield required(field_path([*parts, prop]))
        return
    if keyword in ("anyOf", "oneOf") and error.context:
        import jsonschema.exceptions

        best = jsonschema.exceptions.best_match(error.context)
        if best is not None:
            yield from _translate(best)
            return
    if keyword == "type":
        types = expected if isinstance(expected, list) else [expected]
        shown = ",".join(str(t) for t in types if t != "null")
        yield StatusCause(
            "FieldValueTypeInvalid",
            f"Invalid value: {_render(value)}: {name} in body must be of type {shown}: "
            f'"{_json_type(value)}"',
            path,
        )
        return
    if keyword == "enum":
        yield not_supported(path, value, expected)
        return
    detail = _DETAILS.get(str(keyword))
    if detail is not None:
        yield invalid(path, value, f"{name} in body {detail.format(expected)}")
        return
    if keyword == "format":
        yield invalid(path, value, f'{name} in body must be of type {expected}: "{value}"')
        return
    yield invalid(path, value, error.message)


_DETAILS = {
    "maximum": "should be less than or equal to {}",
    "minimum": "should be greater than or equal to {}",
    "maxLength": "should be at most {} chars long",
    "minLength": "should be at least {} chars long",
    "pattern": "should match '{}'",
    "maxItems": "must have at most {} items",
    "minItems": "should have at least {} items",
    "uniqueItems": "shouldn't contain duplicates",
    "multipleOf": "should be a multiple of {}",
    "maxProperties": "must have at most {} properties",
    "minProperties": "should have at least {} properties",
}


# --- the CRD's own schema ------------------------------------------------------------


def check_schema(schema: Any, base: str) -> list[StatusCause]:
    """Structural-schema rules for a CRD version's ``openAPIV3Schema`` at field ``base``."""
    if not isinstance(schema, Mapping):
        return [required(base)]
    errors: list[StatusCause] = []
    if schema.get("type") != "object":
        if not schema.get("type"):
            errors.append(required(f"{base}.type", "must not be empty at the root"))
        else:
            errors.append(not_supported(f"{base}.type", schema.get("type"), ["object"]))
    _check_node(schema, base, errors, specified=True)
    if errors:
        return errors
    import jsonschema

    try:
        jsonschema.Draft4Validator.check_schema(to_json_schema(schema))
    except jsonschema.SchemaError as exc:
        errors.append(invalid(field_path(exc.absolute_path, base), exc.instance, exc.message))
    return errors


def _check_node(
    node: Mapping[str, Any], base: str, errors: list[StatusCause], *, specified: bool
) -> None:
    if "$ref" in node:
        errors.append(forbidden(f"{base}.$ref", "$ref is not supported"))
    type_ = node.get("type")
    loose = node.get("x-kubernetes-int-or-string") is True or (
        node.get("x-kubernetes-preserve-unknown-fields") is True
    )
    if type_ is None:
        if specified and not loose:
            errors.append(required(f"{base}.type", "must not be empty for specified fields"))
    elif type_ not in _TYPES:
        errors.append(not_supported(f"{base}.type", type_, sorted(_TYPES)))
    if type_ == "array" and not isinstance(node.get("items"), Mapping):
        errors.append(required(f"{base}.items", "must be specified"))
    properties = node.get("properties")
    additional = node.get("additionalProperties")
    if properties is not None and additional not in (None, True):
        errors.append(
            forbidden(
                f"{base}.additionalProperties",
                "additionalProperties and properties are mutual exclusive",
            )
        )
    if additional is False:
        errors.append(forbidden(f"{base}.additionalProperties", "must not be false"))
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as exc:
            errors.append(
                invalid(f"{base}.pattern", pattern, f"not a valid regular expression: {exc}")
            )
    if isinstance(properties, Mapping):
        for key, sub in properties.items():
            if isinstance(sub, Mapping):
                _check_node(sub, f"{base}.properties[{key}]", errors, specified=True)
            else:
                errors.append(invalid(f"{base}.properties[{key}]", sub, "must be a schema"))
    if isinstance(additional, Mapping):
        _check_node(additional, f"{base}.additionalProperties", errors, specified=True)
    items = node.get("items")
    if isinstance(items, Mapping):
        _check_node(items, f"{base}.items", errors, specified=True)
    for key in _SCHEMA_LIST_KEYS:
        for index, sub in enumerate(node.get(key) or []):
            if isinstance(sub, Mapping):
                _check_node(sub, f"{base}.{key}[{index}]", errors, specified=False)
    if "default" in node and isinstance(node, Mapping):
        _check_default(node, base, errors)


def _check_default(node: Mapping[str, Any], base: str, errors: list[StatusCause]) -> None:
    value = copy.deepcopy(node["default"])
    if isinstance(value, dict):
        _prune_object(value, node, keep=())
        _default(value, node)
    import jsonschema

    try:
        validator = jsonschema.Draft4Validator(
            to_json_schema(node, root=False), format_checker=_format_checker()
        )
        problems = list(validator.iter_errors(value))
    except jsonschema.SchemaError:
        return  # reported by check_schema's schema check
    if problems:
        errors.append(
            invalid(f"{base}.default", node["default"], f"must validate: {problems[0].message}")
        )
