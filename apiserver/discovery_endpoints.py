"""HTTP side of discovery and OpenAPI: content negotiation and caching headers.

The documents themselves are built by :mod:`apiserver.discovery` and
:mod:`apiserver.openapi` from the live ResourceIndex (CRDs appear at once). Aggregated
discovery is chosen by the Accept header, in the client's order, and answered with the
exact Content-Type kubectl recognises it by.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from apiserver import errors
from apiserver.handlers import json_response, state_of, status_response


def _aggregated(request: Request, core: bool) -> Response | None:
    """Aggregated discovery when the Accept header asks for it first, else None."""
    from apiserver import discovery

    version = discovery.negotiate(request.headers.get("accept"))
    if version is None:
        return None
    doc = discovery.aggregated(state_of(request).index, core=core, version=version)
    return json_response(doc, content_type=discovery.aggregated_content_type(version))


async def core_versions(request: Request) -> Response:
    from apiserver import discovery

    found = _aggregated(request, core=True)
    if found is not None:
        return found
    return json_response(discovery.api_versions(request.url.netloc))


async def groups(request: Request) -> Response:
    from apiserver import discovery

    found = _aggregated(request, core=False)
    if found is not None:
        return found
    return json_response(discovery.api_group_list(state_of(request).index))


async def core_resources(request: Request) -> Response:
    from apiserver import discovery

    version = request.path_params["version"]
    doc = discovery.group_version_resource_list(state_of(request).index, "", version)
    if doc is None:
        return status_response(errors.resource_not_found(request.url.path))
    return json_response(doc)


async def group(request: Request) -> Response:
    from apiserver import discovery

    doc = discovery.api_group(state_of(request).index, request.path_params["group"])
    if doc is None:
        return status_response(errors.resource_not_found(request.url.path))
    return json_response(doc)


async def group_resources(request: Request) -> Response:
    from apiserver import discovery

    p = request.path_params
    index = state_of(request).index
    doc = discovery.group_version_resource_list(index, p["group"], p["version"])
    if doc is None:
        return status_response(errors.resource_not_found(request.url.path))
    return json_response(doc)


def _cached(doc: dict[str, Any], request: Request) -> Response:
    headers = {}
    if "hash" in request.query_params:
        headers["Cache-Control"] = "public, immutable"
        headers["Expires"] = "Thu, 31 Dec 2099 23:59:59 GMT"
    else:
        headers["Cache-Control"] = "no-cache, private"
    return json_response(doc, headers=headers)


async def openapi_root(request: Request) -> Response:
    from apiserver import openapi

    return json_response(openapi.root(state_of(request).index))


async def openapi_document(request: Request) -> Response:
    from apiserver import openapi

    doc = openapi.document(state_of(request).index, request.path_params["path"])
    if doc is None:
        return status_response(errors.resource_not_found(request.url.path))
    return _cached(doc, request)


async def openapi_v2(request: Request) -> Response:
    """Not served: kubectl falls back to its compiled-in types (a 404 is what it expects)."""
    return status_response(errors.resource_not_found(request.url.path))
