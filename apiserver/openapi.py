"""``/openapi/v3``: the index and one document per group-version, generated from the models.

What kubectl v1.32 needs (see the kubectl-compat reference, section 5): for the object's
group-version, a path whose ``patch`` operation carries ``x-kubernetes-group-version-kind``
and a ``fieldValidation`` parameter. Then kubectl trusts the server to validate and sends
``fieldValidation=Strict``. The PATCH operations deliberately declare no ``requestBody``:
kubectl then builds strategic merge patches from its compiled-in types (upstream's merge
keys) rather than from these schemas.

Component schemas are generated from the pydantic models (wire names, required fields,
int-or-string, and the ``x-kubernetes-patch-*`` extensions from ``apiserver.patch``).
Custom resources use the schema a provider registered with ``register_schema_provider`` (the
CRD's openAPIV3Schema), else an object that preserves unknown fields. Documents are cached
per ResourceIndex generation; their ``hash`` is a digest of their content.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from apiserver.patch import SMP_SCHEMAS, FieldMeta
from apiserver.resources import Resource, ResourceIndex
from minik8s.models import KINDS, KubeModel, KubeObject, model_for

RawObject = dict[str, Any]
SchemaProvider = Callable[[Resource], Mapping[str, Any] | None]

_PACKAGES = {
    "minik8s.models.meta": "io.k8s.apimachinery.pkg.apis.meta.v1",
    "minik8s.models.core": "io.k8s.api.core.v1",
    "minik8s.models.discovery": "io.k8s.api.discovery.v1",
    "minik8s.models.networking": "io.k8s.api.networking.v1",
    "minik8s.models.coordination": "io.k8s.api.coordination.v1",
}
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_SCALAR_SCHEMAS: dict[str, RawObject] = {
    INT_OR_STRING: {
        "description": "IntOrString is a type that can hold an int32 or a string.",
        "type": "string",
        "format": "int-or-string",
    },
    QUANTITY: {
        "description": "Quantity is a fixed-point representation of a number "
        "(``100m``, ``1Gi``, ``2``).",
        "type": "string",
    },
}
_QUERY_STRING = {"type": "string", "uniqueItems": True}
_SCHEMA_PROVIDERS: list[SchemaProvider] = []


def register_schema_provider(provider: SchemaProvider) -> None:
    """Add a source of schemas for kinds without a model (the CRD registry's)."""
    _SCHEMA_PROVIDERS.append(provider)
    invalidate()


def schema_name(model: type[KubeModel]) -> str:
    """``io.k8s.api.core.v1.Service``, as upstream names its definitions."""
    package = _PACKAGES.get(model.__module__, model.__module__)
    return f"{package}.{model.__name__}"


def _ref(model: type[KubeModel]) -> RawObject:
    return {"$ref": f"#/components/schemas/{schema_name(model)}"}


# --------------------------------------------------------------------------- model -> schema


def _patch_extensions() -> dict[tuple[type[KubeModel], str], FieldMeta]:
    """(model class, wire field) -> the field's patch metadata, walked from SMP_SCHEMAS."""
    found: dict[tuple[type[KubeModel], str], FieldMeta] = {}

    def walk(model: type[KubeModel], schema: Mapping[str, FieldMeta]) -> None:
        by_wire = {info.alias or name: info.annotation for name, info in model.model_fields.items()}
        for wire, meta in schema.items():
            if wire not in by_wire:
                continue
            if meta.merge:
                found[(model, wire)] = meta
            inner = _inner_model(by_wire[wire])
            if inner is not None and meta.children:
                walk(inner, meta.children)

    for (group, kind), schema in SMP_SCHEMAS.items():
        model = model_for(group, kind)
        if model is not None:
            walk(model, schema)
    return found


def _inner_model(annotation: Any) -> type[KubeModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, KubeModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _type_schema(annotation: Any, pending: list[type[KubeModel]]) -> RawObject:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_schema(typing.get_args(annotation)[0], pending)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if len(args) == 1:
            return _type_schema(args[0], pending)
        if str in args and float in args:
            return {"$ref": f"#/components/schemas/{QUANTITY}"}
        if str in args and int in args:
            return {"$ref": f"#/components/schemas/{INT_OR_STRING}"}
        return {}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0], pending) if args else {}}
    if origin is dict:
        value = args[1] if len(args) == 2 else Any
        if value is Any:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "additionalProperties": _type_schema(value, pending)}
    if annotation is Any:
        return {"x-kubernetes-preserve-unknown-fields": True}
    if isinstance(annotation, type) and issubclass(annotation, KubeModel):
        pending.append(annotation)
        return _ref(annotation)
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer", "format": "int64"}
    if annotation is float:
        return {"type": "number", "format": "double"}
    if annotation is str:
        return {"type": "string"}
    return {}


