"""HTTP handlers: parse the request, call the registry, write the response.

Everything Kubernetes-specific about the wire lives here: the URL shapes, query
parameters (selectors, limit/continue, resourceVersion, watch, dryRun, fieldValidation),
body decoding (JSON or YAML, at most 3 MiB), patch content types, Table and YAML
negotiation, and the watch stream. Every failure leaves as a metav1.Status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from apiserver import errors
from apiserver.encoding import DecodeError, decode_json, decode_yaml, encode, encode_yaml
from apiserver.errors import StatusError
from apiserver.metrics import Metrics
from apiserver.registry import FieldValidation, Registry, WriteResult
from apiserver.request import ApiRequest
from apiserver.resources import Resource, ResourceIndex
from apiserver.watch import CacheEntry
from apiserver.watch_http import (
    ConvertedEvents,
    ErrorStream,
    EventEncoder,
    JsonEvents,
    TableEvents,
    WatchResponse,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 3 * 1024 * 1024
JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
TABLE_CONTENT_TYPE = "application/json;as=Table;v=v1;g=meta.k8s.io"
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
}
SUPPORTED_PATCH_TYPES = (*PATCH_TYPES, "application/apply-patch+yaml")
BOOKMARK_INTERVAL_S = 20.0
VERSION_INFO = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-minik8s",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-11-26T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass
class ApiState:
    """What every handler needs; one per app (``app.state.api``)."""

    registry: Registry
    index: ResourceIndex
    metrics: Metrics
    bookmark_interval: float = BOOKMARK_INTERVAL_S
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    ready: bool = False

    def stop_watches(self) -> None:
        """End every open watch (shutdown): uvicorn would otherwise wait on them forever."""
        self.stopping.set()
        self.registry.hub.end_all()


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


# -- responses -------------------------------------------------------------------------


def json_response(
    body: Any, status: int = 200, *, content_type: str = JSON, headers: dict[str, str] | None = None
) -> Response:
    return EncodedResponse(encode(body), status, content_type, headers)


class EncodedResponse(Response):
    """A Response of encoded bytes with the headers Starlette's ``init_headers`` writes for
    it (``headers``, Content-Length, Content-Type), set without its general checks."""

    def __init__(
        self, body: bytes, status: int, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        raw: list[tuple[bytes, bytes]] = []
        if headers:
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        if (
            content_type.startswith("text/")
            or status < 200
            or status in (204, 304)
            or (raw and any(k in (b"content-length", b"content-type") for k, _ in raw))
        ):
            super().__init__(body, status, headers, content_type)
            return
        self.status_code = status
        self.media_type = content_type
        self.background = None
        self.body = body
        raw.append((b"content-length", str(len(body)).encode("latin-1")))
        raw.append((b"content-type", content_type.encode("latin-1")))
        self.raw_headers = raw


def status_response(err: StatusError) -> Response:
    return json_response(err.to_status(), err.code)


def object_response(
    request: ApiRequest, body: Any, status: int = 200, warnings: list[str] | None = None
) -> Response:
    headers = {}
    if warnings:
        headers["Warning"] = ", ".join(f'299 - "{_quote(w)}"' for w in warnings[:20])
    if _wants_yaml(request):
        return Response(encode_yaml(body), status_code=status, media_type=YAML, headers=headers)
    return json_response(body, status, headers=headers)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _wants_table(request: ApiRequest) -> bool:
    for media, params in request.accepts():
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return True
        if media in (JSON, "*/*", YAML):
            return False
    return False


def _wants_yaml(request: ApiRequest) -> bool:
    accepts = request.accepts()
    return bool(accepts) and accepts[0][0] == YAML


# -- request parsing --------------------------------------------------------------------


async def read_body(request: ApiRequest) -> bytes:
    length = request.header(b"content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise errors.request_entity_too_large(MAX_BODY_BYTES)
    body = await request.body(MAX_BODY_BYTES)
    if body is None:
        raise errors.request_entity_too_large(MAX_BODY_BYTES)
    return body


def _media_type(request: ApiRequest) -> str:
    return (request.header(b"content-type") or "").split(";")[0].strip().lower()


async def read_object(request: ApiRequest) -> Any:
    body = await read_body(request)
    media = _media_type(request)
    if not body.strip():
        raise errors.bad_request("the request body is empty; send the object as JSON or YAML")
    try:
        if media in ("", JSON, "*/*", "text/plain"):
            return decode_json(body)
        if media in (YAML, "application/x-yaml", "text/yaml"):
            return decode_yaml(body)
    except DecodeError as exc:
        raise errors.bad_request(
            f"the request body is not valid {_kind_of(media)}: {exc}"
        ) from None
    if media == PROTOBUF:
        return _read_protobuf(body)
    raise errors.unsupported_media_type(media, (JSON, YAML))


def _read_protobuf(body: bytes) -> Any:
    """kubectl's generators (create configmap|namespace|service) post protobuf."""
    from apiserver.protobuf import ProtobufError, UnsupportedKind, decode_object

    try:
        return decode_object(body)
    except UnsupportedKind as exc:
        raise StatusError(415, "UnsupportedMediaType", str(exc)) from None
    except ProtobufError as exc:
        raise errors.bad_request(f"the protobuf request body is not readable: {exc}") from None


