"""PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.

Strategic merge patch follows k8s.io/apimachinery's strategicpatch for the built-in kinds:
lists with a ``patchMergeKey`` merge element-wise (Service ``spec.ports`` by ``port``, Pod
``containers`` by ``name``...), primitive lists with strategy ``merge`` merge as sets
(``metadata.finalizers``), every other list is replaced whole. Directives: ``$patch``
(``replace``, ``delete``, ``merge``) on maps and list elements, ``$setElementOrder/<list>``,
``$retainKeys``, ``$deleteFromPrimitiveList/<list>``; a null deletes a key. Kinds without a
strategic-merge schema (custom resources) get a 415 upstream (see
``supports_strategic_merge``); here they fall back to merge-patch semantics for lists.

All functions are pure: they return a new object and never modify their arguments.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jsonpatch
import jsonpointer

if TYPE_CHECKING:
    from apiserver.resources import Resource

RawObject = dict[str, Any]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ELEMENT_ORDER = "$setElementOrder/"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"


class PatchError(Exception):
    """A patch that cannot be applied; ``code`` is 400 (malformed) or 422 (does not apply)."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --------------------------------------------------------------------------- JSON patch


def apply_json_patch(obj: RawObject, ops: Any) -> RawObject:
    """RFC 6902, ``test`` included. A malformed patch is 400; one that does not apply
    (failed ``test``, missing path) is 422, as upstream answers."""
    if not isinstance(ops, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch", 400)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation: {op!r}", 400)
        if op["op"] not in ("add", "remove", "replace", "move", "copy", "test"):
            raise PatchError(f"Unexpected kind: {op['op']}", 400)
        if op["op"] in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"{op['op']} operation has no value: {op['path']}", 400)
        if op["op"] in ("move", "copy") and "from" not in op:
            raise PatchError(f"{op['op']} operation has no from: {op['path']}", 400)
    doc: Any = copy.deepcopy(obj)
    for op in ops:
        try:
            doc = jsonpatch.JsonPatch([op]).apply(doc)
        except jsonpatch.JsonPatchTestFailed:
            raise PatchError(f"testing value {op['path']} failed: test failed", 422) from None
        except jsonpatch.InvalidJsonPatch as exc:
            raise PatchError(str(exc), 400) from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
            path = op.get("from") if op["op"] in ("move", "copy") else op["path"]
            raise PatchError(
                f'{op["op"]} operation does not apply: doc is missing path: "{path}": '
                "missing value",
                422,
            ) from None
    if not isinstance(doc, dict):
        raise PatchError("the patched document is not a JSON object", 422)
    return doc