def _model_schema(
    model: type[KubeModel],
    pending: list[type[KubeModel]],
    extensions: Mapping[tuple[type[KubeModel], str], FieldMeta],
) -> RawObject:
    properties: RawObject = {}
    required: list[str] = []
    for name, info in model.model_fields.items():
        wire = info.alias or name
        prop = _type_schema(info.annotation, pending)
        if info.description:
            prop["description"] = info.description
        meta = extensions.get((model, wire))
        if meta is not None:
            if meta.merge_key is not None:
                prop["x-kubernetes-patch-merge-key"] = meta.merge_key
                prop["x-kubernetes-list-type"] = "map"
                prop["x-kubernetes-list-map-keys"] = [meta.merge_key]
            else:
                prop["x-kubernetes-list-type"] = "set"
            prop["x-kubernetes-patch-strategy"] = (
                "merge,retainKeys" if meta.retain_keys else "merge"
            )
        properties[wire] = prop
        if info.is_required():
            required.append(wire)
    schema: RawObject = {"type": "object", "properties": properties}
    if model.__doc__ and model.__doc__ != KubeModel.__doc__ and model.__doc__ != KubeObject.__doc__:
        schema["description"] = " ".join(model.__doc__.split())
    if required:
        schema["required"] = required
    if model.OPEN:
        schema["x-kubernetes-preserve-unknown-fields"] = True
    if issubclass(model, KubeObject) and model.KIND:
        schema["x-kubernetes-group-version-kind"] = [
            {"group": model.GROUP, "kind": model.KIND, "version": model.VERSION}
        ]
    return schema


def component_schemas(models: list[type[KubeModel]]) -> dict[str, RawObject]:
    """The schemas of ``models`` and of every model they refer to, by upstream name."""
    extensions = _patch_extensions()
    schemas: dict[str, RawObject] = dict(_SCALAR_SCHEMAS)
    pending = list(models)
    while pending:
        model = pending.pop()
        name = schema_name(model)
        if name in schemas:
            continue
        schemas[name] = _model_schema(model, pending, extensions)
    return dict(sorted(schemas.items()))


# --------------------------------------------------------------------------- paths


def _operation_group(res: Resource) -> str:
    if not res.group:
        return f"CoreV{res.version.removeprefix('v')}"
    words = res.group.replace("-", ".").split(".")
    if res.group.endswith(".k8s.io"):
        words = words[:-2]
    return "".join(w[:1].upper() + w[1:] for w in words) + res.version[:1].upper() + res.version[1:]


def _param(name: str, where: str = "query", schema: RawObject | None = None) -> RawObject:
    param: RawObject = {"name": name, "in": where, "schema": schema or _QUERY_STRING}
    if where == "path":
        param["required"] = True
    return param


_WRITE_PARAMS = [_param("dryRun"), _param("fieldManager"), _param("fieldValidation")]
_PATCH_PARAMS = [*_WRITE_PARAMS, _param("force", schema={"type": "boolean", "uniqueItems": True})]
_LIST_PARAMS = [
    _param("allowWatchBookmarks", schema={"type": "boolean", "uniqueItems": True}),
    _param("continue"),
    _param("fieldSelector"),
    _param("labelSelector"),
    _param("limit", schema={"type": "integer", "uniqueItems": True}),
    _param("resourceVersion"),
    _param("resourceVersionMatch"),
    _param("timeoutSeconds", schema={"type": "integer", "uniqueItems": True}),
    _param("watch", schema={"type": "boolean", "uniqueItems": True}),
]


def _object_ref(res: Resource, model_ref: RawObject) -> RawObject:
    return {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": model_ref}},
        }
    }


def _operation(
    res: Resource, action: str, verb: str, scope: str, params: list[RawObject], ref: RawObject
) -> RawObject:
    op: RawObject = {
        "operationId": f"{verb}{_operation_group(res)}{scope}{res.kind}",
        "tags": [_operation_group(res)[:1].lower() + _operation_group(res)[1:]],
        "parameters": params,
        "responses": _object_ref(res, ref),
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {
            "group": res.group,
            "version": res.version,
            "kind": res.kind,
        },
    }
    if action in ("post", "put"):
        op["requestBody"] = {"content": {"*/*": {"schema": ref}}, "required": True}
    return op