def _kind_of(media: str) -> str:
    return "YAML" if "yaml" in media else "JSON"


def _query_bool(request: ApiRequest, name: str) -> bool:
    return request.query(name).lower() in ("true", "1")


def _dry_run(request: ApiRequest) -> bool:
    values = request.query_all("dryRun")
    for value in values:
        if value != "All":
            raise errors.bad_request(
                f'dryRun: Unsupported value: "{value}": supported values: "All"'
            )
    return bool(values)


def _field_validation(request: ApiRequest) -> FieldValidation:
    value = request.query("fieldValidation")
    if value in ("", "Ignore"):
        return "Ignore"
    if value in ("Strict", "Warn"):
        return value  # type: ignore[return-value]
    raise errors.bad_request(
        f'fieldValidation: Unsupported value: "{value}": '
        'supported values: "Ignore", "Strict", "Warn"'
    )


def _int_param(request: ApiRequest, name: str, default: int = 0) -> int:
    raw = request.query_or_none(name)
    if raw is None or raw == "":
        return default
    try:
        return int(float(raw))
    except ValueError:
        raise errors.bad_request(f"{name}: invalid value {raw!r}: must be an integer") from None


# -- URL resolution ---------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str


def resolve(request: ApiRequest) -> Target:
    """The resource a URL names, or 404 (with upstream's message for unknown resources)."""
    p = request.path_params
    index = request.state.index
    group = p.get("group", "")
    version = p["version"]
    namespace = p.get("namespace")
    plural = p["plural"]
    name = p.get("name")
    sub = p.get("sub", "")
    resource = index.lookup(group, version, plural)
    if namespace is not None and resource is None and name is None:
        # /api/v1/namespaces/{name}/{subresource} looks like a namespaced collection.
        ns_res = index.lookup(group, version, "namespaces")
        if ns_res is not None and plural in ns_res.subresources:
            return Target(ns_res, None, namespace, plural)
    if resource is None:
        raise errors.resource_not_found(request.url_path)
    if namespace is not None and not resource.namespaced:
        raise errors.resource_not_found(request.url_path)
    if sub and sub not in resource.subresources:
        raise errors.resource_not_found(request.url_path)
    return Target(resource, namespace, name, sub)


# -- resource endpoint ------------------------------------------------------------------


def _verb(request: ApiRequest, target: Target) -> str:
    method = request.method
    if target.name is None:
        if method == "GET":
            return "WATCH" if _query_bool(request, "watch") else "LIST"
        if method == "DELETE":
            return "DELETECOLLECTION"
        return method
    if method == "PATCH" and _media_type(request) == "application/apply-patch+yaml":
        return "APPLY"
    return method