# --------------------------------------------------------------------------- merge patch


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def apply_merge_patch(obj: RawObject, patch: Any) -> RawObject:
    """RFC 7386: maps merge recursively, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        raise PatchError("json: cannot unmarshal non-object into a merge patch", 400)
    result = _merge(copy.deepcopy(obj), patch)
    assert isinstance(result, dict)
    return result


# --------------------------------------------------------------------------- SMP schemas


@dataclass(frozen=True, slots=True)
class FieldMeta:
    """Patch metadata of one field: a map's children, or a list's strategy and merge key."""

    merge_key: str | None = None
    """For a list of maps merged element-wise: the key that identifies an element."""
    merge: bool = False
    """List strategy ``merge`` (with ``merge_key`` for maps; as a set for primitives)."""
    retain_keys: bool = False
    children: Mapping[str, FieldMeta] = field(default_factory=dict)
    """The fields of a map, or of each element of a list of maps."""


Schema = Mapping[str, FieldMeta]


def _by(key: str, children: Schema | None = None, retain_keys: bool = False) -> FieldMeta:
    return FieldMeta(merge_key=key, merge=True, retain_keys=retain_keys, children=children or {})


def _map(children: Schema) -> FieldMeta:
    return FieldMeta(children=children)


_SET = FieldMeta(merge=True)
_CONDITIONS = _by("type")

_OBJECT_META: Schema = {"finalizers": _SET, "ownerReferences": _by("uid")}
_CONTAINER: Schema = {
    "ports": _by("containerPort"),
    "env": _by("name"),
    "volumeMounts": _by("mountPath"),
    "volumeDevices": _by("devicePath"),
}
_POD_SPEC: Schema = {
    "containers": _by("name", _CONTAINER),
    "initContainers": _by("name", _CONTAINER),
    "ephemeralContainers": _by("name", _CONTAINER),
    "volumes": _by("name", retain_keys=True),
    "imagePullSecrets": _by("name"),
    "hostAliases": _by("ip"),
    "topologySpreadConstraints": _by("topologyKey"),
    "schedulingGates": _by("name"),
    "resourceClaims": _by("name", retain_keys=True),
}
_POD_STATUS: Schema = {
    "conditions": _CONDITIONS,
    "podIPs": _by("ip"),
    "hostIPs": _by("ip"),
}
SMP_SCHEMAS: dict[tuple[str, str], Schema] = {
    ("", "Pod"): {
        "metadata": _map(_OBJECT_META),
        "spec": _map(_POD_SPEC),
        "status": _map(_POD_STATUS),
    },
    ("", "Service"): {
        "metadata": _map(_OBJECT_META),
        "spec": _map({"ports": _by("port")}),
        "status": _map({"conditions": _CONDITIONS}),
    },
    ("", "Namespace"): {
        "metadata": _map(_OBJECT_META),
        "status": _map({"conditions": _CONDITIONS}),
    },
    ("", "Node"): {
        "metadata": _map(_OBJECT_META),
        "spec": _map({"podCIDRs": _SET}),
        "status": _map({"conditions": _CONDITIONS, "addresses": _by("type")}),
    },
    ("", "Endpoints"): {"metadata": _map(_OBJECT_META)},
    ("", "Event"): {"metadata": _map(_OBJECT_META)},
    ("", "ConfigMap"): {"metadata": _map(_OBJECT_META)},
    ("discovery.k8s.io", "EndpointSlice"): {"metadata": _map(_OBJECT_META)},
    ("networking.k8s.io", "IPAddress"): {"metadata": _map(_OBJECT_META)},
    ("coordination.k8s.io", "Lease"): {"metadata": _map(_OBJECT_META)},
}


def supports_strategic_merge(resource: Resource) -> bool:
    """True for the built-in kinds; custom resources get 415 upstream."""
    return (resource.group, resource.kind) in SMP_SCHEMAS


# --------------------------------------------------------------------------- SMP


def apply_strategic_merge_patch(obj: RawObject, patch: Any, resource: Resource) -> RawObject:
    """Apply a strategic merge patch with the kind's merge keys (see the module docstring)."""
    if not isinstance(patch, dict):
        raise PatchError(
            "json: cannot unmarshal non-object into Go value of type map[string]interface {}", 400
        )
    schema = SMP_SCHEMAS.get((resource.group, resource.kind))
    if patch.get(DIRECTIVE) == "delete":
        return {}
    return _merge_map(copy.deepcopy(obj), patch, schema, merge_lists=schema is not None)


def _strip_directives(value: Any) -> Any:
    """A patch value with its directives removed, for a key the original lacks."""
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and v is not None
        }
    if isinstance(value, list):
        return [
            _strip_directives(v)
            for v in value
            if not (
                isinstance(v, dict) and v.get(DIRECTIVE) in ("delete", "replace") and len(v) <= 2
            )
        ]
    return value


