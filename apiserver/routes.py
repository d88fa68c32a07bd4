"""The route table: every URL the apiserver serves, listed explicitly."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from apiserver import discovery_endpoints as disc
from apiserver import handlers as h

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _resource_routes(base: str) -> list[Route]:
    """Collections, items and subresources under ``/api/{version}`` or ``/apis/{g}/{v}``.

    Namespaced paths come first: ``/api/v1/namespaces/{ns}/{plural}`` must win over the
    cluster-scoped ``/api/v1/{plural}/{name}/{sub}`` (the handler tells a Namespace's own
    subresource, ``/api/v1/namespaces/{name}/status``, apart).
    """
    shapes = (
        "/namespaces/{namespace}/{plural}",
        "/namespaces/{namespace}/{plural}/{name}",
        "/namespaces/{namespace}/{plural}/{name}/{sub}",
        "/{plural}",
        "/{plural}/{name}",
        "/{plural}/{name}/{sub}",
    )
    return [Route(base + shape, h.resource_route, methods=ALL_METHODS) for shape in shapes]


def resource_params(method: str, path: str) -> dict[str, str] | None:
    """The path parameters the resource routes above would match ``path`` with (and
    ``method`` is one they serve), or None: the same table, matched by splitting the path
    instead of trying route regexes in turn (the app's dispatch for its busiest URLs)."""
    parts = path.split("/")
    if len(parts) < 4 or parts[0] or method not in _METHODS:
        return None
    if parts[1] == "api":
        params = {"version": parts[2]}
        rest = parts[3:]
    elif parts[1] == "apis" and len(parts) >= 5:
        params = {"group": parts[2], "version": parts[3]}
        rest = parts[4:]
    else:
        return None
    if "" in parts[2:]:  # a route's parameter is one or more characters other than "/"
        return None
    count = len(rest)
    if rest[0] == "namespaces" and 3 <= count <= 5:
        params["namespace"] = rest[1]
        rest = rest[2:]
    elif count > 3:
        return None
    params["plural"] = rest[0]
    if len(rest) > 1:
        params["name"] = rest[1]
    if len(rest) > 2:
        params["sub"] = rest[2]
    return params


_METHODS = frozenset(ALL_METHODS)


def routes() -> list[BaseRoute]:
    """Resources first (the busy paths: Starlette tries routes in order); no two routes
    match the same path except where ``handlers.resolve`` tells them apart."""
    return [
        *_resource_routes("/api/{version}"),
        *_resource_routes("/apis/{group}/{version}"),
        Route("/version", h.version),
        Route("/healthz", h.healthz),
        Route("/livez", h.healthz),
        Route("/readyz", h.readyz),
        Route("/metrics", h.metrics),
        Route("/api", disc.core_versions),
        Route("/apis", disc.groups),
        Route("/api/{version}", disc.core_resources),
        Route("/apis/{group}", disc.group),
        Route("/apis/{group}/{version}", disc.group_resources),
        Route("/openapi/v3", disc.openapi_root),
        Route("/openapi/v3/{path:path}", disc.openapi_document),
        Route("/openapi/v2", disc.openapi_v2),
    ]