async def resource_route(request: Request) -> Response:
    """The resource routes' endpoint when Starlette routed the request (the app's own
    dispatch, ``routes.resource_params``, serves them without Starlette otherwise)."""
    scope = request.scope
    api = ApiRequest(scope, request.receive, request.path_params, state_of(request))
    return await resource_endpoint(api)


async def resource_endpoint(request: ApiRequest) -> Response:
    state = request.state
    started = time.perf_counter()
    labels = ("", "", "", "", "", "")
    verb = request.method
    try:
        target = resolve(request)
        verb = _verb(request, target)
        res = target.resource
        scope = "resource" if target.name else ("namespace" if target.namespace else "cluster")
        labels = (verb, res.group, res.version, res.plural, target.subresource, scope)
        response = await _dispatch(request, state, target, verb)
    except StatusError as err:
        response = status_response(err)
    except Exception:
        logger.exception("%s %s failed", request.method, request.url_path)
        response = status_response(
            errors.internal("an internal error occurred; the server log has the details")
        )
    if verb != "WATCH" or response.status_code != 200:
        state.metrics.observe(labels, response.status_code, time.perf_counter() - started)
    else:
        state.metrics.count(labels, response.status_code)
    return response


async def _dispatch(request: ApiRequest, state: ApiState, t: Target, verb: str) -> Response:
    reg = state.registry
    res = t.resource
    method = request.method
    if t.name is None:
        if method == "GET":
            if verb == "WATCH":
                return await watch(request, state, t)
            return await list_objects(request, state, t)
        if method == "POST":
            if t.namespace is None and res.namespaced:
                raise errors.method_not_supported(res.plural, "create", res.group)
            body = await read_object(request)
            result = await reg.create(
                res,
                t.namespace,
                body,
                dry_run=_dry_run(request),
                field_validation=_field_validation(request),
                owned=True,
            )
            return object_response(request, _served(reg, res, result.obj), 201, result.warnings)
        if method == "DELETE":
            listed = await reg.delete_collection(
                res,
                t.namespace,
                label_selector=request.query("labelSelector"),
                field_selector=request.query("fieldSelector"),
                dry_run=_dry_run(request),
            )
            items = _served_all(reg, res, listed.items)
            return object_response(request, _list_body(res, items, listed.revision))
        raise errors.method_not_supported(res.plural, _verb_word(method), res.group)
    name = t.name
    if t.subresource and method not in ("GET", "PUT", "PATCH"):
        raise errors.method_not_supported(
            f"{res.plural}/{t.subresource}", _verb_word(method), res.group
        )
    if method == "GET":
        obj = _served(reg, res, await reg.get(res, t.namespace, name))
        if _wants_table(request):
            return _table_response(request, state, res, [obj], _revision_of(obj))
        return object_response(request, obj)
    if method == "PUT":
        body = await read_object(request)
        result = await reg.update(
            res,
            t.namespace,
            name,
            body,
            subresource=t.subresource,
            dry_run=_dry_run(request),
            field_validation=_field_validation(request),
        )
        return object_response(request, _served(reg, res, result.obj), 200, result.warnings)
    if method == "PATCH":
        return await patch(request, state, t, name)
    if method == "DELETE":
        return await delete(request, state, t, name)
    raise errors.method_not_supported(res.plural, _verb_word(method), res.group)