def _merge_map(
    original: RawObject, patch: Mapping[str, Any], schema: Schema | None, *, merge_lists: bool
) -> RawObject:
    directive = patch.get(DIRECTIVE)
    if directive == "replace":
        return {k: _strip_directives(v) for k, v in patch.items() if not k.startswith("$")}
    if directive not in (None, "merge", "delete"):
        raise PatchError(f"Unknown patch type: {directive!r}", 400)
    retain = patch.get(RETAIN_KEYS)
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError("invalid patch: $retainKeys must be a list of strings", 400)
        for key in list(original):
            if key not in retain:
                del original[key]
        for key, value in patch.items():
            if not key.startswith("$") and value is not None and key not in retain:
                raise PatchError(
                    f"The $retainKeys directive does not list the field {key} of the patch", 422
                )
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith(DELETE_FROM_PRIMITIVE_LIST):
            name = key[len(DELETE_FROM_PRIMITIVE_LIST) :]
            if not isinstance(value, list):
                raise PatchError(f"invalid patch: {key} must be a list", 400)
            current = original.get(name)
            if isinstance(current, list):
                original[name] = [item for item in current if item not in value]
        elif key.startswith(SET_ELEMENT_ORDER):
            if not isinstance(value, list):
                raise PatchError(f"invalid patch: {key} must be a list", 400)
            orders[key[len(SET_ELEMENT_ORDER) :]] = value
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        meta = schema.get(key) if schema is not None else None
        if value is None:
            original.pop(key, None)
            continue
        current = original.get(key)
        if isinstance(value, dict):
            if value.get(DIRECTIVE) == "delete":
                original.pop(key, None)
                continue
            children = meta.children if meta is not None else None
            base = current if isinstance(current, dict) else {}
            original[key] = _merge_map(base, value, children, merge_lists=merge_lists)
        elif isinstance(value, list):
            base_list = current if isinstance(current, list) else []
            original[key] = _merge_list(base_list, value, meta, merge_lists=merge_lists)
        else:
            original[key] = value
    for name, order in orders.items():
        current = original.get(name)
        if isinstance(current, list):
            meta = schema.get(name) if schema is not None else None
            original[name] = _apply_order(current, order, meta)
    return original


def _merge_list(
    original: list[Any], patch: list[Any], meta: FieldMeta | None, *, merge_lists: bool
) -> list[Any]:
    if not merge_lists or meta is None or not meta.merge:
        return [_strip_directives(v) for v in patch]
    if any(isinstance(v, dict) and v.get(DIRECTIVE) == "replace" for v in patch):
        return [
            _strip_directives(v)
            for v in patch
            if not (isinstance(v, dict) and v.get(DIRECTIVE) == "replace")
        ]
    if meta.merge_key is None:
        # A set of primitives: union, original order first.
        merged = list(original)
        for item in patch:
            if item not in merged:
                merged.append(item)
        return merged
    key = meta.merge_key
    merged = [copy.deepcopy(item) for item in original]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(
                f"invalid patch: a list with merge key {key!r} holds a non-object: {item!r}", 400
            )
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}", 422)
        position = next(
            (i for i, o in enumerate(merged) if isinstance(o, dict) and o.get(key) == item[key]),
            None,
        )
        if item.get(DIRECTIVE) == "delete":
            merged = [o for o in merged if not (isinstance(o, dict) and o.get(key) == item[key])]
            continue
        if position is None:
            merged.append(_merge_map({}, item, meta.children, merge_lists=True))
        else:
            merged[position] = _merge_map(merged[position], item, meta.children, merge_lists=True)
    return merged


def _identity(meta: FieldMeta | None) -> Callable[[Any], Any]:
    key = meta.merge_key if meta is not None else None
    if key is None:
        return lambda item: item
    return lambda item: item.get(key) if isinstance(item, dict) else item


def _apply_order(items: list[Any], order: list[Any], meta: FieldMeta | None) -> list[Any]:
    """$setElementOrder: the patch's items in the given order, the server-only items merged
    in at their original relative positions (strategicpatch's normalizeElementOrder)."""
    ident = _identity(meta)
    wanted = [ident(o) for o in order]
    server_order = [ident(item) for item in items]
    in_patch = sorted(
        (item for item in items if ident(item) in wanted), key=lambda i: wanted.index(ident(i))
    )
    server_only = [item for item in items if ident(item) not in wanted]

    def position(item: Any) -> int:
        value = ident(item)
        return server_order.index(value) if value in server_order else -1

    result: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(in_patch):
        if i >= len(server_only):
            result.append(in_patch[j])
            j += 1
        elif j >= len(in_patch):
            result.append(server_only[i])
            i += 1
        else:
            left, right = position(server_only[i]), position(in_patch[j])
            if left >= 0 and right >= 0 and left < right:
                result.append(server_only[i])
                i += 1
            else:
                result.append(in_patch[j])
                j += 1
    return result