def _paths(res: Resource, ref: RawObject) -> dict[str, RawObject]:
    root = f"/api/{res.version}" if not res.group else f"/apis/{res.group}/{res.version}"
    if res.namespaced:
        collection = f"{root}/namespaces/{{namespace}}/{res.plural}"
        scope = "Namespaced"
        scope_params = [_param("namespace", "path")]
    else:
        collection = f"{root}/{res.plural}"
        scope = ""
        scope_params = []
    item = f"{collection}/{{name}}"
    name_params = [_param("name", "path"), *scope_params]
    list_ref: RawObject = {"type": "object"}
    paths: dict[str, RawObject] = {
        collection: {
            "get": _operation(res, "list", "list", scope, _LIST_PARAMS, list_ref),
            "post": _operation(res, "post", "create", scope, _WRITE_PARAMS, ref),
            "delete": _operation(
                res, "deletecollection", "deleteCollection", scope, _LIST_PARAMS, ref
            ),
            "parameters": scope_params,
        },
        item: {
            "get": _operation(res, "get", "read", scope, [], ref),
            "put": _operation(res, "put", "replace", scope, _WRITE_PARAMS, ref),
            "patch": _operation(res, "patch", "patch", scope, _PATCH_PARAMS, ref),
            "delete": _operation(res, "delete", "delete", scope, [], ref),
            "parameters": name_params,
        },
    }
    for sub in res.subresources:
        title = sub[:1].upper() + sub[1:]
        paths[f"{item}/{sub}"] = {
            "get": _operation(res, "get", "read", scope, [], ref)
            | {"operationId": f"read{_operation_group(res)}{scope}{res.kind}{title}"},
            "put": _operation(res, "put", "replace", scope, _WRITE_PARAMS, ref)
            | {"operationId": f"replace{_operation_group(res)}{scope}{res.kind}{title}"},
            "patch": _operation(res, "patch", "patch", scope, _PATCH_PARAMS, ref)
            | {"operationId": f"patch{_operation_group(res)}{scope}{res.kind}{title}"},
            "parameters": name_params,
        }
    return paths


# --------------------------------------------------------------------------- documents


def _custom_schema(res: Resource) -> RawObject:
    schema: RawObject
    for provider in _SCHEMA_PROVIDERS:
        found = provider(res)
        if found is not None:
            schema = dict(json.loads(json.dumps(found)))
            break
    else:
        schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema.setdefault("type", "object")
    properties = schema.setdefault("properties", {})
    properties.setdefault("apiVersion", {"type": "string"})
    properties.setdefault("kind", {"type": "string"})
    properties["metadata"] = {
        "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    }
    schema["x-kubernetes-group-version-kind"] = [
        {"group": res.group, "kind": res.kind, "version": res.version}
    ]
    return schema


def _custom_schema_name(res: Resource) -> str:
    reversed_group = ".".join(reversed(res.group.split(".")))
    return f"{reversed_group}.{res.version}.{res.kind}"


def _path_key(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def build_document(index: ResourceIndex, group: str, version: str) -> RawObject | None:
    """The OpenAPI v3 document of one group-version; None when it is not served."""
    resources = [r for r in index.all() if r.group == group and r.version == version]
    if not resources:
        return None
    from minik8s.models.meta import ObjectMeta

    models: list[type[KubeModel]] = [ObjectMeta]
    paths: dict[str, RawObject] = {}
    custom: dict[str, RawObject] = {}
    for res in resources:
        model = KINDS.get((res.group, res.kind))
        if model is not None and model.VERSION == res.version:
            models.append(model)
            ref = _ref(model)
        else:
            name = _custom_schema_name(res)
            custom[name] = _custom_schema(res)
            ref = {"$ref": f"#/components/schemas/{name}"}
        paths.update(_paths(res, ref))
    schemas = component_schemas(models)
    schemas.update(custom)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


class _Cache:
    def __init__(self) -> None:
        self.key: tuple[int, int] | None = None
        self.documents: dict[str, RawObject] = {}
        self.hashes: dict[str, str] = {}

    def fresh(self, index: ResourceIndex) -> _Cache:
        key = (id(index), index.generation)
        if key != self.key:
            self.key = key
            self.documents = {}
            self.hashes = {}
            for group in index.groups():
                for version in index.versions(group):
                    doc = build_document(index, group, version)
                    if doc is None:
                        continue
                    path = _path_key(group, version)
                    self.documents[path] = doc
                    digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()
                    self.hashes[path] = digest.upper()
        return self


_CACHE = _Cache()


def invalidate() -> None:
    """Forget every cached document (a CRD's schema changed without a new resource)."""
    _CACHE.key = None


def root(index: ResourceIndex) -> RawObject:
    """``GET /openapi/v3``: each group-version's document URL, with its content hash."""
    cache = _CACHE.fresh(index)
    return {
        "paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={cache.hashes[path]}"}
            for path in cache.documents
        }
    }


def document(index: ResourceIndex, path: str) -> RawObject | None:
    """``GET /openapi/v3/<path>`` (``api/v1``, ``apis/discovery.k8s.io/v1``); None if unknown."""
    return _CACHE.fresh(index).documents.get(path.strip("/"))


def document_hash(index: ResourceIndex, path: str) -> str | None:
    return _CACHE.fresh(index).hashes.get(path.strip("/"))


# The names of the agreed interface.
openapi_index = root