def _served(reg: Registry, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as served at the URL's version (custom kinds: see Registry.converter)."""
    convert = reg.converter(res)
    return obj if convert is None else convert(obj)


def _served_all(reg: Registry, res: Resource, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    convert = reg.converter(res)
    return objs if convert is None else [convert(o) for o in objs]


def _verb_word(method: str) -> str:
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, method.lower()
    )


def _revision_of(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


async def patch(request: ApiRequest, state: ApiState, t: Target, name: str) -> Response:
    media = _media_type(request)
    patch_type = PATCH_TYPES.get(media)
    if patch_type is None:
        raise errors.unsupported_media_type(media, SUPPORTED_PATCH_TYPES[:3])
    body = await read_body(request)
    try:
        document = decode_json(body)
    except DecodeError as exc:
        raise errors.bad_request(f"the patch is not valid JSON: {exc}") from None
    if patch_type == "json" and not isinstance(document, list):
        raise errors.bad_request("a JSON patch must be a list of operations")
    if patch_type != "json" and not isinstance(document, dict):
        raise errors.bad_request("a merge patch must be a JSON object")
    result = await state.registry.patch(
        t.resource,
        t.namespace,
        name,
        patch_type,
        document,
        subresource=t.subresource,
        dry_run=_dry_run(request),
        field_validation=_field_validation(request),
    )
    obj = _served(state.registry, t.resource, result.obj)
    return object_response(request, obj, 200, result.warnings)


async def delete(request: ApiRequest, state: ApiState, t: Target, name: str) -> Response:
    options: dict[str, Any] = {}
    body = await read_body(request)
    if body.strip():
        try:
            parsed = decode_yaml(body) if "yaml" in _media_type(request) else decode_json(body)
        except DecodeError as exc:
            raise errors.bad_request(f"the DeleteOptions body is not valid: {exc}") from None
        if not isinstance(parsed, dict):
            raise errors.bad_request("the DeleteOptions body must be an object")
        options = parsed
    preconditions = options.get("preconditions") or {}
    dry_run = _dry_run(request) or bool(options.get("dryRun"))
    result: WriteResult = await state.registry.delete(
        t.resource,
        t.namespace,
        name,
        precondition_uid=preconditions.get("uid"),
        precondition_rv=preconditions.get("resourceVersion"),
        dry_run=dry_run,
    )
    obj = _served(state.registry, t.resource, result.obj)
    return object_response(request, obj, 200 if result.gone else 202)


def _list_body(
    res: Resource,
    items: list[dict[str, Any]],
    revision: int,
    cont: str = "",
    remaining: int | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(revision)}
    if cont:
        meta["continue"] = cont
    if remaining is not None and cont:
        meta["remainingItemCount"] = remaining
    return {
        "kind": res.list_kind_name,
        "apiVersion": res.api_version,
        "metadata": meta,
        "items": items,
    }


async def list_objects(request: ApiRequest, state: ApiState, t: Target) -> Response:
    q = request.query
    result = await state.registry.list(
        t.resource,
        t.namespace,
        label_selector=q("labelSelector"),
        field_selector=q("fieldSelector"),
        limit=_int_param(request, "limit"),
        cont=q("continue"),
        resource_version=q("resourceVersion"),
        resource_version_match=q("resourceVersionMatch"),
    )
    convert = state.registry.converter(t.resource)
    items = result.items if convert is None else [convert(o) for o in result.items]
    if _wants_table(request):
        return _table_response(
            request, state, t.resource, items, result.revision, result.cont, result.remaining
        )
    if result.entries is not None and not _wants_yaml(request):
        return _cached_list_response(t.resource, result.entries, result.revision, convert)
    body = _list_body(t.resource, items, result.revision, result.cont, result.remaining)
    if _wants_yaml(request):
        return Response(encode_yaml(body), media_type=YAML)
    return json_response(body)


def _cached_list_response(
    res: Resource,
    entries: list[CacheEntry],
    revision: int,
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Response:
    """The list as ``_list_body`` would encode it, items joined from their cached JSON
    (an item stored at another apiVersion than the URL's is converted and encoded anew)."""
    body = _list_body(res, [], revision)
    del body["items"]
    head = encode(body)  # {"kind":...,"apiVersion":...,"metadata":{...}}
    if convert is None:
        items = b",".join([e.json() for e in entries])
    else:
        wanted = res.api_version
        items = b",".join(
            [
                e.json() if e.obj.get("apiVersion") == wanted else encode(convert(e.obj))
                for e in entries
            ]
        )
    return Response(b"".join((head[:-1], b',"items":[', items, b"]}")), media_type=JSON)


def build_table(
    state: ApiState,
    res: Resource,
    objs: list[dict[str, Any]],
    *,
    include_object: str,
    resource_version: str,
    cont: str = "",
    with_definitions: bool = True,
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table from the kind's strategy (this registry's, so CRDs' too)."""
    from apiserver.tables import partial_object_metadata

    definitions, rows = state.registry.strategy(res).table(objs, wide=True, now=datetime.now(UTC))
    table_rows: list[dict[str, Any]] = []
    for obj, cells in zip(objs, rows, strict=True):
        row: dict[str, Any] = {"cells": cells}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_object_metadata(obj)
        table_rows.append(row)
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if cont:
        meta["continue"] = cont
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": definitions if with_definitions else [],
        "rows": table_rows,
    }


def _table_response(
    request: ApiRequest,
    state: ApiState,
    res: Resource,
    objs: list[dict[str, Any]],
    revision: int,
    cont: str = "",
    remaining: int | None = None,
) -> Response:
    table = build_table(
        state,
        res,
        objs,
        include_object=request.query("includeObject", "Metadata"),
        resource_version=str(revision),
        cont=cont,
    )
    return json_response(table, content_type=TABLE_CONTENT_TYPE)


# -- watch ------------------------------------------------------------------------------


async def watch(request: ApiRequest, state: ApiState, t: Target) -> Response:
    q = request.query
    res = t.resource
    reg = state.registry
    table = _wants_table(request)
    media_type = TABLE_CONTENT_TYPE if table else JSON
    send_initial = request.query_or_none("sendInitialEvents")
    try:
        start = await reg.watch(
            res,
            t.namespace,
            resource_version=q("resourceVersion"),
            label_selector=q("labelSelector"),
            field_selector=q("fieldSelector"),
            send_initial_events=None if send_initial is None else send_initial.lower() == "true",
        )
    except StatusError as err:
        if err.code != 410:
            raise
        # An unusable resourceVersion is an in-stream ERROR (clients re-list on it); an
        # HTTP 410 on the watch request itself would stop kopf's watcher for good.
        return ErrorStream(err, media_type)
    timeout_s = float(_int_param(request, "timeoutSeconds"))
    bookmarks = _query_bool(request, "allowWatchBookmarks")
    encoder: EventEncoder = JsonEvents()
    if table:
        include = q("includeObject", "Metadata")

        def one_row(objs: list[dict[str, Any]], *, with_definitions: bool) -> dict[str, Any]:
            return build_table(
                state,
                res,
                objs,
                include_object=include,
                resource_version=str(_revision_of(objs[0])),
                with_definitions=with_definitions,
            )

        encoder = TableEvents(one_row)
    convert = reg.converter(res)
    if convert is not None:
        encoder = ConvertedEvents(encoder, convert, res.api_version)
    return WatchResponse(
        reg.hub,
        res,
        start.subscriber,
        start.prefix,
        initial=start.initial,
        initial_revision=start.initial_revision,
        encoder=encoder,
        media_type=media_type,
        bookmarks=bookmarks,
        bookmark_interval=state.bookmark_interval,
        initial_end_bookmark=bool(send_initial and send_initial.lower() == "true" and bookmarks),
        timeout_s=timeout_s if timeout_s > 0 else None,
    )


# -- plain endpoints ----------------------------------------------------------------------


async def version(request: Request) -> Response:
    return json_response(VERSION_INFO)


async def healthz(request: Request) -> Response:
    return Response(b"ok", media_type="text/plain")


async def readyz(request: Request) -> Response:
    if not state_of(request).ready:
        return Response(
            b"not ready: the store is starting", status_code=503, media_type="text/plain"
        )
    return Response(b"ok", media_type="text/plain")


async def metrics(request: Request) -> Response:
    body, content_type = state_of(request).metrics.exposition()
    return Response(body, media_type=content_type)


async def not_found(request: Request, exc: Exception) -> Response:
    return status_response(errors.resource_not_found(request.url.path))


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return status_response(
        StatusError(
            405, "MethodNotAllowed", f"the server does not allow this method on {request.url.path}"
        )
    )
